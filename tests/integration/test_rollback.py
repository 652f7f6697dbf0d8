"""Health-gated deploys against the real engine with the real CLI: the gate, rollback to the last
good revision (its configuration and image IDs), no flapping, healing, suspend/resume, and syncs
killed midway (issue 11).

Timeouts are kept small (HEALTH_TIMEOUT 6, HEALTH_STABLE 1, 5 for the crash loop) so that the file runs in minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import PYTHON, TEST_IMAGE, containers, remove_projects, run

pytestmark = pytest.mark.docker

QUICK = {"init": True, "stop_grace_period": "1s"}
PASSES = {"test": ["CMD", "true"], "interval": "500ms", "retries": 2}
NEVER_PASSES = {"test": ["CMD", "false"], "interval": "500ms", "retries": 2}
STARTING_FOREVER = {**NEVER_PASSES, "start_period": "10m"}  # neither healthy nor unhealthy: the gate times out


def service(env: dict | None = None, **more) -> dict:
    """One service of the test image, quick to stop, with environment `env`."""
    return {"image": TEST_IMAGE, "command": ["sleep", "infinity"], **QUICK, **({"environment": env} if env else {}), **more}


def write_stack(repo, name: str, services: dict) -> None:
    repo.write(f"{name}/compose.yaml", json.dumps({"services": services}, indent=2) + "\n")  # JSON is YAML


def env_of(info) -> dict:
    return dict(item.split("=", 1) for item in info.env)


def image_of(container_id: str) -> str:
    return run("docker", "inspect", "--format", "{{.Image}}", container_id).stdout.strip()


def image_id(reference: str) -> str:
    return run("docker", "image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()


def cli(cfx, *arguments: str) -> subprocess.CompletedProcess:
    """Another composeflux command (status, suspend, resume) with the same config and environment as cfx."""
    return subprocess.run(
        [PYTHON, "-m", "composeflux", "--config", str(cfx.config_file), *arguments],
        capture_output=True, text=True, timeout=60, env=cfx.env,
    )


def status(cfx, stack: str) -> subprocess.CompletedProcess:
    return cli(cfx, "status", stack)


def wait_for(condition, seconds: float, what: str, process: subprocess.Popen | None = None):
    """Poll `condition` until it returns something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the sync exited ({process.returncode}) before {what}\n{out}\n{err}")
        time.sleep(0.1)
    raise AssertionError(f"not {what} after {seconds} s")


def containers_now(project: str) -> dict:
    """containers(project) while Compose may be replacing them: one removed between the listing
    and its inspection makes this poll see none."""
    try:
        return containers(project)
    except subprocess.CalledProcessError:
        return {}


def with_env(project: str, service_name: str, key: str, value: str):
    """The service's container (in any state) when it carries key=value in its environment, else None."""
    info = containers_now(project).get(service_name)
    return info if info is not None and env_of(info).get(key) == value else None


def state_file(cfx) -> dict:
    return json.loads((cfx.state / "state.json").read_text())


def kill_container(project: str, service_name: str) -> None:
    """`docker kill` from outside, until the engine says the container has exited."""
    container_id = containers(project)[service_name].id
    run("docker", "kill", container_id)
    wait_for(lambda: containers(project)[service_name].state == "exited", 10, "exited")


