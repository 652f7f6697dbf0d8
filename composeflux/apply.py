"""Apply a plan: `docker compose up` for stacks to deploy, `docker compose down` for stacks to prune."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from composeflux.compose import Compose, Result, engine_unreachable
from composeflux.deployed import COMMIT, INSTANCE, MANAGED_BY, MANAGED_BY_VALUE, SERVICE_HASH, SIGNER, STACK_HASH, DeployedStack
from composeflux.errors import EngineError
from composeflux.logs import ACTION, STACK
from composeflux.rendered import JSON, RenderedStack

log = logging.getLogger(__name__)


class ApplyError(Exception):
    """A stack could not be deployed or pruned; the message is already masked."""


def labelled_project(
    rendered: RenderedStack, deployed: DeployedStack | None, commit: str, instance_id: str, signer: str | None = None
) -> dict[str, JSON]:
    """The rendered project with composeflux's labels on every service.

    A service whose hash did not change keeps the stack-hash, commit and signer labels its
    containers already carry: then its configuration is identical and Compose leaves those
    containers alone. `signer`: who signed `commit` (VERIFY_SIGNATURES), else no signer label.
    """
    project = copy.deepcopy(rendered.project)
    running = deployed.services() if deployed else {}
    for name, service in (project.get("services") or {}).items():
        digest = rendered.hashes.service_hashes.get(name, "")
        existing = running.get(name) or []
        if digest and existing and all(c.service_hash == digest for c in existing):
            stack_hash = existing[0].labels.get(STACK_HASH, rendered.hashes.stack_hash)
            created_from = existing[0].labels.get(COMMIT, commit)
            signed_by = existing[0].labels.get(SIGNER)
        else:
            stack_hash, created_from, signed_by = rendered.hashes.stack_hash, commit, signer
        labels = service.get("labels") or {}
        if isinstance(labels, list):  # the "KEY=value" list form
            labels = dict(item.split("=", 1) if "=" in item else (item, "") for item in labels)
        labels.update(
            {
                MANAGED_BY: MANAGED_BY_VALUE,
                INSTANCE: instance_id,
                SERVICE_HASH: digest,
                STACK_HASH: stack_hash,
                COMMIT: created_from,
            }
        )
        labels.pop(SIGNER, None)  # only composeflux says who signed
        if signed_by:
            labels[SIGNER] = signed_by
        service["labels"] = labels
    return project


class Applier:
    def __init__(self, compose: Compose, mask: Callable[[str], str], remove_orphans: bool, timeout: float) -> None:
        self.compose = compose
        self.mask = mask
        self.remove_orphans = remove_orphans
        self.timeout = timeout

    def deploy(self, name: str, directory: Path, project: dict[str, JSON], env: Mapping[str, str]) -> None:
        """`docker compose up` of the project in `directory` (the stack's own tree), with the
        stack's own interpolation environment."""
        result = self.compose.up(name, directory, project, env, self.remove_orphans, self.timeout)
        log_output(name, "deploy", result)
        check_result("docker compose up", result, self.mask)

    def prune(self, name: str) -> None:
        result = self.compose.down(name, self.timeout)
        log_output(name, "prune", result)
        check_result("docker compose down", result, self.mask)



def log_output(name: str, action: str, result: Result) -> None:
    """A docker command's progress lines (Compose's Pulling, Creating, Started; Swarm's Updating
    service) at DEBUG: the sync logs one line per stack action itself, and a failure carries the
    command's last lines."""
    fields = {STACK: name, ACTION: action}
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            log.debug("%s", line.strip(), extra=fields)


def check_result(command: str, result: Result, mask: Callable[[str], str]) -> None:
    """ApplyError for this stack when `command` ("docker compose up") failed; EngineError (the
    sync stops, exit 8) when the engine is gone, instead of failing every remaining stack one by one."""
    if result.returncode == 0:
        return
    if engine_unreachable(result):
        raise EngineError(f"the Docker engine went away: {last_lines(result, mask)}")
    raise ApplyError(f"{command} failed: {last_lines(result, mask)}")


def last_lines(result: Result, mask: Callable[[str], str]) -> str:
    """The last three lines of a failed command's stderr, masked."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return mask("; ".join(lines[-3:]) or f"exit status {result.returncode}")
