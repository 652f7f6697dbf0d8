"""What the Docker engine runs now, read through the Docker SDK in one API call."""

from __future__ import annotations

import re

import docker
import docker.errors
import requests.exceptions

from composeflux.deployed import COMPOSE_PROJECT, COMPOSE_SERVICE, Container, EngineState, engine_state
from composeflux.errors import EngineError
from composeflux.rendered import JSON

EXIT_CODE = re.compile(r"^Exited \((\d+)\)")


def read_state(instance_id: str) -> EngineState:
    try:
        client = docker.from_env(version="auto", timeout=60)
        listing = client.api.containers(all=True, filters={"label": COMPOSE_PROJECT})
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"cannot list containers from the Docker engine: {exc}") from None
    pairs = []
    for item in listing:
        labels = item.get("Labels") or {}
        pairs.append((labels[COMPOSE_PROJECT], _container(item, labels)))
    return engine_state(pairs, instance_id)


def _container(item: dict[str, JSON], labels: dict[str, str]) -> Container:
    match = EXIT_CODE.match(item.get("Status") or "")
    return Container(
        id=item["Id"],
        service=labels.get(COMPOSE_SERVICE, ""),
        labels=labels,
        state=item.get("State") or "unknown",
        exit_code=int(match.group(1)) if match else None,
        bind_sources=tuple(m["Source"] for m in item.get("Mounts") or [] if m.get("Type") == "bind" and m.get("Source")),
    )