def kill(process: subprocess.Popen) -> None:
    """kill -9 of a sync still running (one that has exited already is left alone)."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


# -- 1. a revision that never gets healthy --------------------------------------------------------


def test_an_unhealthy_revision_is_rolled_back_and_not_retried_until_asked_or_git_changes(cfx, repo, prefix):
    name = f"{prefix}-web"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    write_stack(repo, name, {"app": service({"V": "1"}, healthcheck=PASSES)})
    good = repo.commit("good")
    cfx.sync()
    old = containers(name)["app"]
    old_image = image_of(old.id)

    write_stack(repo, name, {"app": service({"V": "2"}, healthcheck=STARTING_FOREVER)})
    bad = repo.commit("never healthy")
    started = time.monotonic()
    result = cfx.sync(expect=1)
    took = time.monotonic() - started
    assert "Health gate failed: app: not healthy within 6 s (health: starting)" in result.stderr, result.stderr
    assert f"Rolled back to {good[:12]}" in result.stderr
    assert "1 rolled back" in result.stderr and f"({name})" in result.stderr
    # HEALTH_TIMEOUT, then the rollback's own gate (healthy at the first probe, 1 s stable), and
    # a few seconds of Git, render and `up` twice.
    assert 6 <= took < 6 + (0.5 + 1) + 10, f"the sync took {took:.0f} s"
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "1"
    assert image_of(now.id) == old_image
    assert now.labels["compose.stack.commit"] == good
    shown = status(cfx, name)
    assert shown.returncode == 1
    assert "Last:       rolled back" in shown.stdout and f"Rejected:   {bad[:12]}" in shown.stdout, shown.stdout
    assert f"Deployed:   {good[:12]}" in shown.stdout and f"Last good:  {good[:12]}" in shown.stdout
    record = state_file(cfx)["stacks"][name]
    assert (record["rejected"]["commit"], record["deployed"]["commit"], record["pending"]) == (bad, good, None)
    overall = cli(cfx, "status")
    assert overall.returncode == 1, overall.stdout
    assert re.search(rf"^  rolled back\s+{name}\s+rolled back from {bad[:12]}", overall.stdout, re.MULTILINE), overall.stdout

    # No flapping: the next sync leaves it as it is, and says why.
    again = cfx.sync(expect=1)
    assert containers(name)["app"].id == now.id
    assert f"rolled back from {bad[:12]}: app: not healthy within 6 s" in again.stderr and "waiting for a new revision" in again.stderr
    assert again.stderr.count("rolled back from") == 1, again.stderr  # said once, not "rolled back from X: rolled back from X"
    assert "Deploying" not in again.stderr
    plan = cfx.sync("--dry-run", expect=1)
    assert f"rolled back from {bad[:12]}" in plan.stdout and "waiting for a new revision" in plan.stdout, plan.stdout
    assert f"--retry {name}" in plan.stdout

    # --retry STACK tries it again (and it is rolled back again).
    retried = cfx.sync("--retry", name, expect=1)
    assert f"{name}: Deploying" in retried.stderr and "Health gate failed" in retried.stderr
    after_retry = containers(name)["app"]
    assert after_retry.id != now.id and env_of(after_retry)["V"] == "1" and image_of(after_retry.id) == old_image

    # A new good revision deploys normally.
    write_stack(repo, name, {"app": service({"V": "3"}, healthcheck=PASSES)})
    fixed = repo.commit("fixed")
    cfx.sync()
    final = containers(name)["app"]
    assert env_of(final)["V"] == "3" and final.labels["compose.stack.commit"] == fixed
    shown = status(cfx, name)
    assert shown.returncode == 0 and "Rejected" not in shown.stdout, shown.stdout


# -- 2. a crash loop ------------------------------------------------------------------------------


def test_a_crash_loop_is_caught_by_the_stability_window_and_rolled_back(cfx, repo, prefix):
    name = f"{prefix}-worker"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=5)
    write_stack(repo, name, {"worker": service({"V": "1"}, restart="always")})
    good = repo.commit("good")
    cfx.sync()

    write_stack(repo, name, {"worker": service({"V": "2"}, restart="always", command=["sh", "-c", "sleep 2; exit 1"])})
    repo.commit("crash loop")
    result = cfx.sync(expect=1)
    assert "worker: restarted 1 time(s) within the 5 s stability window" in result.stderr, result.stderr
    assert f"Rolled back to {good[:12]}" in result.stderr
    now = containers(name)["worker"]
    assert now.state == "running" and env_of(now)["V"] == "1" and now.labels["compose.stack.commit"] == good
    assert "Last:       rolled back" in status(cfx, name).stdout


# -- 3. a tag re-pointed to a broken image --------------------------------------------------------


@pytest.fixture
def images(prefix):
    """Local images <prefix>-img:good and <prefix>-img:broken (copies of the test image with other
    labels, so other IDs; the broken one exits 1), built without a registry; removed afterwards."""
    repository = f"{prefix}-img"
    dockerfiles = {
        "good": f'FROM {TEST_IMAGE}\nLABEL v=good\nCMD ["sleep", "infinity"]\n',
        "broken": f'FROM {TEST_IMAGE}\nLABEL v=broken\nCMD ["sh", "-c", "exit 1"]\n',
    }
    built = []
    try:
        for tag, dockerfile in dockerfiles.items():
            run("docker", "build", "-q", "-t", f"{repository}:{tag}", "-", input=dockerfile, cwd="/")
            built.append(image_id(f"{repository}:{tag}"))
        yield repository
    finally:
        remove_projects(prefix)  # their containers first: an image in use would only be untagged
        tags = run("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
        run("docker", "rmi", "-f", *tags, *built, check=False)


def test_a_tag_moved_to_a_broken_image_rolls_back_to_the_old_image_id(cfx, repo, prefix, images):
    name = f"{prefix}-pinned"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    run("docker", "tag", f"{images}:good", f"{images}:stable")
    good_id, broken_id = image_id(f"{images}:good"), image_id(f"{images}:broken")
    assert good_id != broken_id
    pinned = {"image": f"{images}:stable", "pull_policy": "never", **QUICK}
    write_stack(repo, name, {"app": {**pinned, "environment": {"V": "1"}}})
    good = repo.commit("good")
    cfx.sync()
    assert image_of(containers(name)["app"].id) == good_id
    assert state_file(cfx)["stacks"][name]["good"]["images"] == {"app": good_id}

    run("docker", "tag", f"{images}:broken", f"{images}:stable")  # the tag moves; Git does not say so
    write_stack(repo, name, {"app": {**pinned, "environment": {"V": "2"}}})
    repo.commit("a change on the moved tag")
    result = cfx.sync(expect=1)
    assert "app: exited with status 1" in result.stderr, result.stderr
    assert f"Rolled back to {good[:12]}" in result.stderr
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "1"
    assert image_of(now.id) == good_id  # the image it ran then, not what the tag names now
    assert image_id(f"{images}:stable") == broken_id
    record = state_file(cfx)["stacks"][name]
    assert record["deployed"]["images"] == {"app": good_id} and record["deployed"]["commit"] == good

    again = cfx.sync(expect=1)  # the rejected revision is not tried again: no flapping
    assert "waiting for a new revision" in again.stderr and containers(name)["app"].id == now.id


# -- 4. the Git remote gone during the rollback ---------------------------------------------------


def test_the_rollback_needs_no_git_remote(cfx, repo, prefix):
    name = f"{prefix}-offline"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    write_stack(repo, name, {"app": service({"V": "1"})})
    good = repo.commit("good")
    cfx.sync()

    write_stack(repo, name, {"app": service({"V": "2"}, healthcheck=NEVER_PASSES)})
    repo.commit("never healthy")
    process = cfx.popen()
    away = repo.remote.with_name("remote-away.git")
    try:
        wait_for(lambda: with_env(name, "app", "V", "2"), 60, "the bad revision's container exists", process)
        repo.remote.rename(away)  # from now on, the remote cannot be reached
        _, err = process.communicate(timeout=120)
    finally:
        kill(process)
        if away.exists():
            away.rename(repo.remote)
    assert process.returncode == 1, err
    assert f"Rolled back to {good[:12]}" in err, err
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "1" and now.labels["compose.stack.commit"] == good


# -- 5. dependent services ------------------------------------------------------------------------


def dependent_services(version: str, app_check: dict) -> dict:
    """db (healthy), app waiting for it (depends_on: service_healthy), and a sidecar in app's network namespace."""
    env = {"V": version}
    return {
        "db": service(env, healthcheck=PASSES),
        "app": service(env, healthcheck=app_check, depends_on={"db": {"condition": "service_healthy"}}),
        "sidecar": service(env, network_mode="service:app", depends_on=["app"]),
    }


