"""What a rendered Compose project becomes for `docker stack deploy` (swarm.stack_file), and the
wait for a stack's services to converge (swarm.converge): pure, no Docker needed."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from composeflux import swarm
from composeflux.deployed import INSTANCE, MANAGED_BY, SERVICE_HASH


def digest(data: bytes) -> str:
    return hashlib.sha256(b"key" + data).hexdigest()


def rendered(tmp_path):
    """What `docker compose config --format json` prints for a typical project (Compose 2.26)."""
    (tmp_path / "app.conf").write_text("listen 80\n")
    return {
        "name": "web",
        "configs": {"app_conf": {"name": "web_app_conf", "file": str(tmp_path / "app.conf")}},
        "networks": {"default": {"name": "web_default", "ipam": {}}},
        "secrets": {"token": {"name": "web_token", "environment": "TOKEN", "x-composeflux-content": "ab"}},
        "services": {
            "app": {
                "build": {"context": str(tmp_path), "dockerfile": "Dockerfile"},
                "command": ["sleep", "3600"],
                "configs": [{"source": "app_conf"}],
                "depends_on": {"db": {"condition": "service_healthy", "required": True}},
                "deploy": {
                    "replicas": 2,
                    "update_config": {"failure_action": "pause", "monitor": "10s"},
                    "resources": {"limits": {"cpus": 0.5, "memory": "52428800"}},
                    "placement": {"max_replicas_per_node": 1},
                },
                "entrypoint": None,
                "healthcheck": {"test": ["CMD", "true"], "interval": "5s", "start_interval": "1s"},
                "image": "cfx/busybox:latest",
                "labels": {"tier": "front", "compose.stack.service-hash": "a" * 64, "compose.stack.managed-by": "composeflux"},
                "networks": {"default": None},
                "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
                "restart": "unless-stopped",
                "secrets": [{"source": "token", "target": "/run/secrets/token"}],
                "volumes": [
                    {"type": "bind", "source": str(tmp_path / "data"), "target": "/data", "bind": {"create_host_path": True}},
                    {"type": "volume", "source": "cache", "target": "/cache", "volume": {}},
                ],
            },
            "db": {
                "command": None, "entrypoint": None, "image": "cfx/busybox:latest", "networks": {"default": None},
                "depends_on": {"cache": {"condition": "service_started", "required": True}},
                "container_name": "the-db",
            },
        },
        "volumes": {"cache": {"name": "web_cache"}},
    }


def test_the_stack_file_keeps_what_swarm_runs(tmp_path):
    translation = swarm.stack_file("web", rendered(tmp_path), "inst", {"TOKEN": "s3cret-value"}, digest)
    file = translation.file
    assert file["version"] == swarm.STACK_FILE_VERSION
    assert "name" not in file  # the stack's name is the command's argument
    app = file["services"]["app"]
    assert app["deploy"]["replicas"] == 2 and app["deploy"]["placement"] == {"max_replicas_per_node": 1}
    assert app["deploy"]["resources"]["limits"] == {"cpus": "0.5", "memory": "52428800"}
    assert app["ports"] == [{"mode": "ingress", "target": 80, "published": 8080, "protocol": "tcp"}]
    assert app["healthcheck"] == {"test": ["CMD", "true"], "interval": "5s"}
    assert app["volumes"][0] == {"type": "bind", "source": str(tmp_path / "data"), "target": "/data"}
    assert "entrypoint" not in app and "command" not in file["services"]["db"]
    assert file["networks"]["default"]["labels"] == {MANAGED_BY: "composeflux", INSTANCE: "inst"}
    assert "name" not in file["networks"]["default"] and "name" not in file["volumes"]["cache"]


def test_what_swarm_would_ignore_is_named(tmp_path):
    ignored = swarm.stack_file("web", rendered(tmp_path), "inst", {"TOKEN": "s3cret-value"}, digest).ignored
    assert "services.app.build" in ignored
    assert "services.app.restart" in ignored
    assert "services.app.healthcheck.start_interval" in ignored
    assert "services.db.container_name" in ignored
    assert any(item.startswith("services.app.depends_on (condition service_healthy") for item in ignored)
    assert any("bind mount of" in item for item in ignored)
    # depends_on without a condition is only an order, which nobody asked Swarm to keep
    assert not any(item.startswith("services.db.depends_on") for item in ignored)


def test_composeflux_labels_go_on_the_service_too(tmp_path):
    app = swarm.stack_file("web", rendered(tmp_path), "inst", {"TOKEN": "s3cret-value"}, digest).file["services"]["app"]
    assert app["deploy"]["labels"] == {SERVICE_HASH: "a" * 64, MANAGED_BY: "composeflux"}
    assert app["labels"]["tier"] == "front"  # the containers keep theirs


def test_configs_and_secrets_are_named_by_a_keyed_hash_of_their_content(tmp_path):
    project = rendered(tmp_path)
    first = swarm.stack_file("web", project, "inst", {"TOKEN": "s3cret-value"}, digest)
    objects = {item.key: item for item in first.objects}
    assert objects["app_conf"].data == b"listen 80\n" and objects["token"].data == b"s3cret-value"
    assert objects["token"].name == f"web_token-{digest(b's3cret-value')[:12]}"
    assert first.file["secrets"]["token"] == {"external": True, "name": objects["token"].name}
    assert first.file["configs"]["app_conf"] == {"external": True, "name": objects["app_conf"].name}
    assert objects["token"].labels == {MANAGED_BY: "composeflux", INSTANCE: "inst", swarm.STACK_NAMESPACE: "web", swarm.OBJECT_KEY: "token"}
    # No value in the stack file, the names or the labels
    shown = json.dumps(first.file) + json.dumps([(o.name, o.labels) for o in first.objects])
    assert "s3cret-value" not in shown

    again = swarm.stack_file("web", copy.deepcopy(project), "inst", {"TOKEN": "s3cret-value"}, digest)
    assert [o.name for o in again.objects] == [o.name for o in first.objects]
    rotated = swarm.stack_file("web", copy.deepcopy(project), "inst", {"TOKEN": "another-value"}, digest)
    assert {o.key: o.name for o in rotated.objects}["token"] != objects["token"].name
    assert {o.key: o.name for o in rotated.objects}["app_conf"] == objects["app_conf"].name
    (tmp_path / "app.conf").write_text("listen 81\n")
    edited = swarm.stack_file("web", copy.deepcopy(project), "inst", {"TOKEN": "s3cret-value"}, digest)
    assert {o.key: o.name for o in edited.objects}["app_conf"] != objects["app_conf"].name


def test_external_configs_and_secrets_are_left_to_swarm(tmp_path):
    project = rendered(tmp_path)
    project["secrets"] = {"token": {"name": "made-by-hand", "external": True}}
    translation = swarm.stack_file("web", project, "inst", {}, digest)
    assert translation.file["secrets"] == {"token": {"external": True, "name": "made-by-hand"}}
    assert [o.key for o in translation.objects] == ["app_conf"]


def test_inline_content_is_unescaped(tmp_path):
    project = rendered(tmp_path)
    project["configs"]["app_conf"] = {"content": "price: $$5\n"}
    objects = swarm.stack_file("web", project, "inst", {"TOKEN": "x" * 8}, digest).objects
    assert {o.key: o.data for o in objects}["app_conf"] == b"price: $5\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["services"]["db"].pop("image"), "services.db: has no image"),
        (lambda p: p["services"]["db"].update(volumes_from=["app"]), "volumes_from"),
        (lambda p: p["services"]["db"].update(network_mode="service:app"), "network_mode service:app"),
        (lambda p: p["secrets"]["token"].update(environment="UNSET"), r"secrets\.token: the variable UNSET"),
        (lambda p: p["services"]["app"]["ports"][0].update(published="8000-8010"), "published port range"),
    ],
)
def test_what_cannot_be_a_stack_fails_it(tmp_path, change, message):
    project = rendered(tmp_path)
    change(project)
    with pytest.raises(swarm.SwarmFileError, match=message):
        swarm.stack_file("web", project, "inst", {"TOKEN": "s3cret-value"}, digest)


def test_a_config_over_swarms_limit_fails(tmp_path):
    project = rendered(tmp_path)
    (tmp_path / "app.conf").write_bytes(b"x" * (swarm.MAX_OBJECT_SIZE + 1))
    with pytest.raises(swarm.SwarmFileError, match=r"configs\.app_conf: larger than"):
        swarm.stack_file("web", project, "inst", {"TOKEN": "s3cret-value"}, digest)


def test_rollback_on_failure_unless_the_file_says_otherwise(tmp_path):
    file = swarm.stack_file("web", rendered(tmp_path), "inst", {"TOKEN": "s3cret-value"}, digest, default_rollback=True).file
    assert file["services"]["app"]["deploy"]["update_config"]["failure_action"] == "pause"  # the file's own
    assert file["services"]["db"]["deploy"]["update_config"] == {"failure_action": "rollback"}
    plain = swarm.stack_file("web", rendered(tmp_path), "inst", {"TOKEN": "s3cret-value"}, digest).file
    assert "deploy" not in plain["services"]["db"] or "update_config" not in plain["services"]["db"]["deploy"]


# -- convergence ----------------------------------------------------------------------------------

SINCE = "2026-12-02T10:00:00.000000000Z"


def view(name, desired=1, running=1, update=None, tasks=None, mode=None):
    service = {
        "ID": f"id-{name}", "Spec": {"Mode": mode or {"Replicated": {"Replicas": desired}}},
        "ServiceStatus": {"DesiredTasks": desired, "RunningTasks": running},
    }
    if update:
        service["UpdateStatus"] = update
    if tasks is None:
        tasks = [{"DesiredState": "running", "Status": {"State": "running", "Timestamp": SINCE}}] * running
    return swarm.ServiceView(name, service, tuple(tasks))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def run(states, watch, timeout=30.0, stable=0.0):
    clock = Clock()
    sequence = list(states)

    def read():
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]

    return swarm.converge(read, set(watch), SINCE, timeout, stable, clock=clock, sleep=clock.sleep)


def test_converged_when_every_task_runs():
    starting = {"DesiredState": "running", "Status": {"State": "starting", "Timestamp": SINCE}}
    result = run([[view("web", 2, 1, tasks=[starting])], [view("web", 2, 2)]], {"web"})
    assert result.ok and result.rolled_back == {}


def test_a_swarm_rollback_is_reported_as_such():
    updating = view("web", update={"State": "updating", "StartedAt": SINCE})
    rolled = view("web", update={"State": "rollback_completed", "Message": "rollback completed", "StartedAt": SINCE})
    result = run([[updating], [rolled]], {"web"})
    assert not result.ok and result.rolled_back == {"web": "rollback completed"}


def test_an_earlier_deploys_rollback_is_not_this_ones():
    earlier = view("web", update={"State": "rollback_completed", "Message": "rollback completed", "StartedAt": "2026-12-01T09:00:00Z"})
    assert run([[earlier]], {"web"}).ok


def test_a_paused_update_fails_at_once():
    result = run([[view("web", update={"State": "paused", "Message": "update paused due to failure", "StartedAt": SINCE})]], {"web"})
    assert not result.ok and not result.rolled_back and "update paused" in result.reason


def test_not_converging_fails_at_the_timeout_with_the_tasks_error():
    failed = {
        "DesiredState": "shutdown", "Status": {"State": "failed", "Timestamp": "2026-12-02T10:00:05Z", "Err": "task: non-zero exit (1)"},
    }
    result = run([[view("web", 1, 0, tasks=[failed])]], {"web"}, timeout=10)
    assert not result.ok and "not converged within 10 s" in result.reason and "non-zero exit (1)" in result.reason
    assert result.waited >= 10


def test_failures_before_the_deploy_are_not_its_own():
    old = {"DesiredState": "shutdown", "Status": {"State": "failed", "Timestamp": "2026-12-01T10:00:00Z", "Err": "old failure"}}
    result = run([[view("web", 1, 0, tasks=[old])]], {"web"}, timeout=2)
    assert "old failure" not in result.reason


def test_unwatched_services_are_not_waited_for():
    assert run([[view("web"), view("db", 1, 0)]], {"web"}).ok


def test_a_job_is_done_once_its_tasks_completed():
    job = view("migrate", 1, 0, tasks=[], mode={"ReplicatedJob": {}})
    job.service["ServiceStatus"]["CompletedTasks"] = 1
    assert run([[job]], {"migrate"}).ok


def test_it_must_stay_converged_for_the_stable_window():
    updating = view("web", update={"State": "updating", "StartedAt": SINCE})
    rolled = view("web", update={"State": "rollback_completed", "Message": "rolled back", "StartedAt": SINCE})
    result = run([[view("web")], [view("web")], [updating], [rolled]], {"web"}, stable=5)
    assert result.rolled_back == {"web": "rolled back"}


def test_a_vanished_service_fails():
    result = run([[]], {"web"})
    assert not result.ok and "the service is gone" in result.reason


def test_engine_times_compare_as_times():
    """The engine writes 0 to 9 digits of fraction; as plain strings "...32.6Z" would sort after "...32.668Z"."""
    later = view("web", update={"State": "rollback_completed", "StartedAt": "2026-12-02T10:00:00.5Z"})
    result = swarm.converge(lambda: [later], {"web"}, "2026-12-02T10:00:00.123456789Z", 1, 0, clock=Clock(), sleep=lambda s: None)
    assert result.rolled_back  # 0.5 s is after 0.123456789 s: this deploy's rollback
