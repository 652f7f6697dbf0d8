"""What the engine runs, as plain values, and the labels composeflux puts on its containers.

Containers that composeflux deploys carry these labels (Compose adds its own com.docker.compose.*):

    compose.stack.managed-by=composeflux
    compose.stack.instance=<id of repository URL + STACK_PATH>
    compose.stack.service-hash=<keyed hash of this service's rendered config and files>
    compose.stack.hash=<keyed hash of the whole stack when this container was created>
    compose.stack.commit=<Git commit this container was created from>
    compose.stack.signer=<who signed that commit>                      only with VERIFY_SIGNATURES
    compose.stack.image=<the image reference of the compose file>   only on a container a rollback
                                                                    pinned to an image ID

No I/O here: `engine.read_state` fills these from the Docker API.
"""

from __future__ import annotations

import dataclasses

MANAGED_BY = "compose.stack.managed-by"
MANAGED_BY_VALUE = "composeflux"
INSTANCE = "compose.stack.instance"
SERVICE_HASH = "compose.stack.service-hash"
STACK_HASH = "compose.stack.hash"
COMMIT = "compose.stack.commit"
SIGNER = "compose.stack.signer"  # VERIFY_SIGNATURES: who signed that commit
IMAGE_REFERENCE = "compose.stack.image"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"
UNMANAGED = "not deployed by composeflux"  # what EngineState.others says of such a project


@dataclasses.dataclass(frozen=True)
class Container:
    id: str
    service: str
    labels: dict[str, str]
    state: str  # running, exited, restarting, created, paused, dead
    exit_code: int | None
    health: str | None = None  # healthy, unhealthy, starting; None without a healthcheck

    @property
    def service_hash(self) -> str | None:
        return self.labels.get(SERVICE_HASH)

    @property
    def is_up(self) -> bool:
        """Running, or a one-shot service that finished successfully."""
        return self.state in ("running", "restarting", "paused") or (self.state == "exited" and self.exit_code == 0)


@dataclasses.dataclass(frozen=True)
class DeployedStack:
    name: str
    containers: tuple[Container, ...]

    def services(self) -> dict[str, list[Container]]:
        grouped: dict[str, list[Container]] = {}
        for container in self.containers:
            grouped.setdefault(container.service, []).append(container)
        return grouped


@dataclasses.dataclass(frozen=True)
class EngineState:
    managed: dict[str, DeployedStack]  # stacks this instance deployed, by project name
    others: dict[str, str]  # every other Compose project on the engine -> who owns it


def engine_state(containers: list[tuple[str, Container]], instance_id: str) -> EngineState:
    """Group (project, container) pairs into this instance's stacks and everybody else's."""
    managed: dict[str, list[Container]] = {}
    others: dict[str, str] = {}
    for project, container in containers:
        labels = container.labels
        if labels.get(COMPOSE_ONEOFF) == "True":
            continue  # `docker compose run` leftovers are not part of the deployed state
        if labels.get(MANAGED_BY) == MANAGED_BY_VALUE and labels.get(INSTANCE) == instance_id:
            managed.setdefault(project, []).append(container)
        elif labels.get(MANAGED_BY) == MANAGED_BY_VALUE:
            others[project] = f"another composeflux instance ({labels.get(INSTANCE, '?')})"
        else:
            others.setdefault(project, UNMANAGED)
    return EngineState(
        managed={name: DeployedStack(name, tuple(items)) for name, items in managed.items()},
        others={name: owner for name, owner in others.items() if name not in managed},
    )


@dataclasses.dataclass(frozen=True)
class RunningImage:
    """One service's containers as the engine runs them, for `composeflux update` (engine.running_images)."""

    stack: str
    service: str
    image: str  # the reference the container was created from (Config.Image)
    image_id: str
    repo_digests: tuple[str, ...]  # the local image's RepoDigests ("name@sha256:...")
    labels: dict[str, str]
