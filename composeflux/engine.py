"""What the Docker engine runs now and the few changes composeflux makes to it directly (name
claims, restarts, image removal), over the Engine API (dockerapi.py): `docker compose` does
the rest. Each function opens one connection for its calls and closes it; errors become
EngineError naming what was being done."""

from __future__ import annotations

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
