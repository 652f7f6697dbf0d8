"""One sync end to end, in-process: real Git (local repositories), a fake `docker compose`.

The same scenarios run against the real engine in tests/integration; these pin down the flow
itself (what is run when, what is recorded, which exit status) in milliseconds.
"""

from __future__ import annotations

import fcntl
import json
import os

from composeflux import state, trigger
from composeflux.errors import EngineError, ExitStatus
from tests.conftest import service_yaml


def test_first_deploy_then_a_noop_that_renders_nothing(cfx, repo):
    repo.add_stack("web")
    repo.add_stack("db")
    commit = repo.commit()
    assert cfx() is ExitStatus.OK
    assert sorted(cfx.compose.called("up")) == ["db", "web"]  # side by side: in either order
    record = cfx.state()
    assert record.last_sync.summary == "2 deployed, 0 unchanged, 0 pruned, 0 failed"
    assert record.stacks["web"].deployed.commit == commit and record.stacks["web"].good == record.stacks["web"].deployed

    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == [] and cfx.compose.called("config") == []  # the render cache answered
    assert cfx.compose.called("inspect") == []  # the health gate costs nothing where nothing was deployed
    assert cfx.state().last_sync.summary == "0 deployed, 2 unchanged, 0 pruned, 0 failed"
    assert len(cfx.state().history) == 2


def test_changed_stack_alone_is_rendered_and_deployed(cfx, repo):
    repo.add_stack("web")
    repo.add_stack("db")
    repo.commit()
    cfx()
    cfx.compose.calls.clear()
    repo.add_stack("web", environment={"MODE": "new"})
    repo.commit()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("config") == ["web"] and cfx.compose.called("up") == ["web"]


def test_startup_order_then_by_name(cfx, repo):
    for name in ("c", "b", "a"):
        repo.add_stack(name)
    repo.write("stack.yml", "startup_order: [c]\n")
    repo.commit()
    cfx(DEPLOY_JOBS="1")
    assert cfx.compose.called("up") == ["c", "a", "b"]


def test_a_broken_stack_fails_alone_and_is_counted(cfx, repo):
    repo.add_stack("good")
    repo.write("bad/compose.yaml", "services: [\n")
    repo.commit()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == ["good"]
    record = cfx.state()
    assert record.last_sync.result == "failed"
    assert record.stacks["bad"].consecutive_failures == 1 and "docker compose config failed" in record.stacks["bad"].last_error
    cfx(retry_failed=True)  # tried again (else it waits out its backoff: test_backoff.py)
    assert cfx.state().stacks["bad"].consecutive_failures == 2


def test_deleted_stack_is_pruned_and_forgotten(cfx, repo):
    repo.add_stack("keep")
    repo.add_stack("gone")
    repo.commit()
    cfx()
    repo.remove("gone")
    repo.commit()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("down") == ["gone"]
    assert set(cfx.state().stacks) == {"keep"}


def test_dry_run_prints_the_plan_and_runs_nothing(cfx, repo):
    repo.add_stack("web")
    repo.commit()
    assert cfx(dry_run=True) is ExitStatus.OK
    assert cfx.out.split()[:2] == ["deploy", "web"] and "new" in cfx.out
    assert cfx.compose.called("up") == [] and not (cfx.state_dir / state.STATE_FILE).exists()


def test_refuses_to_prune_everything_without_permission(cfx, repo):
    repo.add_stack("one")
    repo.commit()
    cfx()
    repo.remove("one")
    repo.commit()
    assert cfx() is ExitStatus.UNSAFE
    assert cfx.compose.called("down") == []
    assert cfx.state().last_sync.result == "error" and cfx.state().stacks["one"].deployed is not None
    assert cfx(allow_prune_all=True) is ExitStatus.OK
    assert cfx.compose.called("down") == ["one"]


def test_engine_lost_midway_stops_the_run_and_names_what_was_done(cfx, repo, capsys):
    for name in ("a", "b", "c"):
        repo.add_stack(name)
    repo.commit()

    def lose_engine(project):
        if project == "b":
            raise EngineError("cannot run docker compose: [Errno 2] No such file or directory")

    cfx.compose.on_up = lose_engine
    assert cfx(DEPLOY_JOBS="1") is ExitStatus.ENGINE  # one at a time: c comes after b (test_sync_parallel.py: side by side)
    assert cfx.compose.projects.keys() == {"a"}
    err = capsys.readouterr().err
    assert "nothing was changed" not in err
    assert "sync stopped: cannot run docker compose" in err.lower() and "already done: deployed a;" in err
    record = cfx.state()
    assert record.last_sync.status == 8 and record.last_sync.stacks["c"]["action"] == "skipped"
    assert record.stacks["a"].deployed is not None and record.stacks["c"].deployed is None


def test_a_bug_is_exit_70_and_recorded_as_an_error(cfx, repo, capsys):
    repo.add_stack("a")
    repo.commit()

    def bug(project):
        raise ZeroDivisionError("boom")

    cfx.compose.on_up = bug
    assert cfx() is ExitStatus.INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    last = cfx.state().last_sync
    assert (last.result, last.status) == ("error", 70) and "internal error" in last.summary


def test_unreachable_remote_changes_nothing_and_is_exit_4(cfx, repo):
    repo.add_stack("a")
    repo.commit()
    cfx()
    repo.remote.rename(repo.remote.with_name("moved.git"))
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.GIT
    assert cfx.compose.called("up") == [] and cfx.compose.called("down") == []
    assert cfx.state().last_sync.summary.startswith("sync failed, nothing was changed: cannot fetch branch main")


