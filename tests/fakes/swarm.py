"""A stand-in for the Swarm side of a sync (sync.SwarmTools and the engine reads), for the fast
lane: `docker stack deploy` records the stack file and makes one service per entry, carrying
its deploy.labels; what an update then does is set per service (`outcome`): converge, be rolled
back by Swarm, or pause. The contract composeflux relies on, not Swarm's scheduling: the real
thing is tests/swarm.
"""

from __future__ import annotations

import copy
from typing import Any

from composeflux.compose import Result
from composeflux.deployed import Container, EngineState, engine_state
from composeflux.swarm import STACK_NAMESPACE, ServiceView, SwarmObject
from composeflux.sync import SwarmTools, Tools
from tests.fakes.compose import FakeCompose

BEFORE = "2026-12-02T10:00:00Z"  # the engine's clock when a deploy starts
AFTER = "2026-12-02T10:00:01Z"  # when the updates it makes start


class FakeSwarm:
    def __init__(self, compose: FakeCompose) -> None:
        self.compose = compose  # renders (docker compose config); never asked to `up`
        self.services: dict[str, dict[str, dict[str, Any]]] = {}  # stack -> service key -> its Engine API view
        self.files: dict[str, list[dict[str, Any]]] = {}  # stack -> the stack files deployed, in order
        self.objects: dict[str, SwarmObject] = {}  # name -> what composeflux created
        self.outcome: dict[tuple[str, str], str] = {}  # (stack, service) -> "rolled back" | "paused" for its next update
        self.calls: list[tuple[str, Any]] = []
        self.claims: dict[str, str] = {}
        self.role = ("leader", "node1")

    # -- sync.SwarmTools ------------------------------------------------------------------------

    def deploy(self, name: str, file: dict[str, Any], timeout: float) -> Result:
        self.calls.append(("deploy", name))
        self.files.setdefault(name, []).append(copy.deepcopy(file))
        current = self.services.setdefault(name, {})
        for key in set(current) - set(file["services"]):  # --prune
            del current[key]
        for key, definition in file["services"].items():
            spec = {"Name": f"{name}_{key}", "Labels": {**definition.get("deploy", {}).get("labels", {}), STACK_NAMESPACE: name},
                    "Mode": {"Replicated": {"Replicas": definition.get("deploy", {}).get("replicas", 1)}}, "File": definition}
            old = current.get(key)
            if old is not None and old["Spec"] == spec:
                continue  # the same spec: Swarm starts no update
            service = {"ID": f"{name}_{key}-id", "Spec": spec, "PreviousSpec": old["Spec"] if old else None,
                       "ServiceStatus": {"DesiredTasks": 1, "RunningTasks": 1}}
            outcome = self.outcome.pop((name, key), None) if old else None
            if outcome == "rolled back":
                service["Spec"] = old["Spec"]
                service["UpdateStatus"] = {"State": "rollback_completed", "Message": "rollback completed", "StartedAt": AFTER}
            elif outcome == "paused":
                service["UpdateStatus"] = {"State": "paused", "Message": "update paused due to failure", "StartedAt": AFTER}
            elif old is not None:
                service["UpdateStatus"] = {"State": "completed", "Message": "update completed", "StartedAt": AFTER}
            current[key] = service
        return Result(0, "", "")

    def remove(self, name: str, timeout: float = 60) -> Result:
        self.calls.append(("remove", name))
        self.services.pop(name, None)
        for object_name in [n for n, o in self.objects.items() if o.labels.get(STACK_NAMESPACE) == name]:
            del self.objects[object_name]
        return Result(0, "", "")

    def read_stack(self, name: str) -> list[ServiceView]:
        task = {"DesiredState": "running", "Status": {"State": "running", "Timestamp": AFTER}}  # one per service, running
        return [ServiceView(key, copy.deepcopy(service), (task,)) for key, service in sorted(self.services.get(name, {}).items())]

    def create_objects(self, objects: tuple[SwarmObject, ...]) -> list[str]:
        created = [item.name for item in objects if item.name not in self.objects]
        self.objects.update({item.name: item for item in objects})
        return created

    def remove_unused_objects(self, namespace: str, instance_id: str, keep: set[str]) -> list[str]:
        self.calls.append(("cleanup", namespace))
        used = {
            reference for services in self.services.values() for service in services.values()
            for spec in (service["Spec"], service.get("PreviousSpec") or {})
            for reference in self._references(spec)
        }
        gone = [n for n, o in self.objects.items() if o.labels.get(STACK_NAMESPACE) == namespace and n not in keep | used]
        for name in gone:
            del self.objects[name]
        return gone

    def _references(self, spec: dict[str, Any]) -> set[str]:
        stack = spec.get("Labels", {}).get(STACK_NAMESPACE, "")
        file = next((f for f in reversed(self.files.get(stack, [])) if spec.get("File") in f["services"].values()), None)
        if file is None:
            return set()
        definition = spec["File"]
        names = set()
        for kind in ("configs", "secrets"):
            for reference in definition.get(kind) or []:
                key = reference["source"] if isinstance(reference, dict) else reference
                names.add(file.get(kind, {}).get(key, {}).get("name", ""))
        return names

    def rollback(self, ids: list[str]) -> list[str]:
        self.calls.append(("rollback", sorted(ids)))
        for services in self.services.values():
            for service in services.values():
                if service["ID"] in ids and service.get("PreviousSpec"):
                    service["Spec"], service["PreviousSpec"] = service["PreviousSpec"], service["Spec"]
                    service["UpdateStatus"] = {"State": "rollback_completed", "Message": "rollback completed", "StartedAt": AFTER}
        return []

    def engine_time(self) -> str:
        return BEFORE

    def hash_key(self, instance_id: str, local: bytes, create: bool) -> bytes:
        self.calls.append(("hash_key", create))
        return local

    # -- the engine reads and claims ------------------------------------------------------------

    def read_engine(self, instance_id: str) -> EngineState:
        pairs = [
            (stack, Container(service["ID"], key, dict(service["Spec"]["Labels"]), "running", None))
            for stack, services in self.services.items() for key, service in services.items()
        ]
        return engine_state(pairs, instance_id)

    def claim(self, name: str, instance_id: str) -> str | None:
        holder = self.claims.setdefault(name, instance_id)
        return None if holder == instance_id else f"claimed by another composeflux instance ({holder})"

    def release(self, name: str, instance_id: str) -> None:
        self.calls.append(("release", name))
        self.claims.pop(name, None)

    def tools(self) -> Tools:
        swarm = SwarmTools(
            stack=self, read_stack=self.read_stack, create_objects=self.create_objects,  # type: ignore[arg-type]  # deploy, remove
            remove_unused_objects=self.remove_unused_objects, rollback=self.rollback, engine_time=self.engine_time,
            hash_key=self.hash_key, role=lambda: self.role,
        )
        return Tools(self.compose, self.read_engine, self.claim, self.release, self.compose.read_facts, self.compose.inspect,
                     swarm=swarm)
