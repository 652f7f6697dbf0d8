"""Stacks deployed side by side (DEPLOY_JOBS, plan.schedule): at most that many at once,
startup_order and network/volume creators first, a failing stack alone, an engine lost midway
with what was running finished and the rest skipped, and what sd_notify says meanwhile."""

from __future__ import annotations

import threading
import time

import pytest

from composeflux.errors import ConfigError, EngineError, ExitStatus
from composeflux.plan import Action
from composeflux.sync import _Progress
from tests.conftest import service_yaml


class Overlap:
    """Counts the `up`s running at the same time (each one held for `hold` seconds)."""

    def __init__(self, hold: float = 0.05):
        self.hold, self.now, self.most = hold, 0, 0
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.ended: list[str] = []

    def __call__(self, project: str) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.started.append(project)
        time.sleep(self.hold)
        with self.lock:
            self.now -= 1
            self.ended.append(project)


def test_stacks_are_deployed_side_by_side_at_most_deploy_jobs_at_once(cfx, repo):
    for index in range(6):
        repo.add_stack(f"s{index}")
    repo.commit()
    overlap = cfx.compose.on_up = Overlap()
    assert cfx(DEPLOY_JOBS="3") is ExitStatus.OK
    assert overlap.most == 3
    assert sorted(cfx.compose.projects) == [f"s{index}" for index in range(6)]
    assert cfx.state().last_sync.summary == "6 deployed, 0 unchanged, 0 pruned, 0 failed"
    assert list(cfx.state().last_sync.stacks) == [f"s{index}" for index in range(6)]  # recorded in the plan's order


def test_one_job_deploys_one_stack_after_the_other(cfx, repo):
    for name in ("a", "b", "c"):
        repo.add_stack(name)
    repo.commit()
    overlap = cfx.compose.on_up = Overlap(hold=0.01)
    assert cfx(DEPLOY_JOBS="1") is ExitStatus.OK
    assert overlap.most == 1 and overlap.started == ["a", "b", "c"]


def test_startup_order_goes_first_one_by_one_and_creators_before_their_users(cfx, repo):
    repo.add_stack("db")
    repo.add_stack("cache")
    repo.write("edge/compose.yaml", service_yaml() + "networks:\n  proxy:\n    name: proxy\n")
    uses_proxy = service_yaml() + "    networks: [proxy]\nnetworks:\n  proxy:\n    name: proxy\n    external: true\n"
    for name in ("app", "blog"):
        repo.write(f"{name}/compose.yaml", uses_proxy)
    repo.add_stack("other")
    repo.write("stack.yml", "startup_order: [db, cache]\n")
    repo.commit()
    overlap = cfx.compose.on_up = Overlap()
    assert cfx(DEPLOY_JOBS="4") is ExitStatus.OK
    started, ended = overlap.started, overlap.ended
    assert started[:2] == ["db", "cache"] and ended[:2] == ["db", "cache"]  # one after the other, before the rest
    assert started.index("app") > ended.index("edge") and started.index("blog") > ended.index("edge")
    assert overlap.most >= 2  # edge and other went together; app and blog together after edge
    assert sorted(cfx.compose.projects) == ["app", "blog", "cache", "db", "edge", "other"]


def test_a_failing_stack_does_not_stop_the_others(cfx, repo):
    for name in ("a", "b", "c", "d"):
        repo.add_stack(name)
    repo.commit()
    cfx.compose.fail_up["b"] = "Error response from daemon: something about b"
    assert cfx(DEPLOY_JOBS="4") is ExitStatus.STACKS_FAILED
    assert sorted(cfx.compose.projects) == ["a", "c", "d"]
    last = cfx.state().last_sync
    assert last.stacks["b"]["action"] == "failed" and "something about b" in last.stacks["b"]["error"]
    assert [last.stacks[name]["action"] for name in ("a", "c", "d")] == ["deploy"] * 3


def test_an_engine_lost_midway_lets_the_running_ones_finish_and_starts_no_more(cfx, repo):
    for name in ("a", "b", "c", "d"):
        repo.add_stack(name)
    repo.commit()
    b_started = threading.Event()

    def lose_engine(project):
        if project == "a":
            assert b_started.wait(5)  # a is still running when b loses the engine
            time.sleep(0.05)
        if project == "b":
            b_started.set()
            raise EngineError("cannot run docker compose: [Errno 2] No such file or directory")

    cfx.compose.on_up = lose_engine
    assert cfx(DEPLOY_JOBS="2") is ExitStatus.ENGINE
    assert cfx.compose.called("up")[:2] in (["a", "b"], ["b", "a"]) and "c" not in cfx.compose.called("up")
    last = cfx.state().last_sync
    assert last.stacks["a"]["action"] == "deploy"  # it was running: it finished and is recorded as deployed
    assert last.stacks["b"]["action"] == "failed"
    assert last.stacks["c"]["action"] == last.stacks["d"]["action"] == "skipped"
    assert "already done: deployed a;" in last.summary
    assert cfx.state().stacks["a"].deployed is not None


