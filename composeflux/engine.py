"""What the Docker engine runs now, read through the Docker SDK in one API call.

Containers that composeflux deploys carry these labels (Compose adds its own com.docker.compose.*):

    compose.stack.managed-by=composeflux
    compose.stack.instance=<id of repository URL + STACK_PATH>
    compose.stack.service-hash=<keyed hash of this service's rendered config and files>
    compose.stack.hash=<keyed hash of the whole stack when this container was created>
    compose.stack.commit=<Git commit this container was created from>
"""

from __future__ import annotations

import dataclasses
import re

import docker
import docker.errors
import requests.exceptions

from composeflux.errors import EngineError

MANAGED_BY = "compose.stack.managed-by"
MANAGED_BY_VALUE = "composeflux"
INSTANCE = "compose.stack.instance"
SERVICE_HASH = "compose.stack.service-hash"
STACK_HASH = "compose.stack.hash"
COMMIT = "compose.stack.commit"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"

EXIT_CODE = re.compile(r"^Exited \((\d+)\)")


@dataclasses.dataclass(frozen=True)
class Container:
    id: str
    service: str
    labels: dict[str, str]
    state: str  # running, exited, restarting, created, paused, dead
    exit_code: int | None
    bind_sources: tuple[str, ...]

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

    def bind_sources(self) -> list[str]:
        return [source for stack in self.managed.values() for c in stack.containers for source in c.bind_sources]


def read_state(instance_id: str) -> EngineState:
    try:
        client = docker.from_env(version="auto", timeout=60)
        listing = client.api.containers(all=True, filters={"label": COMPOSE_PROJECT})
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"cannot list containers from the Docker engine: {exc}") from None
    managed: dict[str, list[Container]] = {}
    others: dict[str, str] = {}
    for item in listing:
        labels = item.get("Labels") or {}
        project = labels[COMPOSE_PROJECT]
        if labels.get(COMPOSE_ONEOFF) == "True":
            continue  # `docker compose run` leftovers are not part of the deployed state
        if labels.get(MANAGED_BY) == MANAGED_BY_VALUE and labels.get(INSTANCE) == instance_id:
            managed.setdefault(project, []).append(_container(item, labels))
        elif labels.get(MANAGED_BY) == MANAGED_BY_VALUE:
            others[project] = f"another composeflux instance ({labels.get(INSTANCE, '?')})"
        else:
            others.setdefault(project, "not deployed by composeflux")
    return EngineState(
        managed={name: DeployedStack(name, tuple(containers)) for name, containers in managed.items()},
        others={name: owner for name, owner in others.items() if name not in managed},
    )


def _container(item: dict, labels: dict[str, str]) -> Container:
    match = EXIT_CODE.match(item.get("Status") or "")
    return Container(
        id=item["Id"],
        service=labels.get(COMPOSE_SERVICE, ""),
        labels=labels,
        state=item.get("State") or "unknown",
        exit_code=int(match.group(1)) if match else None,
        bind_sources=tuple(m["Source"] for m in item.get("Mounts") or [] if m.get("Type") == "bind" and m.get("Source")),
    )
