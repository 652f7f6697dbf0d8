"""The versioned per-stack state file: a pure record() and careful load()/save()."""

import json
import os

from composeflux import state
from composeflux.errors import ExitStatus
from composeflux.outcome import StackOutcome, SyncOutcome
from composeflux.plan import Action


def outcome(*stacks, status=ExitStatus.OK, commit="c1", error=None):
    return SyncOutcome(status, tuple(stacks), commit, "subject", error=error)


def recorded(previous, result, time):
    return state.record(previous, result, branch="main", repository="/srv/git/stacks.git", time=time)


def test_record_tracks_deployed_good_and_failures():
    s1 = recorded(state.State(), outcome(StackOutcome("web", Action.DEPLOY, "new", "h1", {}, "c1")), "t1")
    web = s1.stacks["web"]
    assert web.deployed == web.good == state.Revision("c1", "h1", "t1")
    assert web.consecutive_failures == 0

    broken = StackOutcome("web", Action.FAILED, "hash changed", "h2", error="up failed")
    failed = outcome(broken, status=ExitStatus.STACKS_FAILED, commit="c2")
    s2 = recorded(s1, failed, "t2")
    s3 = recorded(s2, failed, "t3")
    web = s3.stacks["web"]
    assert (web.consecutive_failures, web.failing_since, web.last_error) == (2, "t2", "up failed")
    assert web.good == state.Revision("c1", "h1", "t1")  # still the last one that worked
    assert s3.last_sync.result == "failed" and s3.last_sync.stacks["web"]["error"] == "up failed"

    s4 = recorded(s3, outcome(StackOutcome("web", Action.UNCHANGED, "", "h1", {}, "c1"), commit="c3"), "t4")
    web = s4.stacks["web"]
    assert (web.consecutive_failures, web.failing_since, web.last_error) == (0, None, None)
    assert web.deployed == state.Revision("c1", "h1", "t1")  # unchanged keeps when it was deployed

    s5 = recorded(s4, outcome(StackOutcome("web", Action.PRUNE, "deleted from Git")), "t5")
    assert "web" not in s5.stacks
    assert [h["time"] for h in s5.history] == ["t1", "t2", "t3", "t4", "t5"]


def test_history_is_bounded():
    current = state.State()
    for index in range(state.HISTORY_LIMIT + 5):
        current = recorded(current, outcome(), f"t{index}")
    assert len(current.history) == state.HISTORY_LIMIT
    assert current.history[-1]["time"] == f"t{state.HISTORY_LIMIT + 4}"


def test_a_whole_sync_failure_after_changes_says_what_was_done():
    result = SyncOutcome(
        ExitStatus.ENGINE,
        (StackOutcome("a", Action.DEPLOY, "new", "h", {}, "c"), StackOutcome("b", Action.SKIPPED, "new", "h2")),
        "c",
        error="cannot run docker compose: gone",
    )
    assert result.result == "error"
    assert result.summary() == "sync stopped: cannot run docker compose: gone (already done: deployed a; the other stacks were not changed)"
    saved = recorded(state.State(), result, "t")
    assert saved.last_sync.status == 8
    assert saved.stacks["a"].deployed is not None and saved.stacks["b"].deployed is None
    nothing = SyncOutcome(ExitStatus.GIT, error="cannot fetch")
    assert nothing.summary() == "sync failed, nothing was changed: cannot fetch"


def test_save_then_load_round_trips_atomically(tmp_path):
    saved = recorded(state.State(), outcome(StackOutcome("web", Action.DEPLOY, "new", "h1", {}, "c1")), "t1")
    state.save(tmp_path, saved)
    assert state.load(tmp_path) == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.STATE_FILE]
    assert (tmp_path / state.STATE_FILE).stat().st_mode & 0o777 == 0o640
    assert json.loads((tmp_path / state.STATE_FILE).read_text())["version"] == state.VERSION


def test_legacy_last_sync_json_is_migrated_and_then_removed(tmp_path):
    legacy = {
        "time": "2026-11-01T10:00:00+00:00", "commit": "abc", "subject": "s", "branch": "main", "repository": "r",
        "result": "failed", "summary": "1 deployed, 0 unchanged, 0 pruned, 1 failed (bad: boom)",
        "stacks": {"good": {"action": "deploy", "reason": "new", "hash": "h"}, "bad": {"action": "failed", "reason": "boom", "hash": None}},
    }
    (tmp_path / state.LEGACY_STATE_FILE).write_text(json.dumps(legacy))
    loaded = state.load(tmp_path)
    assert loaded.last_sync.summary == legacy["summary"] and loaded.last_sync.commit == "abc"
    assert loaded.stacks["good"].good == state.Revision("abc", "h", legacy["time"])
    assert loaded.stacks["bad"].consecutive_failures == 1 and loaded.stacks["bad"].last_error == "boom"
    state.save(tmp_path, loaded)
    assert not (tmp_path / state.LEGACY_STATE_FILE).exists()
    assert state.load(tmp_path) == loaded


