"""The health gate against the real engine: real healthchecks, restart policies and exits, read
through engine.inspect_project."""

from __future__ import annotations

import json

import pytest

from composeflux import engine
from composeflux.errors import EngineError
from composeflux.health import gate
from tests.conftest import TEST_IMAGE, container_ids, run

pytestmark = pytest.mark.docker

CREATES_OK = ["sh", "-c", "sleep 2; echo > /ok; sleep 3600"]


def up(project: str, services: dict[str, dict]) -> dict[str, str]:
    """`docker compose up -d` of these services (the test image, quick to stop); service -> container ID."""
    quick = {"image": TEST_IMAGE, "init": True, "stop_grace_period": "1s"}
    document = {"services": {name: {**quick, **spec} for name, spec in services.items()}}
    run("docker", "compose", "-p", project, "-f", "-", "up", "-d", input=json.dumps(document), cwd="/")
    return container_ids(project)


def gate_project(project: str, watch, timeout: float, stable: float):
    return gate(lambda: engine.inspect_project(project), watch, timeout, stable)


def image_id() -> str:
    return run("docker", "image", "inspect", "--format", "{{.Id}}", TEST_IMAGE).stdout.strip()


def healthcheck(test: str, **more) -> dict:
    return {"test": ["CMD", "sh", "-c", test], "interval": "1s", "retries": 3, **more}


def test_a_healthcheck_that_passes_passes_the_gate(prefix):
    name = f"{prefix}-healthy"
    # start_period: the probes before /ok exists do not count towards the 3 retries on a slow engine.
    ids = up(name, {"web": {"command": CREATES_OK, "healthcheck": healthcheck("[ -f /ok ]", start_period="10s")}})
    result = gate_project(name, set(ids.values()), timeout=20, stable=2)
    assert result.ok, result.reason
    assert result.images == {"web": image_id()}
    assert 2 + 2 <= result.waited < 15


def test_a_healthcheck_that_fails_fails_at_once(prefix):
    name = f"{prefix}-unhealthy"
    ids = up(name, {"web": {"command": ["sleep", "3600"], "healthcheck": healthcheck("[ -f /never ]")}})
    result = gate_project(name, set(ids.values()), timeout=30, stable=2)
    assert not result.ok
    assert result.reason.startswith("web: unhealthy after ")
    assert result.waited < 10  # three failed probes a second apart, not the 30 s timeout


def test_a_healthcheck_still_starting_at_the_timeout_fails_then(prefix):
    name = f"{prefix}-starting"
    ids = up(name, {"web": {"command": ["sleep", "3600"], "healthcheck": healthcheck("[ -f /never ]", start_period="60s")}})
    result = gate_project(name, set(ids.values()), timeout=6, stable=2)
    assert (result.ok, result.reason) == (False, "web: not healthy within 6 s (health: starting)")
    assert 6 <= result.waited < 6 + 3


def test_a_crash_loop_is_caught_by_the_stability_window(prefix):
    name = f"{prefix}-crashloop"
    ids = up(name, {"worker": {"command": ["sh", "-c", "sleep 2; exit 1"], "restart": "always"}})
    result = gate_project(name, set(ids.values()), timeout=20, stable=5)
    assert not result.ok
    assert result.reason.startswith("worker: restarted 1 time(s) within the 5 s stability window"), result.reason
    assert result.waited < 5 + 2


def test_a_one_shot_job_counts_as_done(prefix):
    name = f"{prefix}-job"
    ids = up(name, {"web": {"command": ["sleep", "3600"]}, "migrate": {"command": ["true"], "restart": "no"}})
    result = gate_project(name, set(ids.values()), timeout=20, stable=2)
    assert result.ok, result.reason
    assert result.images == {"migrate": image_id(), "web": image_id()}


def test_an_exit_3_fails_naming_the_status(prefix):
    name = f"{prefix}-exit"
    ids = up(name, {"app": {"command": ["sh", "-c", "exit 3"]}})
    result = gate_project(name, set(ids.values()), timeout=20, stable=2)
    assert not result.ok
    assert result.reason.startswith("app: exited with status 3"), result.reason
    assert result.waited < 2 + 2


def test_inspect_project_reads_the_state_and_leaves_out_one_off_and_other_containers(prefix):
    name = f"{prefix}-inspect"
    services = {"web": {"command": ["sleep", "3600"], "restart": "always"}, "job": {"command": ["sh", "-c", "exit 5"]}}
    ids = up(name, services)
    up(f"{prefix}-other", {"web": {"command": ["sleep", "3600"]}})
    document = json.dumps({"services": {"job": {"image": TEST_IMAGE, "command": ["sleep", "3600"]}}})
    run("docker", "compose", "-p", name, "-f", "-", "run", "-d", "job", input=document, cwd="/")
    gate_project(name, {ids["job"]}, timeout=10, stable=0)  # until the job has exited

    found = {container.id: container for container in engine.inspect_project(name)}
    assert set(found) == set(ids.values())  # not the `run` container, not the other project's
    web, job = found[ids["web"]], found[ids["job"]]
    assert (web.service, web.name, web.status, web.health, web.exit_code, web.restart_policy) == (
        "web", f"{name}-web-1", "running", None, None, "always")
    assert (job.service, job.status, job.exit_code, job.oom_killed) == ("job", "exited", 5, False)
    assert job.restart_policy == ""  # no `restart:`: Compose leaves the engine's policy empty, which is "no"
    assert web.image_id == job.image_id == image_id()
    assert web.started_at and web.restart_count == 0
    assert engine.inspect_project(f"{prefix}-nothing") == []


def test_inspect_project_without_an_engine_is_an_engine_error(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(EngineError, match="cannot inspect the containers of demo"):
        engine.inspect_project("demo")
