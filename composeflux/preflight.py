"""Checks before `docker compose up`, on the rendered project and what the engine has, so that
a stack that cannot come up fails alone, before anything of it is touched, and a dry run
predicts it: external networks and volumes exist (or a stack deployed earlier in this sync
creates them), container names and published host ports are free, images are present or may be
pulled, and nothing needs Docker Swarm.

No I/O here: EngineFacts is read once per sync (engine.read_facts), Provided grows as stacks
pass, and `check` is a pure function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from composeflux.rendered import JSON

ANY_ADDRESS = ("", "0.0.0.0", "::")


@dataclasses.dataclass(frozen=True)
class EngineFacts:
    networks: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset()  # repository:tag and repository@digest of local images
    container_names: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> its project
    ports: Mapping[tuple[str, int, str], str] = dataclasses.field(default_factory=dict)  # (ip, port, proto) -> project


@dataclasses.dataclass
class Provided:
    """What the stacks that passed in this sync will create (in deploy order)."""

    networks: set[str] = dataclasses.field(default_factory=set)
    volumes: set[str] = dataclasses.field(default_factory=set)
    container_names: dict[str, str] = dataclasses.field(default_factory=dict)
    ports: dict[tuple[str, int, str], str] = dataclasses.field(default_factory=dict)


def check(name: str, project: Mapping[str, JSON], facts: EngineFacts, provided: Provided) -> list[str]:
    """What would make `docker compose up` of this project fail; empty when nothing would.
    When it passes, what it creates is added to `provided` for the stacks after it."""
    problems = []
    for kind, existing, earlier in (("network", facts.networks, provided.networks), ("volume", facts.volumes, provided.volumes)):
        for key, definition in _mapping(project.get(f"{kind}s")).items():
            if isinstance(definition, dict) and definition.get("external"):
                real = str(definition.get("name") or key)
                if real not in existing and real not in earlier:
                    problems.append(f"external {kind} {real} does not exist (and no stack deployed before this one creates it)")
    if any(isinstance(d, dict) and d.get("external") for d in _mapping(project.get("secrets")).values()):
        problems.append("external secrets are a Docker Swarm feature: Compose cannot deploy them")
    names: dict[str, str] = {}
    ports: dict[tuple[str, int, str], str] = {}
    for service_name, service in _mapping(project.get("services")).items():
        if not isinstance(service, dict):
            continue
        container_name = service.get("container_name")
        if isinstance(container_name, str):
            owner = provided.container_names.get(container_name) or facts.container_names.get(container_name)
            if owner and owner != name:
                problems.append(f"container_name {container_name} of service {service_name} is taken by the project {owner}")
            names[container_name] = name
        for port in _published(service):
            owner = _port_owner(port, provided.ports, name) or _port_owner(port, facts.ports, name)
            if owner:
                problems.append(f"host port {port[1]}/{port[2]} of service {service_name} is published by the project {owner}")
            ports[port] = name
        image = service.get("image")
        if (
            isinstance(image, str)
            and service.get("pull_policy") == "never"
            and not service.get("build")
            and not _present(image, facts.images)
        ):
            problems.append(f"image {image} of service {service_name} is not on this host, and its pull_policy is never")
    if not problems:
        for kind, into in (("networks", provided.networks), ("volumes", provided.volumes)):
            for key, definition in _mapping(project.get(kind)).items():
                if isinstance(definition, dict) and not definition.get("external"):
                    into.add(str(definition.get("name") or f"{name}_{key}"))
        provided.container_names.update(names)
        provided.ports.update(ports)
    return problems


def _mapping(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {}


def _published(service: dict[str, JSON]) -> list[tuple[str, int, str]]:
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict) and str(port.get("published") or "").isdigit():
            found.append((str(port.get("host_ip") or ""), int(port["published"]), str(port.get("protocol") or "tcp")))
    return found


def _port_owner(port: tuple[str, int, str], taken: Mapping[tuple[str, int, str], str], name: str) -> str | None:
    address, number, protocol = port
    for (other_address, other_number, other_protocol), owner in taken.items():
        if owner == name or number != other_number or protocol != other_protocol:
            continue
        if address == other_address or address in ANY_ADDRESS or other_address in ANY_ADDRESS:
            return owner
    return None


def _present(image: str, images: frozenset[str]) -> bool:
    if image in images:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" not in last and "@" not in image and f"{image}:latest" in images