def test_damaged_state_is_set_aside_by_a_sync_and_only_reported_by_status(tmp_path, caplog):
    for junk in (b"", b"{not json", b"[1, 2]", json.dumps({"version": 99}).encode(), b"\xff\xfe"):
        path = tmp_path / state.STATE_FILE
        path.write_bytes(junk)
        assert state.read(tmp_path) == state.State()
        assert path.read_bytes() == junk  # status changes nothing
        assert state.load(tmp_path) == state.State()
        assert not path.exists()
        assert any(p.name.startswith(f"{state.STATE_FILE}.damaged-") for p in tmp_path.iterdir())
        for p in tmp_path.iterdir():
            p.unlink()
    assert "cannot be used" in caplog.text


def test_state_file_behind_a_symlink_is_neither_read_nor_written_through(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.symlink(target, tmp_path / state.STATE_FILE)
    assert state.read(tmp_path) == state.State()
    state.save(tmp_path, state.State())  # replaces the link itself, atomically
    assert not (tmp_path / state.STATE_FILE).is_symlink()
    assert target.read_text() == "{}"


def test_wrong_shapes_inside_a_valid_file_do_not_crash(tmp_path):
    document = {
        "version": 1,
        "last_sync": {"time": 5, "stacks": {"a": "x", "b": {"action": 3}}},
        "stacks": {"a": [], "b": {"consecutive_failures": "x"}},
        "history": {},
    }
    (tmp_path / state.STATE_FILE).write_text(json.dumps(document))
    loaded = state.load(tmp_path)
    assert loaded.stacks["b"].consecutive_failures == 0
    assert loaded.last_sync is not None and set(loaded.last_sync.stacks) == {"b"}


def test_the_summary_names_at_most_ten_failed_stacks():
    stacks = tuple(StackOutcome(f"s{n:02d}", Action.FAILED, "new", error="a long reason " * 20) for n in range(15))
    summary = SyncOutcome(ExitStatus.STACKS_FAILED, stacks).summary()
    assert summary == "0 deployed, 0 unchanged, 0 pruned, 15 failed (s00, s01, s02, s03, s04, s05, s06, s07, s08, s09 and 5 more)"


def test_counters_and_a_stack_history_of_what_changed():
    deploy = outcome(StackOutcome("web", Action.DEPLOY, "new", "h1", {}, "c1"))
    failing = outcome(
        StackOutcome("web", Action.FAILED, "hash changed", "h2", error="up failed"), status=ExitStatus.STACKS_FAILED, commit="c2"
    )
    held = outcome(StackOutcome("web", Action.FAILED, "hash changed", "h2", error="up failed", held=True), status=ExitStatus.STACKS_FAILED)
    unchanged = outcome(StackOutcome("web", Action.UNCHANGED, "", "h1", {}, "c1"))
    current = state.State()
    for index, result in enumerate([deploy, unchanged, failing, failing, held, unchanged, unchanged]):
        current = recorded(current, result, f"t{index}")
    web = current.stacks["web"]
    assert (web.deploys, web.failures, web.rollbacks) == (1, 2, 0)  # the held run was not a try
    assert [(e["time"], e["action"], e["commit"], e["detail"]) for e in web.history] == [
        ("t0", "deploy", "c1", "new"),
        ("t1", "unchanged", "c1", "unchanged"),
        ("t2", "failed", "c2", "up failed"),  # failing again the same way is counted, not repeated
        ("t5", "unchanged", "c1", "unchanged"),
    ]
    assert current.counters == {"syncs_ok": 4, "syncs_failed": 3}


def test_alerts_counters_durations_and_the_update_check_survive_a_round_trip(tmp_path):
    current = recorded(state.State(), outcome(StackOutcome("web", Action.DEPLOY, "new", "h1", {}, "c1")), "t1")
    current = state.record(current, outcome(), branch="main", repository="r", duration=1.23456, invocation="abc")
    current = state.record_update_check(current, {}, result="ok", status=0, summary="image updates: 0 up to date", duration=0.5)
    current = state.State(**{**vars(current), "alerts": {"stack/web": state.Alert("stack-failed", "t0", "boom", "t1")}})
    state.save(tmp_path, current)
    loaded = state.read(tmp_path)
    assert loaded == current
    assert loaded.last_sync.duration == 1.235 and loaded.last_sync.invocation == "abc"
    assert loaded.history[-1]["duration"] == 1.235
    assert loaded.counters == {"syncs_ok": 2, "update_checks_ok": 1}


def test_a_file_without_the_new_keys_reads_as_before(tmp_path):
    (tmp_path / state.STATE_FILE).write_text(json.dumps({"version": 1, "stacks": {"web": {"last_action": "deploy"}}}))
    loaded = state.read(tmp_path)
    assert loaded.alerts == {} and loaded.counters == {} and loaded.last_update is None
    assert loaded.stacks["web"].history == () and loaded.stacks["web"].deploys == 0
