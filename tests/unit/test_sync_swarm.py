"""BACKEND=swarm in-process, against tests/fakes/swarm.py: who syncs (only the swarm's leader),
what a deploy, a Swarm rollback, a paused update, a dry run and a prune do with the plan and the
state. Deploying to a real multi-node swarm is tests/swarm."""

from __future__ import annotations

import dataclasses
import json

import pytest

from composeflux import sync
from composeflux.errors import ExitStatus
from composeflux.plan import Action
from tests.fakes.swarm import FakeSwarm


def unused(*args, **kwargs):
    raise AssertionError("a follower or worker must not get this far")


def swarm_tools(cfx, role):
    return dataclasses.replace(
        cfx.compose.tools(),
        swarm=sync.SwarmTools(
            stack=unused, read_stack=unused, create_objects=unused, remove_unused_objects=unused, rollback=unused,
            engine_time=unused, hash_key=unused, role=lambda: role,
        ),
    )


def run(cfx, role, dry_run=False, monkeypatch=None):
    tools = swarm_tools(cfx, role)
    monkeypatch.setattr(cfx.compose, "tools", lambda: tools)
    return cfx(BACKEND="swarm", dry_run=dry_run)


def test_a_manager_that_is_not_the_leader_leaves_the_sync_to_it(cfx, repo, monkeypatch, caplog):
    caplog.set_level("INFO")
    repo.add_stack("web")
    repo.commit()
    assert run(cfx, ("manager", "node2"), monkeypatch=monkeypatch) is ExitStatus.OK
    assert "Not the leader of the swarm (the leader is node2)" in caplog.text
    assert cfx.compose.calls == []
    assert not (cfx.state_dir / "state.json").exists()  # nothing recorded: the leader's sync is the one


@pytest.mark.parametrize(("role", "said"), [("worker", "a swarm worker"), ("inactive", "not part of a swarm")])
def test_a_worker_or_an_engine_in_no_swarm_cannot_sync(cfx, repo, monkeypatch, caplog, role, said):
    repo.add_stack("web")
    repo.commit()
    assert run(cfx, (role, ""), monkeypatch=monkeypatch) is ExitStatus.ENGINE
    assert f"this Docker engine is {said}" in caplog.text
    assert cfx.compose.calls == []


def test_the_compose_backend_asks_nobody(cfx, repo, monkeypatch):
    from composeflux import engine

    monkeypatch.setattr(engine, "swarm_role", unused)
    repo.add_stack("web")
    repo.commit()
    assert cfx() is ExitStatus.OK  # BACKEND=compose (the default): nobody is asked about a swarm
    assert cfx.compose.called("up") == ["web"]


def test_image_updates_say_they_are_not_for_swarm(cfx, repo, caplog):
    from composeflux import config as configuration, updates

    config = configuration.load(cfx.conf, environ={**cfx.settings, "BACKEND": "swarm"})
    assert updates.run(config) is ExitStatus.CONFIG
    assert "not available with BACKEND=swarm" in caplog.text
    assert not (cfx.state_dir / "state.json").exists()


APP = """\
services:
  app:
    image: example/app:1
    command: ["serve", "${PORT:-80}"]
    configs: [app_conf]
    secrets: [token]
  side:
    image: example/side:1
    container_name: the-side
configs:
  app_conf: {content: "port ${PORT:-80}"}
secrets:
  token: {environment: TOKEN}
"""


@pytest.fixture
def fake(cfx, monkeypatch):
    swarm = FakeSwarm(cfx.compose)
    monkeypatch.setattr(cfx.compose, "tools", swarm.tools)
    return swarm


def deploy_app(cfx, repo, port="80", **settings):
    repo.write("web/compose.yaml", APP.replace("${PORT:-80}", port))
    repo.commit()
    return cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(cfx.secrets), **settings)


@pytest.fixture
def secrets_file(cfx, tmp_path):
    cfx.secrets = tmp_path / "secrets.env"
    cfx.secrets.write_text("TOKEN=first-token-value\n")
    cfx.secrets.chmod(0o600)
    return cfx.secrets


def record(cfx, name="web"):
    return cfx.state().stacks[name]


def test_a_deploy_then_a_no_op(cfx, repo, fake, secrets_file):
    assert deploy_app(cfx, repo) is ExitStatus.OK
    assert fake.calls.count(("deploy", "web")) == 1
    assert ("hash_key", True) in fake.calls  # a real sync stores the key in the swarm
    file = fake.files["web"][-1]
    assert "container_name" not in file["services"]["side"]
    assert {o.key for o in fake.objects.values()} == {"app_conf", "token"}
    assert {o.key: o.data for o in fake.objects.values()}["token"] == b"first-token-value"
    assert fake.services["web"]["app"]["Spec"]["Labels"]["compose.stack.managed-by"] == "composeflux"
    assert record(cfx).last_action == Action.DEPLOY.value
    assert cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file)) is ExitStatus.OK
    assert fake.calls.count(("deploy", "web")) == 1  # nothing changed: no deploy