def test_a_busy_lock_is_exit_7_and_records_nothing(cfx, repo):
    repo.add_stack("a")
    repo.commit()
    cfx.state_dir.mkdir()
    with open(cfx.state_dir / "sync.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cfx(LOCK_TIMEOUT="0.2") is ExitStatus.BUSY
    assert not (cfx.state_dir / state.STATE_FILE).exists()
    assert cfx.compose.calls == []


def test_the_trigger_spool_is_drained_before_anything_else(cfx, repo):
    repo.add_stack("a")
    repo.commit()
    cfx.spool.mkdir()
    trigger.request_sync(cfx.spool)
    seen = []
    original = cfx.compose.version

    def version(cache=None):
        seen.append(list(cfx.spool.iterdir()))
        return original(cache)

    cfx.compose.version = version
    cfx()
    assert seen == [[]]
    trigger.request_sync(cfx.spool)
    cfx(dry_run=True)  # a dry run answers no request: the real sync is still owed
    assert len(list(cfx.spool.iterdir())) == 1


def test_failed_up_fails_that_stack_and_is_masked(cfx, repo, tmp_path):
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("DB_PASSWORD=correct-horse-battery\n")
    os.chmod(secrets_file, 0o600)
    repo.write("db/compose.yaml", service_yaml(environment={"PW": "${DB_PASSWORD}"}))
    repo.add_stack("web")
    repo.commit()
    cfx.compose.fail_up["db"] = "Error response from daemon: bad value correct-horse-battery"
    assert cfx(SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file)) is ExitStatus.STACKS_FAILED
    text = (cfx.state_dir / state.STATE_FILE).read_text()
    assert "correct-horse-battery" not in text
    assert json.loads(text)["last_sync"]["stacks"]["db"]["error"] == "docker compose up failed: Error response from daemon: bad value ***"


def test_an_engine_gone_midway_is_exit_8_not_a_failure_of_every_stack(cfx, repo):
    for name in ("a", "b", "c"):
        repo.add_stack(name)
    repo.commit()
    cfx.compose.fail_up["b"] = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    assert cfx(DEPLOY_JOBS="1") is ExitStatus.ENGINE
    assert cfx.compose.called("up") == ["a", "b"]  # c is not even tried
    last = cfx.state().last_sync
    assert "the Docker engine went away" in last.summary and "already done: deployed a;" in last.summary
    assert last.stacks["b"]["action"] == "failed" and last.stacks["c"]["action"] == "skipped"
    assert cfx.state().stacks["b"].tree is not None  # its files did move: the next update knows from where


def test_a_secret_too_short_to_mask_is_used_and_named_once(cfx, repo, tmp_path, caplog):
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("PIN=4711\nPASSWORD=long-enough-value\n")
    os.chmod(secrets_file, 0o600)
    repo.write("db/compose.yaml", service_yaml(environment={"PIN": "${PIN}", "PW": "${PASSWORD}"}))
    repo.commit()
    assert cfx(SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file)) is ExitStatus.OK
    warnings = [r.getMessage() for r in caplog.records if "shorter than MASK_MIN_LENGTH" in r.getMessage()]
    assert warnings == ["Secret(s) PIN shorter than MASK_MIN_LENGTH (6 characters): used, but not masked in the log"]
    environment = cfx.compose.projects["db"]["services"]["app"]["environment"]
    assert environment == {"PIN": "4711", "PW": "long-enough-value"}


def test_a_name_claimed_by_another_instance_is_not_taken_over(cfx, repo):
    repo.add_stack("web")
    repo.add_stack("api")
    repo.commit()
    cfx.compose.claims["web"] = "someone-else"  # another instance is deploying it right now
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == ["api"]
    assert "claimed by another composeflux instance (someone-else)" in cfx.state().stacks["web"].last_error
    assert cfx.compose.claims["api"] != "someone-else"

    repo.remove("api")
    repo.commit()
    cfx()
    assert "api" not in cfx.compose.claims  # released when pruned


def test_one_info_line_per_stack_action_and_compose_progress_at_debug(cfx, repo, capsys):
    repo.add_stack("web")
    repo.commit()
    cfx()
    err = capsys.readouterr().err
    assert "web: Deploying: new" in err
    assert "Started" not in err and "Secrets provider none" not in err
    repo.add_stack("web", environment={"X": "1"})
    repo.commit()
    cfx(LOG_LEVEL="DEBUG")
    err = capsys.readouterr().err
    assert "web: Container web-app-1  Started" in err and "Secrets provider none returned 0 value(s)" in err


def test_a_project_deployed_by_something_else_is_adopted_only_when_asked(cfx, repo, caplog):
    repo.add_stack("legacy")
    repo.commit()
    cfx.compose.projects["legacy"] = {"services": {"app": {"labels": {}}}}  # `docker compose up` by hand
    assert cfx() is ExitStatus.STACKS_FAILED
    assert "or take it over once with `composeflux sync --adopt legacy`" in cfx.state().stacks["legacy"].last_error
    assert cfx.compose.called("up") == []
    assert cfx(adopt=frozenset({"legacy", "nothing-like-it"})) is ExitStatus.OK
    assert cfx.compose.called("up") == ["legacy"]
    assert "adopting the Compose project legacy" in cfx.state().stacks["legacy"].last_reason
    assert "--adopt nothing-like-it: no stack of that name was deployed by something else" in caplog.text
    assert cfx() is ExitStatus.OK and cfx.compose.called("up") == ["legacy"]  # ours from now on


def test_a_stack_of_another_composeflux_instance_is_never_adopted(cfx, repo):
    repo.add_stack("theirs")
    repo.commit()
    labels = {"compose.stack.managed-by": "composeflux", "compose.stack.instance": "0123456789abcdef"}
    cfx.compose.projects["theirs"] = {"services": {"app": {"labels": labels}}}
    assert cfx(adopt=frozenset({"theirs"})) is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []
