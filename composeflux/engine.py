"""What the Docker engine runs now and the few changes composeflux makes to it directly (name
claims, restarts, image removal), over the Engine API (dockerapi.py): `docker compose` does
the rest. Each function opens one connection for its calls and closes it; errors become
EngineError naming what was being done."""

from __future__ import annotations

import base64
import re

from composeflux.deployed import (
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    IMAGE_REFERENCE,
    INSTANCE,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    Container,
    EngineState,
    RunningImage,
    engine_state,
)
from composeflux.dockerapi import TIMEOUT, Client, EngineAPIError, EngineUnreachable, NotFound
from composeflux.errors import EngineError
from composeflux.health import ContainerHealth
from composeflux.preflight import EngineFacts
from composeflux.rendered import JSON
from composeflux.swarm import STACK_NAMESPACE, ServiceView, SwarmObject, encoded

EXIT_CODE = re.compile(r"^Exited \((\d+)\)")
HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)$")  # the end of the listing's Status


def read_state(instance_id: str) -> EngineState:
    try:
        with Client() as client:
            listing = client.get("/containers/json", all=1, filters={"label": [COMPOSE_PROJECT]})
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot list containers from the Docker engine: {exc}") from None
    pairs = []
    for item in listing:
        labels = item.get("Labels") or {}
        pairs.append((labels[COMPOSE_PROJECT], _container(item, labels)))
    return engine_state(pairs, instance_id)


def _container(item: dict[str, JSON], labels: dict[str, str]) -> Container:
    match = EXIT_CODE.match(item.get("Status") or "")
    health = HEALTH.search(item.get("Status") or "")
    return Container(
        id=item["Id"],
        service=labels.get(COMPOSE_SERVICE, ""),
        labels=labels,
        state=item.get("State") or "unknown",
        exit_code=int(match.group(1)) if match else None,
        health=health.group(1).removeprefix("health: ") if health else None,
    )


def inspect_project(project: str) -> list[ContainerHealth]:
    """The containers of one Compose project (label com.docker.compose.project=<project>, one-off
    `run` containers excluded), each inspected: for the health gate, which calls this once per
    poll. One connection per call, closed at the end (the gate polls every half second). A
    container removed between the listing and its inspection is left out: the gate reads a
    watched one missing as removed."""
    try:
        with Client() as client:
            listing = client.get("/containers/json", all=1, filters={"label": [f"{COMPOSE_PROJECT}={project}"]})
            found = []
            for item in listing:
                if (item.get("Labels") or {}).get(COMPOSE_ONEOFF) == "True":
                    continue
                try:
                    found.append(_health(client.get(f"/containers/{item['Id']}/json")))
                except NotFound:
                    continue
            return found
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot inspect the containers of {project} on the Docker engine: {exc}") from None


def restart_containers(ids: list[str]) -> list[str]:
    """Restart these containers in place (healing an unhealthy one: `docker compose up` leaves a
    running container alone, healthy or not), each with its own stop timeout (stop_grace_period;
    10 s when it has none). Their files and volumes stay. Returns what failed, one line per
    container; one removed meanwhile is skipped."""
    problems = []
    try:
        with Client() as client:
            for container_id in ids:
                try:
                    stop = (client.get(f"/containers/{container_id}/json").get("Config") or {}).get("StopTimeout")
                    stop = stop if isinstance(stop, int) and stop >= 0 else 10
                    # Answers once it has started again: the exchange may take the stop timeout and more.
                    client.request("POST", f"/containers/{container_id}/restart", {"t": stop}, timeout=TIMEOUT + stop)
                except NotFound:
                    continue
                except EngineAPIError as exc:
                    problems.append(f"{container_id[:12]}: {exc}")
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot restart containers on the Docker engine: {exc}") from None
    return problems


