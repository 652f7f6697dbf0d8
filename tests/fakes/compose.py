"""A stand-in for the `docker compose` boundary and the engine, for the fast lane (no Docker).

It keeps the contract composeflux relies on, not Compose's semantics: `config` returns a JSON
project (the compose file's YAML with `${VAR}`/`${VAR:-default}` interpolated from the
environment it was given, and Compose's warning for an unset variable), `up` records the project
it was fed and `read_engine` reports a running container per service with the labels that
project carried, `down` removes them. Every call is recorded in `calls`.

The integration tests run the same scenarios against the real engine.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from composeflux.compose import Compose, Result
from composeflux.deployed import COMPOSE_PROJECT, COMPOSE_SERVICE, Container, EngineState, engine_state
from composeflux.environment import read_dotenv
from composeflux.health import ContainerHealth
from composeflux.preflight import EngineFacts
from composeflux.sync import Tools

VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


class FakeCompose(Compose):
    def __init__(self) -> None:  # no docker binary needed
        self.base_env = {}
        self.docker = "docker"
        self._version = "2.99.0"
        self.projects: dict[str, dict[str, Any]] = {}
        self.stopped: set[tuple[str, str]] = set()  # (project, service) whose container has exited
        self.calls: list[tuple[str, str]] = []
        self.fail_up: dict[str, str] = {}  # project -> stderr of a failing `up`
        self.on_up: Callable[[str], None] | None = None  # called before each `up` (to break things)
        self.claims: dict[str, str] = {}  # project -> instance that claimed the name
        self.extra_networks: set[str] = set()  # networks that exist on the fake engine anyway
        self.unhealthy: set[tuple[str, str]] = set()  # (project, service) whose containers fail their healthcheck
        # Or by what was deployed: (project, service, its definition) -> health, None for no healthcheck.
        self.health_of: Callable[[str, str, dict[str, Any]], str | None] | None = None
        self.generation: dict[str, int] = {}  # project -> number of `up`s: new container IDs each time

    def version(self, cache: Path | None = None) -> str:
        self.calls.append(("version", ""))
        return self._version

    def config(self, project: str, directory: Path, files: tuple[Path, ...], env: Mapping[str, str], timeout: float = 60) -> Result:
        self.calls.append(("config", project))
        document: dict[str, Any] = {}
        warnings = []
        # Like Compose: the project's .env fills in what the environment does not set.
        env = {**read_dotenv(directory / ".env"), **env}
        for file in files:
            text = file.read_text()

            def substitute(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if name in env:
                    return env[name]
                if default is None:
                    warnings.append(f'level=warning msg="The \\"{name}\\" variable is not set. Defaulting to a blank string."')
                return default or ""

            try:
                loaded = yaml.safe_load(VARIABLE.sub(substitute, text)) or {}
            except yaml.YAMLError as exc:
                return Result(15, "", f"yaml: {exc}")
            if not isinstance(loaded, dict):
                return Result(15, "", "top-level object must be a mapping")
            for key, value in loaded.items():
                if isinstance(value, dict):
                    document.setdefault(key, {}).update(value)
        document["name"] = project
        for service in (document.get("services") or {}).values():
            # Like Compose: the short syntax becomes the long one, and a relative bind source an
            # absolute path, lexically (symlinks are not resolved).
            volumes = []
            for volume in service.get("volumes") or []:
                if isinstance(volume, str) and volume.startswith((".", "/")):
                    source, target, *mode = volume.split(":")
                    volume = {"type": "bind", "source": source, "target": target, "read_only": mode == ["ro"]}
                if isinstance(volume, dict) and volume.get("type") == "bind" and not str(volume["source"]).startswith("/"):
                    volume["source"] = os.path.normpath(os.path.join(directory, volume["source"]))
                volumes.append(volume)
            if volumes:
                service["volumes"] = volumes
        return Result(0, json.dumps(document), "\n".join(warnings))

    def up(
        self, project: str, directory: Path, rendered: dict[str, Any], env: Mapping[str, str], remove_orphans: bool, timeout: float
    ) -> Result:
        self.calls.append(("up", project))
        if self.on_up is not None:
            self.on_up(project)
        if project in self.fail_up:
            return Result(1, "", self.fail_up[project])
        self.projects[project] = json.loads(json.dumps(rendered))
        self.generation[project] = self.generation.get(project, 0) + 1
        self.stopped = {(p, s) for p, s in self.stopped if p != project}
        return Result(0, "", f" Container {project}-app-1  Started")

    def down(self, project: str, timeout: float) -> Result:
        self.calls.append(("down", project))
        self.projects.pop(project, None)
        return Result(0, "", "")

    def read_engine(self, instance_id: str) -> EngineState:
        pairs = []
        for project, document in self.projects.items():
            for service, definition in (document.get("services") or {}).items():
                labels = {**(definition.get("labels") or {}), COMPOSE_PROJECT: project, COMPOSE_SERVICE: service}
                stopped = (project, service) in self.stopped
                state, exit_code = ("exited", 137) if stopped else ("running", None)
                container = Container(f"{project}-{service}", service, labels, state, exit_code)
                pairs.append((project, container))
        return engine_state(pairs, instance_id)

    def claim(self, project: str, instance_id: str) -> str | None:
        holder = self.claims.setdefault(project, instance_id)
        return None if holder == instance_id else f"claimed by another composeflux instance ({holder})"

    def release(self, project: str, instance_id: str) -> None:
        if self.claims.get(project) == instance_id:
            del self.claims[project]

    def read_facts(self) -> EngineFacts:
        """Networks and volumes the fake's projects created (plus `extra_networks`), their
        container names and published ports; every image is present."""
        networks, names, ports = set(self.extra_networks), {}, {}
        for project, document in self.projects.items():
            defined = (document.get("networks") or {}).items()
            networks |= {str(n.get("name") or f"{project}_{key}") for key, n in defined if not n.get("external")}
            for service, definition in (document.get("services") or {}).items():
                names[definition.get("container_name") or f"{project}-{service}-1"] = project
                for port in definition.get("ports") or []:
                    if isinstance(port, dict) and port.get("published"):
                        ports[(port.get("host_ip") or "", int(port["published"]), port.get("protocol") or "tcp")] = project
        return EngineFacts(frozenset(networks), frozenset(), frozenset(), names, ports)

    def inspect(self, project: str) -> list[ContainerHealth]:
        """The project's containers as the health gate sees them: running (exited when stopped),
        unhealthy when listed in `unhealthy`, with new IDs after every `up`."""
        self.calls.append(("inspect", project))
        document = self.projects.get(project) or {}
        generation = self.generation.get(project, 0)
        found = []
        for service, definition in (document.get("services") or {}).items():
            stopped = (project, service) in self.stopped
            found.append(
                ContainerHealth(
                    id=f"{project}-{service}-{generation}", service=service, name=f"{project}-{service}-1",
                    status="exited" if stopped else "running",
                    health="unhealthy" if (project, service) in self.unhealthy
                    else self.health_of(project, service, definition) if self.health_of else None,
                    exit_code=137 if stopped else None, restart_count=0, started_at=str(generation),
                    restart_policy="no", image_id=f"sha256:{definition.get('image')}",
                )
            )
        return found

    def tools(self) -> Tools:
        return Tools(self, self.read_engine, self.claim, self.release, self.read_facts, self.inspect)

    def called(self, verb: str) -> list[str]:
        return [project for name, project in self.calls if name == verb]