def test_dependent_services_roll_back_together(cfx, repo, prefix):
    name = f"{prefix}-deps"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    write_stack(repo, name, dependent_services("1", PASSES))
    good = repo.commit("good")
    cfx.sync()
    assert {service: env_of(info)["V"] for service, info in containers(name).items()} == {"db": "1", "app": "1", "sidecar": "1"}

    write_stack(repo, name, dependent_services("2", NEVER_PASSES))
    repo.commit("app never healthy")
    result = cfx.sync(expect=1)
    assert "Health gate failed: app: unhealthy" in result.stderr, result.stderr
    assert f"Rolled back to {good[:12]}" in result.stderr
    found = containers(name)
    everywhere = dict.fromkeys(("db", "app", "sidecar"), ("running", "1", good))
    assert {service: (info.state, env_of(info)["V"], info.labels["compose.stack.commit"]) for service, info in found.items()} == everywhere
    namespace = run("docker", "inspect", "--format", "{{.HostConfig.NetworkMode}}", found["sidecar"].id).stdout.strip()
    assert namespace == f"container:{found['app'].id}"  # joined the rolled-back app, not a removed one


def test_a_dependency_that_never_gets_healthy_fails_up_and_is_rolled_back(cfx, repo, prefix):
    name = f"{prefix}-dbfail"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    write_stack(repo, name, dependent_services("1", PASSES))
    good = repo.commit("good")
    cfx.sync()

    services = dependent_services("2", PASSES)
    services["db"]["healthcheck"] = NEVER_PASSES  # `up` itself fails: app waits for a healthy db
    write_stack(repo, name, services)
    repo.commit("db never healthy")
    result = cfx.sync(expect=1)
    assert "docker compose up failed after changing containers" in result.stderr, result.stderr
    assert f"Rolled back to {good[:12]}" in result.stderr
    found = containers(name)
    everywhere = dict.fromkeys(("db", "app", "sidecar"), ("running", "1"))
    assert {service: (info.state, env_of(info)["V"]) for service, info in found.items()} == everywhere