def _health(details: dict[str, JSON]) -> ContainerHealth:
    state = details.get("State") or {}
    labels = (details.get("Config") or {}).get("Labels") or {}
    status = state.get("Status") or "unknown"
    health = (state.get("Health") or {}).get("Status") or None
    return ContainerHealth(
        id=details["Id"],
        service=labels.get(COMPOSE_SERVICE, ""),
        name=(details.get("Name") or "").lstrip("/"),
        status=status,
        health=None if health == "none" else health,  # "none": the engine's own word for no healthcheck
        exit_code=None if status in ("running", "created", "paused") else int(state.get("ExitCode") or 0),
        restart_count=int(details.get("RestartCount") or 0),
        started_at=state.get("StartedAt") or "",
        restart_policy=((details.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "",
        image_id=details.get("Image") or "",
        oom_killed=bool(state.get("OOMKilled")),
    )


def claim_name(project: str) -> str:
    return f"{project}_composeflux-claim"


def claim(project: str, instance_id: str) -> str | None:
    """Claim a Compose project name for this instance before its first deployment; returns who
    holds it when that is someone else. The claim is a labelled volume (no data, no network
    address): dockerd creates a volume of one name once and hands everybody else that same
    volume, labels and all, so two instances racing for a name cannot both win."""
    try:
        with Client() as client:
            body = {"Name": claim_name(project), "Labels": {MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: instance_id}}
            volume = client.request("POST", "/volumes/create", body=body)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot claim the project name {project}: {exc}") from None
    holder = ((volume or {}).get("Labels") or {}).get(INSTANCE)
    if holder == instance_id:
        return None
    return f"claimed by another composeflux instance ({holder or 'unknown'}; `docker volume rm {claim_name(project)}` releases it)"


def release(project: str, instance_id: str) -> None:
    """Remove this instance's claim on a project name (after the stack was pruned)."""
    try:
        with Client() as client:
            volume = client.get(f"/volumes/{claim_name(project)}")
            if (volume.get("Labels") or {}).get(INSTANCE) == instance_id:
                client.request("DELETE", f"/volumes/{claim_name(project)}")
    except NotFound:
        return
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot release the claim on {project}: {exc}") from None


def read_facts() -> EngineFacts:
    """What `docker compose up` will meet on the engine: networks, volumes, local images, and
    the container names and published ports of every container (for the preflight checks)."""
    try:
        with Client() as client:
            networks = frozenset(n["Name"] for n in client.get("/networks"))
            volumes = frozenset(v["Name"] for v in (client.get("/volumes").get("Volumes") or []))
            images = frozenset(
                reference for image in client.get("/images/json")
                for reference in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
            )
            listing = client.get("/containers/json", all=1)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot read networks, volumes and images from the Docker engine: {exc}") from None
    names: dict[str, str] = {}
    ports: dict[tuple[str, int, str], str] = {}
    for item in listing:
        project = (item.get("Labels") or {}).get(COMPOSE_PROJECT) or f"container {item['Id'][:12]}"
        for name in item.get("Names") or []:
            names[name.lstrip("/")] = project
        if item.get("State") == "running":
            for port in item.get("Ports") or []:
                if port.get("PublicPort"):
                    ports[(port.get("IP") or "", int(port["PublicPort"]), port.get("Type") or "tcp")] = project
    return EngineFacts(networks, volumes, images, names, ports)


def running_images(instance_id: str) -> list[RunningImage]:
    """Each service of this instance's stacks with the image its containers run: the reference
    it was created from and the local image's RepoDigests (for `composeflux update`). One
    container listing, then one image inspect per distinct image."""
    try:
        with Client() as client:
            ours = [f"{MANAGED_BY}={MANAGED_BY_VALUE}", f"{INSTANCE}={instance_id}"]
            listing = client.get("/containers/json", all=1, filters={"label": ours})
            found: dict[tuple[str, str], dict[str, JSON]] = {}
            for item in listing:
                labels = item.get("Labels") or {}
                if labels.get("com.docker.compose.oneoff") == "True":
                    continue
                found.setdefault((labels.get(COMPOSE_PROJECT, ""), labels.get(COMPOSE_SERVICE, "")), item)
            # The reference each was created from: the listing shows the image ID instead once the
            # tag has moved to another local image, the container's own Config.Image does not.
            created_from = {}
            for key, item in found.items():
                try:
                    inspected = client.get(f"/containers/{item['Id']}/json")
                    pinned = (item.get("Labels") or {}).get(IMAGE_REFERENCE)  # a rollback pinned it to an image ID
                    created_from[key] = str(pinned or (inspected.get("Config") or {}).get("Image") or item.get("Image") or "")
                except NotFound:
                    created_from[key] = str(item.get("Image") or "")
            digests: dict[str, tuple[str, ...]] = {}
            for item in found.values():
                image_id = item.get("ImageID") or ""
                if image_id and image_id not in digests:
                    try:
                        inspected = client.get(f"/images/{image_id}/json")
                        digests[image_id] = tuple(inspected.get("RepoDigests") or ())
                    except NotFound:
                        digests[image_id] = ()
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot list containers and images from the Docker engine: {exc}") from None
    return [
        RunningImage(
            stack=project, service=service, image=created_from[(project, service)], image_id=str(item.get("ImageID") or ""),
            repo_digests=digests.get(str(item.get("ImageID") or ""), ()), labels=dict(item.get("Labels") or {}),
        )
        for (project, service), item in sorted(found.items())
    ]


def insecure_registries() -> list[str]:
    """dockerd's insecure-registries (CIDRs and host[:port] names), which it pulls from without
    verified TLS: `composeflux update` asks them the same way."""
    try:
        with Client() as client:
            registry = client.get("/info").get("RegistryConfig") or {}
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot read the Docker engine's registry settings: {exc}") from None
    indexes = (registry.get("IndexConfigs") or {}).items()
    names = [name for name, index in indexes if isinstance(index, dict) and not index.get("Secure", True)]
    return [*(registry.get("InsecureRegistryCIDRs") or []), *names]


def remove_unused_images(image_ids: list[str]) -> list[str]:
    """Remove these images (by ID, never forced) if no container uses them any more; returns the
    ones removed. An image still in use, or already gone, is left alone without a word: only
    images an image update replaced are ever passed here, never a prune of the host's images."""
    try:
        with Client() as client:
            used = {item.get("ImageID") for item in client.get("/containers/json", all=1)}
            removed = []
            for image_id in image_ids:
                if image_id in used:
                    continue
                try:
                    client.request("DELETE", f"/images/{image_id}")
                except EngineAPIError:  # in use after all, gone, or referenced by a child image
                    continue
                removed.append(image_id)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot remove replaced images: {exc}") from None
    return removed


# -- Docker Swarm (BACKEND=swarm) -----------------------------------------------------------------

ROLE_TIMEOUT = 15.0  # seconds for each question of swarm_role (an election takes 11-15 s here)


def swarm_role() -> tuple[str, str]:
    """This engine's place in its swarm: ("leader" | "manager" | "worker" | "inactive", the
    leader's host name when known). From `GET /info` (Swarm.LocalNodeState, ControlAvailable,
    NodeID), then, on a manager, `GET /nodes/{NodeID}` (ManagerStatus.Leader) and the leader's
    node from `GET /nodes`. While the managers elect a leader those calls hang rather than fail:
    ROLE_TIMEOUT bounds each, and an engine that does not answer in time is an EngineError."""
    try:
        with Client(timeout=ROLE_TIMEOUT) as client:
            swarm = client.get("/info").get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active":
                return "inactive", ""
            if not swarm.get("ControlAvailable"):
                return "worker", ""
            node = client.get(f"/nodes/{swarm.get('NodeID')}")
            if (node.get("ManagerStatus") or {}).get("Leader"):
                return "leader", str((node.get("Description") or {}).get("Hostname") or "")
            leaders = [n for n in client.get("/nodes") if (n.get("ManagerStatus") or {}).get("Leader")]
            return "manager", str(((leaders[0].get("Description") or {}).get("Hostname") or "") if leaders else "")
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot ask the Docker engine about its swarm: {exc}") from None


def _stack_services(client: Client, namespace: str | None = None) -> list[dict[str, JSON]]:
    label = f"{STACK_NAMESPACE}={namespace}" if namespace else STACK_NAMESPACE
    services: list[dict[str, JSON]] = client.get("/services", status="true", filters={"label": [label]})
    return services


def _service_key(service: dict[str, JSON]) -> tuple[str, str]:
    spec = service.get("Spec") or {}
    namespace = str((spec.get("Labels") or {}).get(STACK_NAMESPACE) or "")
    return namespace, str(spec.get("Name") or "").removeprefix(f"{namespace}_")


def read_swarm_state(instance_id: str) -> EngineState:
    """The swarm's stacks as EngineState: one Container per service (its ID, its service labels,
    "running" while any of its tasks runs, a finished job "exited" with 0), so that the plan
    compares Swarm services exactly as it compares Compose containers."""
    try:
        with Client() as client:
            services = _stack_services(client)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot list the swarm's services: {exc}") from None
    pairs = []
    for service in services:
        namespace, key = _service_key(service)
        status = service.get("ServiceStatus") or {}
        mode = (service.get("Spec") or {}).get("Mode") or {}
        desired, running = int(status.get("DesiredTasks") or 0), int(status.get("RunningTasks") or 0)
        if "ReplicatedJob" in mode or "GlobalJob" in mode:
            state, code = ("exited", 0) if int(status.get("CompletedTasks") or 0) >= desired else ("running", None)
        else:
            state, code = ("running", None) if running > 0 or desired == 0 else ("exited", None)
        labels = {str(k): str(v) for k, v in ((service.get("Spec") or {}).get("Labels") or {}).items()}
        pairs.append((namespace, Container(id=str(service.get("ID")), service=key, labels=labels, state=state, exit_code=code)))
    return engine_state(pairs, instance_id)


def read_swarm_stack(namespace: str) -> list[ServiceView]:
    """A stack's services, each with its tasks (for the convergence wait, once per poll)."""
    try:
        with Client() as client:
            views = []
            for service in _stack_services(client, namespace):
                tasks = client.get("/tasks", filters={"service": [str(service.get("ID"))]})
                tasks.sort(key=lambda task: str((task.get("Status") or {}).get("Timestamp") or ""))
                views.append(ServiceView(_service_key(service)[1], service, tuple(tasks)))
            return views
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot read the services of the stack {namespace}: {exc}") from None


def engine_time() -> str:
    """The engine's clock now, as it writes times (RFC 3339, UTC): what task times are compared with."""
    try:
        with Client() as client:
            return str(client.get("/info").get("SystemTime") or "")
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot read the Docker engine's clock: {exc}") from None


def _named(client: Client, kind: str, name: str) -> dict[str, JSON] | None:
    """The config or secret (`kind`: "configs", "secrets") of exactly this name, or None: the
    API's name filter also matches names it is only a part of."""
    found = [item for item in client.get(f"/{kind}", filters={"name": [name]}) if (item.get("Spec") or {}).get("Name") == name]
    return found[0] if found else None


def create_swarm_objects(objects: tuple[SwarmObject, ...] | list[SwarmObject]) -> list[str]:
    """Create the configs and secrets a stack file refers to that do not exist yet; returns
    the names created. One of that name that composeflux did not make (no such labels) is left
    alone and is an error: its content is not known to be this one."""
    created = []
    try:
        with Client() as client:
            for item in objects:
                match = _named(client, item.kind, item.name)
                if match is not None:
                    labels = (match.get("Spec") or {}).get("Labels") or {}
                    if labels.get(INSTANCE) != item.labels[INSTANCE]:
                        raise EngineError(
                            f"a Swarm {item.kind[:-1]} named {item.name} exists and was not made by this composeflux instance"
                        )
                    continue
                body = {"Name": item.name, "Labels": item.labels, "Data": encoded(item.data)}
                client.request("POST", f"/{item.kind}/create", body=body)
                created.append(item.name)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot create the stack's configs and secrets: {exc}") from None
    return created


def remove_unused_swarm_objects(namespace: str, instance_id: str, keep: set[str]) -> list[str]:
    """Remove the configs and secrets of this stack that this instance created, that are not in
    `keep` (the names the stack file uses now) and that no service of the swarm refers to, in
    its spec or its previous spec (what a `docker service rollback` would go back to). Returns
    what was removed; one the engine still finds in use stays."""
    removed = []
    try:
        with Client() as client:
            used: set[str] = set()
            for service in client.get("/services"):
                for spec in (service.get("Spec") or {}, service.get("PreviousSpec") or {}):
                    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
                    for kind, field in (("Configs", "ConfigName"), ("Secrets", "SecretName")):
                        used |= {str(reference.get(field)) for reference in container.get(kind) or []}
            ours = [f"{MANAGED_BY}={MANAGED_BY_VALUE}", f"{INSTANCE}={instance_id}", f"{STACK_NAMESPACE}={namespace}"]
            for kind in ("configs", "secrets"):
                for item in client.get(f"/{kind}", filters={"label": ours}):
                    name = str((item.get("Spec") or {}).get("Name") or "")
                    if name in keep or name in used:
                        continue
                    try:
                        client.request("DELETE", f"/{kind}/{item['ID']}")
                    except EngineAPIError:  # in use after all (a task being removed), or gone
                        continue
                    removed.append(name)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot remove the stack's old configs and secrets: {exc}") from None
    return removed


def claim_stack(namespace: str, instance_id: str) -> str | None:
    """claim() for a Swarm stack name: a labelled config, which the managers create once for the
    whole swarm (a second create of that name fails), so two instances on two managers cannot
    both take a name."""
    name = claim_name(namespace)
    body = {"Name": name, "Labels": {MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: instance_id}, "Data": encoded(instance_id.encode())}
    try:
        with Client() as client:
            try:
                client.request("POST", "/configs/create", body=body)
                return None
            except EngineAPIError as exc:
                if exc.status != 409:
                    raise
            found = _named(client, "configs", name)
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot claim the stack name {namespace}: {exc}") from None
    holder = ((found.get("Spec") or {}).get("Labels") or {}).get(INSTANCE) if found else None
    if holder == instance_id:
        return None
    return f"claimed by another composeflux instance ({holder or 'unknown'}; `docker config rm {name}` releases it)"


def release_stack(namespace: str, instance_id: str) -> None:
    """Remove this instance's claim on a Swarm stack name (after the stack was removed)."""
    name = claim_name(namespace)
    try:
        with Client() as client:
            found = _named(client, "configs", name)
            if found is not None and ((found.get("Spec") or {}).get("Labels") or {}).get(INSTANCE) == instance_id:
                client.request("DELETE", f"/configs/{found['ID']}")
    except NotFound:
        return
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot release the claim on {namespace}: {exc}") from None


def rollback_services(ids: list[str]) -> list[str]:
    """`docker service rollback` of these services: each back to its previous spec (the engine
    does it, with the service's rollback_config). Returns what failed, one line per service."""
    problems = []
    try:
        with Client() as client:
            for service_id in ids:
                try:
                    service = client.get(f"/services/{service_id}")
                    version = (service.get("Version") or {}).get("Index")
                    client.request("POST", f"/services/{service_id}/update", {"version": version, "rollback": "previous"},
                                   body=service.get("Spec") or {})
                except EngineAPIError as exc:
                    problems.append(f"{service_id[:12]}: {exc}")
    except EngineUnreachable as exc:
        raise EngineError(f"cannot roll services back on the Docker engine: {exc}") from None
    return problems


def swarm_hash_key(instance_id: str, local: bytes, create: bool = True) -> bytes:
    """The hash key every manager of the swarm uses for this instance, kept in the swarm as a
    config (`composeflux-hash-key-<instance>`, readable only through the Docker API, which is
    root's anyway): the first manager to sync puts its own key there (`local`), the others take
    it. So a new leader computes the very hashes and config and secret names the old one did, and
    a change of leader redeploys nothing. `create=False` (a dry run): the local key when the
    swarm has none yet, and nothing is created."""
    name = f"composeflux-hash-key-{instance_id}"
    labels = {MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: instance_id}
    try:
        with Client() as client:
            for attempt in (1, 2):
                found = _named(client, "configs", name)
                if found is not None:
                    data = base64.b64decode(str((found.get("Spec") or {}).get("Data") or ""))
                    if len(data) < 16:
                        raise EngineError(f"the swarm's config {name} is damaged; remove it (`docker config rm {name}`)")
                    return data
                if not create:
                    return local
                try:
                    client.request("POST", "/configs/create", body={"Name": name, "Labels": labels, "Data": encoded(local)})
                    return local
                except EngineAPIError as exc:
                    if exc.status != 409 or attempt == 2:
                        raise
    except (EngineAPIError, EngineUnreachable) as exc:
        raise EngineError(f"cannot read or create the swarm's hash key for this instance: {exc}") from None
    raise EngineError(f"cannot read or create the swarm's hash key {name}")