def test_renders_run_side_by_side_and_their_errors_are_each_stacks_own(cfx, repo, caplog):
    for index in range(4):
        repo.add_stack(f"s{index}")
    repo.write("bad/compose.yaml", "services: [\n")
    repo.commit()
    overlap = Overlap()
    original = cfx.compose.config

    def slow_config(project, *arguments, **keywords):
        overlap(project)
        return original(project, *arguments, **keywords)

    cfx.compose.config = slow_config
    assert cfx(DEPLOY_JOBS="4") is ExitStatus.STACKS_FAILED
    assert overlap.most >= 2
    failed = [r for r in caplog.records if getattr(r, "COMPOSEFLUX_ACTION", None) == "failed"]
    assert {getattr(r, "COMPOSEFLUX_STACK", None) for r in failed} == {"bad"}


def test_deploy_jobs_is_validated(cfx):
    from composeflux import config

    with pytest.raises(ConfigError, match="DEPLOY_JOBS: must be from 1 to 64"):
        config.load(cfx.conf, environ={**cfx.settings, "DEPLOY_JOBS": "0"})
    with pytest.raises(ConfigError, match="DEPLOY_JOBS: expected a whole number, got 'many'"):
        config.load(cfx.conf, environ={**cfx.settings, "DEPLOY_JOBS": "many"})
    assert config.load(cfx.conf, environ={**cfx.settings, "DEPLOY_JOBS": "12"}).deploy_jobs == 12


@pytest.mark.parametrize("cpus, jobs", [(1, 2), (2, 4), (3, 6), (16, 8)])
def test_the_default_number_of_jobs_follows_the_cpus(monkeypatch, cpus, jobs):
    from composeflux import config

    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert config.default_deploy_jobs() == jobs


def test_the_status_says_how_far_and_what_each_job_does():
    said: list[str] = []
    progress = _Progress(said.append, 50)
    for index in range(11):
        progress.start(f"s{index}", Action.DEPLOY)
        progress.finish(f"s{index}")
    progress.start("web", Action.DEPLOY)
    progress.start("db", Action.DEPLOY)
    progress.detail("db", "health gate: 1 of 2 up")
    assert said[-1] == "deploying 13/50: web, db (health gate: 1 of 2 up)"
    progress.finish("web")
    progress.finish("db")
    progress.detail("db", "late")  # a finished one says nothing more
    assert said[-1] == "deploying 13/50: web, db (health gate: 1 of 2 up)"
    progress.start("old", Action.PRUNE)
    assert said[-1] == "pruning 14/50: old"


def test_pending_marks_asked_for_together_are_written_together(tmp_path, monkeypatch):
    from composeflux import state, sync

    writes: list[set[str]] = []
    original = state.mark_pending_many

    def slow(state_dir, marks):
        writes.append(set(marks))
        time.sleep(0.05)  # a state file write, with its fsyncs, on a slow disk
        original(state_dir, marks)

    monkeypatch.setattr(state, "mark_pending_many", slow)
    marks = sync._PendingMarks(tmp_path)
    names = [f"s{index}" for index in range(6)]
    start = threading.Barrier(len(names))

    def mark(name):
        start.wait(5)
        marks.mark(name, "c0ffee", f"hash-{name}")
        assert state.read(tmp_path).stacks[name].pending.hash == f"hash-{name}"  # on disk when it returns

    threads = [threading.Thread(target=mark, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    recorded = state.read(tmp_path).stacks
    assert {name: recorded[name].pending.hash for name in names} == {name: f"hash-{name}" for name in names}
    assert sorted(set().union(*writes)) == names and len(writes) < len(names)  # grouped: fewer writes than marks


def test_a_pending_mark_that_cannot_be_written_fails_every_stack_it_was_for(tmp_path, monkeypatch):
    from composeflux import state, sync

    def full(state_dir, marks):
        time.sleep(0.05)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state, "mark_pending_many", full)
    marks = sync._PendingMarks(tmp_path)
    errors: dict[str, str] = {}

    def mark(name):
        try:
            marks.mark(name, "c0ffee", "h")
        except OSError as exc:
            errors[name] = exc.strerror

    threads = [threading.Thread(target=mark, args=(f"s{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == {f"s{index}": "No space left on device" for index in range(4)}