# -- 6. healing -----------------------------------------------------------------------------------


def test_a_killed_container_is_healed_at_most_heal_max_attempts_times(cfx, repo, prefix):
    name = f"{prefix}-heal"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1, HEAL_MAX_ATTEMPTS=2)
    write_stack(repo, name, {"app": service({"V": "1"}), "other": service({"V": "1"})})
    repo.commit()
    cfx.sync()
    other = containers(name)["other"].id

    kill_container(name, "app")  # from outside: not composeflux's doing
    healed = cfx.sync()
    assert f"{name}: Deploying: not running (services: app)" in healed.stderr, healed.stderr
    assert containers(name)["app"].state == "running" and containers(name)["other"].id == other
    shown = status(cfx, name)
    assert shown.returncode == 0 and "Healed:     1 time(s)" in shown.stdout, shown.stdout

    kill_container(name, "app")  # it keeps dying
    cfx.sync()
    assert containers(name)["app"].state == "running"
    assert "Healed:     2 time(s)" in status(cfx, name).stdout

    kill_container(name, "app")
    given_up = cfx.sync(expect=1)
    assert "redeployed 2 time(s) at this revision already (HEAL_MAX_ATTEMPTS)" in given_up.stderr, given_up.stderr
    assert "Deploying" not in given_up.stderr and f"1 failed ({name})" in given_up.stderr
    assert containers(name)["app"].state == "exited"  # left as it is
    assert cfx.last_state()["stacks"][name]["action"] == "failed"
    assert status(cfx, name).returncode == 1
    cfx.sync(expect=1)  # and stays so
    assert containers(name)["app"].state == "exited"


def test_an_unhealthy_container_is_healed_by_restarting_it(cfx, repo, prefix):
    name = f"{prefix}-sick"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    app = service(
        {"V": "1"}, command=["sh", "-c", "echo ok > /state; sleep infinity"],
        healthcheck={"test": ["CMD", "sh", "-c", 'read x < /state && [ "$$x" = ok ]'], "interval": "500ms", "retries": 2},
    )
    write_stack(repo, name, {"app": app})
    repo.commit()
    cfx.sync()
    sick = containers(name)["app"].id
    run("docker", "exec", sick, "sh", "-c", "echo bad > /state")
    health = ["docker", "inspect", "--format", "{{.State.Health.Status}}", sick]
    wait_for(lambda: run(*health).stdout.strip() == "unhealthy", 20, "unhealthy")

    healed = cfx.sync()
    assert f"{name}: Deploying: unhealthy (services: app)" in healed.stderr, healed.stderr
    assert f"Restarting unhealthy {name}-app-1" in healed.stderr and "Health gate passed" in healed.stderr, healed.stderr
    now = containers(name)["app"]
    assert now.state == "running" and now.id == sick  # in place: `up` alone would have left it unhealthy
    assert run("docker", "inspect", "--format", "{{.State.Health.Status}}", now.id).stdout.strip() == "healthy"
    assert "Healed:     1 time(s)" in status(cfx, name).stdout


# -- 7. suspend and resume ------------------------------------------------------------------------


def test_a_suspended_stack_is_not_deployed_pruned_or_healed_until_resumed(cfx, repo, prefix):
    name, neighbour = f"{prefix}-paused", f"{prefix}-neighbour"
    write_stack(repo, name, {"app": service({"V": "1"})})
    write_stack(repo, neighbour, {"app": service({"V": "1"})})  # STACK_PATH stays, with a stack in it
    repo.commit()
    cfx.sync()
    container = containers(name)["app"].id

    suspended = cli(cfx, "suspend", name, "--reason", "maintenance")
    assert suspended.returncode == 0, suspended.stderr
    assert f"{name}: suspended" in suspended.stdout
    shown = status(cfx, name)
    assert "Suspended:  since " in shown.stdout and "maintenance" in shown.stdout, shown.stdout

    write_stack(repo, name, {"app": service({"V": "2"})})
    repo.commit("changed while suspended")
    result = cfx.sync()
    assert f"{name}: Suspended: suspended since" in result.stderr and "maintenance" in result.stderr, result.stderr
    assert containers(name)["app"].id == container and env_of(containers(name)["app"])["V"] == "1"
    assert cfx.last_state()["stacks"][name]["action"] == "suspended"

    run("docker", "compose", "-p", name, "stop", "--timeout", "1", cwd="/")  # stopped on purpose: not healed
    cfx.sync()
    assert containers(name)["app"].state == "exited"

    repo.remove(name)
    repo.commit("deleted while suspended")
    cfx.sync()
    assert containers(name)["app"].id == container  # not pruned

    write_stack(repo, name, {"app": service({"V": "2"})})
    commit = repo.commit("back")
    resumed = cli(cfx, "resume", name)
    assert resumed.returncode == 0 and f"{name}: resumed" in resumed.stdout, resumed.stdout
    result = cfx.sync()
    assert f"{name}: Deploying" in result.stderr
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "2" and now.labels["compose.stack.commit"] == commit
    assert "Suspended" not in status(cfx, name).stdout


# -- 8. a sync killed midway ----------------------------------------------------------------------

SLOW_START = {
    "command": ["sh", "-c", "sleep 5; echo > /ok; sleep infinity"],
    # start_period: the probes before /ok exists do not make it unhealthy.
    "healthcheck": {"test": ["CMD", "sh", "-c", "[ -f /ok ]"], "interval": "1s", "retries": 3, "start_period": "30s"},
}


def test_a_sync_killed_during_the_gate_is_finished_by_the_next_one(cfx, repo, prefix):
    name = f"{prefix}-slow"
    cfx.settings(HEALTH_TIMEOUT=20, HEALTH_STABLE=1)
    write_stack(repo, name, {"app": service({"V": "1"})})
    repo.commit("good")
    cfx.sync()

    write_stack(repo, name, {"app": service({"V": "2"}, **SLOW_START)})
    slow = repo.commit("healthy after 5 s")
    process = cfx.popen()
    try:
        wait_for(lambda: with_env(name, "app", "V", "2"), 60, "the new container exists", process)
        time.sleep(1)  # in the gate now
    finally:
        kill(process)
    record = state_file(cfx)["stacks"][name]
    assert record["pending"]["commit"] == slow  # the killed sync recorded that it had started

    result = cfx.sync()
    assert "not checked yet (the sync deploying it was interrupted)" in result.stderr, result.stderr
    assert "Health gate passed" in result.stderr
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "2" and now.labels["compose.stack.commit"] == slow
    record = state_file(cfx)["stacks"][name]
    assert record["pending"] is None and record["good"]["commit"] == slow
    assert status(cfx, name).returncode == 0
    cfx.sync()  # and from now on it is unchanged
    assert containers(name)["app"].id == now.id


def test_a_sync_killed_during_the_rollback_is_finished_by_the_next_one(cfx, repo, prefix):
    name = f"{prefix}-rbkill"
    cfx.settings(HEALTH_TIMEOUT=6, HEALTH_STABLE=1)
    write_stack(repo, name, {"app": service({"V": "1"}, healthcheck=PASSES)})
    good = repo.commit("good")
    cfx.sync()
    original = containers(name)["app"].id

    write_stack(repo, name, {"app": service({"V": "2"}, healthcheck=NEVER_PASSES)})
    bad = repo.commit("never healthy")
    process = cfx.popen()
    try:
        wait_for(lambda: with_env(name, "app", "V", "2"), 60, "the bad revision's container exists", process)
        rollback = wait_for(lambda: with_env(name, "app", "V", "1"), 60, "the rollback's container exists", process)
        assert rollback.id != original
    finally:
        kill(process)  # in the rollback's gate (or its `up`)
    state_file(cfx)  # parses

    result = cfx.sync(expect=None)
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 1:
        assert f"Rolled back to {good[:12]}" in result.stderr or f"rolled back from {bad[:12]}" in result.stderr, result.stderr
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "1"
    record = state_file(cfx)["stacks"][name]
    assert record["pending"] is None and record["good"]["commit"] == good
    shown = status(cfx, name)
    assert "rolled back" in shown.stdout, shown.stdout
    again = cfx.sync(expect=1)  # converged: no flapping
    assert "waiting for a new revision" in again.stderr and containers(name)["app"].id == now.id


def test_a_sync_killed_before_its_revision_turned_unhealthy_is_rolled_back_by_the_next_one(cfx, repo, prefix):
    name = f"{prefix}-late"
    cfx.settings(HEALTH_TIMEOUT=30, HEALTH_STABLE=1)
    write_stack(repo, name, {"app": service({"V": "1"})})
    good = repo.commit("good")
    cfx.sync()

    late = {**NEVER_PASSES, "start_period": "3s"}  # starting at first, unhealthy a few seconds later
    write_stack(repo, name, {"app": service({"V": "2"}, healthcheck=late)})
    bad = repo.commit("unhealthy after its start period")
    process = cfx.popen()
    try:
        bad_container = wait_for(lambda: with_env(name, "app", "V", "2"), 60, "the new container exists", process)
    finally:
        kill(process)  # while its container is still starting (in the gate, or at the end of `up`)
    health = ["docker", "inspect", "--format", "{{.State.Health.Status}}", bad_container.id]
    wait_for(lambda: run(*health).stdout.strip() == "unhealthy", 30, "unhealthy")

    result = cfx.sync(expect=1)  # the revision no gate passed is not taken for good
    assert "Health gate failed" in result.stderr and f"Rolled back to {good[:12]}" in result.stderr, result.stderr
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "1"
    record = state_file(cfx)["stacks"][name]
    assert (record["good"]["commit"], record["rejected"]["commit"], record["pending"]) == (good, bad, None)


def test_a_rolled_back_stack_whose_container_is_killed_is_rolled_back_again(cfx, repo, prefix):
    """Git still wants the rejected revision, so no deploy would bring the good one back: the
    heal rolls back again, at most HEAL_MAX_ATTEMPTS times."""
    name = f"{prefix}-web"
    cfx.settings(HEALTH_TIMEOUT=4, HEALTH_STABLE=1, HEAL_MAX_ATTEMPTS=1)
    write_stack(repo, name, {"app": service({"V": "1"}, healthcheck=PASSES)})
    repo.commit("good")
    cfx.sync()
    write_stack(repo, name, {"app": service({"V": "2"}, healthcheck=NEVER_PASSES)})
    repo.commit("unhealthy")
    cfx.sync(expect=1)
    assert env_of(containers(name)["app"])["V"] == "1"

    kill_container(name, "app")
    result = cfx.sync(expect=1)
    assert "rolling back again" in result.stderr, result.stderr
    now = containers(name)["app"]
    assert now.state == "running" and env_of(now)["V"] == "1"
    assert state_file(cfx)["stacks"][name]["heal_attempts"] == 1

    kill_container(name, "app")
    result = cfx.sync(expect=1)
    assert "HEAL_MAX_ATTEMPTS" in result.stderr
    assert containers(name)["app"].state == "exited"  # left alone, and reported