def test_a_new_secret_value_is_a_new_secret_and_the_old_goes_once_unused(cfx, repo, fake, secrets_file):
    deploy_app(cfx, repo)
    first = {o.key: n for n, o in fake.objects.items()}["token"]
    secrets_file.write_text("TOKEN=second-token-value\n")
    assert cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file)) is ExitStatus.OK
    names = sorted(n for n, o in fake.objects.items() if o.key == "token")
    assert len(names) == 2 and first in names  # the previous one is the rollback's
    secrets_file.write_text("TOKEN=third-token-value\n")
    cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file))
    assert first not in fake.objects  # used by neither the spec nor the previous spec: removed


def test_a_swarm_rollback_is_a_rolled_back_stack_and_the_revision_is_held(cfx, repo, fake, secrets_file, caplog):
    deploy_app(cfx, repo)
    fake.outcome[("web", "app")] = "rolled back"
    assert deploy_app(cfx, repo, port="81") is ExitStatus.STACKS_FAILED
    stack = record(cfx)
    assert stack.last_action == Action.ROLLED_BACK.value
    assert "rolled back by Swarm (services: app)" in stack.last_error
    assert stack.rejected is not None
    assert ("rollback", ["web_app-id"]) not in fake.calls  # Swarm did it
    deploys = fake.calls.count(("deploy", "web"))
    assert cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file)) is ExitStatus.STACKS_FAILED
    assert fake.calls.count(("deploy", "web")) == deploys  # not tried again while Git wants it
    assert "rolled back from" in caplog.text and "waiting for a new revision" in caplog.text


def test_a_paused_update_is_rolled_back_by_composeflux(cfx, repo, fake, secrets_file):
    deploy_app(cfx, repo)
    fake.outcome[("web", "app")] = "paused"
    assert deploy_app(cfx, repo, port="81") is ExitStatus.STACKS_FAILED
    assert ("rollback", ["web_app-id"]) in fake.calls
    assert record(cfx).last_action == Action.ROLLED_BACK.value


def test_with_rollback_off_a_paused_update_is_left_and_fails(cfx, repo, fake, secrets_file):
    deploy_app(cfx, repo)
    fake.outcome[("web", "app")] = "paused"
    assert deploy_app(cfx, repo, port="81", ROLLBACK="false") is ExitStatus.STACKS_FAILED
    assert not any(call[0] == "rollback" for call in fake.calls)
    assert "update paused" in record(cfx).last_error
    assert "failure_action" not in json.dumps(fake.files["web"][-1]["services"]["app"].get("deploy", {}))


def test_rollback_on_sets_swarms_failure_action(cfx, repo, fake, secrets_file):
    deploy_app(cfx, repo)
    assert fake.files["web"][-1]["services"]["app"]["deploy"]["update_config"] == {"failure_action": "rollback"}


def test_a_dry_run_names_what_swarm_ignores_and_changes_nothing(cfx, repo, fake, secrets_file):
    repo.write("web/compose.yaml", APP)
    repo.commit()
    assert cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file), dry_run=True) is ExitStatus.OK
    assert "Swarm ignores services.side.container_name" in cfx.out
    assert ("hash_key", False) in fake.calls
    assert fake.files == {} and fake.objects == {} and fake.claims == {}


def test_a_stack_that_cannot_be_a_swarm_stack_fails_alone(cfx, repo, fake, secrets_file):
    repo.write("bad/compose.yaml", "services:\n  x:\n    build: .\n")
    assert deploy_app(cfx, repo) is ExitStatus.STACKS_FAILED
    assert "services.x: has no image" in record(cfx, "bad").last_error
    assert "bad" not in fake.files and ("deploy", "web") in fake.calls


def test_a_stack_deleted_from_git_is_removed_and_its_name_released(cfx, repo, fake, secrets_file):
    deploy_app(cfx, repo)
    repo.write("other/compose.yaml", "services:\n  o:\n    image: example/o:1\n")
    repo.remove("web")
    repo.commit()
    assert cfx(BACKEND="swarm", SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file)) is ExitStatus.OK
    assert ("remove", "web") in fake.calls and ("release", "web") in fake.calls
    assert "web" not in fake.services and not any(o.key == "token" for o in fake.objects.values())
