"""Repeat suppression (alerts.py): one notice when a condition begins, a reminder after
NOTIFY_REMIND, one when it ends; never one per run."""

from __future__ import annotations

from composeflux import alerts
from composeflux.events import DEFAULT_NOTIFY, Event, Kind
from composeflux.state import Alert

T0 = "2026-12-01T00:00:00+00:00"
T1 = "2026-12-01T00:05:00+00:00"
T2 = "2026-12-01T12:00:00+00:00"
T3 = "2026-12-02T00:10:00+00:00"  # more than 24 h after T0
DAY = 86400.0


def failed(stack: str, why: str = "render failed") -> Event:
    return Event(Kind.STACK_FAILED, f"{stack}: failed: {why}", stack, "c0ffee", why)


def decide(before, found, known, time, **options):
    options.setdefault("remind", DAY)
    options.setdefault("enabled", DEFAULT_NOTIFY)
    return alerts.decide(before, found, known, time=time, **options)


def run(before, stack_states: dict[str, tuple[Kind, str] | None], time: str, found=(), delivered=True, **options):
    """One sync: its decision, and the alerts as saved after delivery (or not)."""
    known = {f"stack/{name}": value for name, value in stack_states.items()}
    decision = decide(before, list(found), known, time, **options)
    return decision, (decision.delivered(time) if delivered else decision.alerts)


def test_a_failure_is_told_once_then_not_on_every_run():
    first, saved = run({}, {"web": (Kind.STACK_FAILED, "render failed")}, T0, [failed("web")])
    assert [(n.kind, n.text, n.stack) for n in first.notices] == [(Kind.STACK_FAILED, "web: failed: render failed", "web")]
    assert saved["stack/web"] == Alert("stack-failed", T0, "render failed", notified=T0)
    for time in (T1, T2):
        again, saved = run(saved, {"web": (Kind.STACK_FAILED, "render failed")}, time, [failed("web")])
        assert again.notices == ()
    assert saved["stack/web"].since == T0


def test_a_lasting_failure_is_reminded_after_notify_remind_once():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0, [failed("web", "boom")])
    reminder, saved = run(saved, {"web": (Kind.STACK_FAILED, "still boom")}, T3, [failed("web", "still boom")])
    assert [(n.reminder, n.text) for n in reminder.notices] == [(True, f"web: still failing since {T0}: still boom")]
    assert saved["stack/web"].notified == T3
    quiet, _ = run(saved, {"web": (Kind.STACK_FAILED, "still boom")}, "2026-12-02T00:15:00+00:00")
    assert quiet.notices == ()


def test_notify_remind_zero_never_reminds():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0)
    decision, _ = run(saved, {"web": (Kind.STACK_FAILED, "boom")}, "2027-06-01T00:00:00+00:00", remind=0)
    assert decision.notices == ()


def test_recovery_is_told_once_and_ends_the_alert():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0)
    recovered = Event(Kind.RECOVERED, "web: recovered: runs abc again", "web", "abc")
    decision, saved = run(saved, {"web": None}, T1, [recovered])
    assert [(n.kind, n.text) for n in decision.notices] == [(Kind.RECOVERED, "web: recovered: runs abc again")]
    assert saved == {}
    again, _ = run(saved, {"web": None}, T2, [])
    assert again.notices == ()


def test_a_failure_nobody_was_told_about_ends_silently():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0, enabled={Kind.RECOVERED})
    assert saved["stack/web"].notified is None
    decision, saved = run(saved, {"web": None}, T1, enabled={Kind.RECOVERED})
    assert decision.notices == () and saved == {}


def test_an_undelivered_notice_is_tried_again_by_the_next_run():
    first, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0, [failed("web", "boom")], delivered=False)
    assert len(first.notices) == 1 and saved["stack/web"].notified is None
    second, saved = run(saved, {"web": (Kind.STACK_FAILED, "boom")}, T1, [failed("web", "boom")])
    assert [n.text for n in second.notices] == ["web: failed: boom"]
    assert saved["stack/web"] == Alert("stack-failed", T0, "boom", notified=T1)


def test_a_rollback_of_a_failing_stack_is_news_the_reverse_is_not():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0)
    rolled = Event(Kind.ROLLED_BACK, "web: rolled back from abc: unhealthy", "web", "abc", "unhealthy")
    decision, saved = run(saved, {"web": (Kind.ROLLED_BACK, "unhealthy")}, T1, [rolled])
    assert [(n.kind, n.text) for n in decision.notices] == [(Kind.ROLLED_BACK, "web: rolled back from abc: unhealthy")]
    assert saved["stack/web"].since == T0 and saved["stack/web"].kind == "rolled-back"
    # Held afterwards (Git still wants the rejected revision): the stack "fails", nothing new.
    decision, saved = run(saved, {"web": (Kind.STACK_FAILED, "waiting for a new revision")}, T2)
    assert decision.notices == ()
    assert saved["stack/web"].kind == "rolled-back"


def test_a_sync_that_fails_as_a_whole_is_one_alert_and_a_refused_prune_is_news():
    sync_failed = Event(Kind.SYNC_FAILED, "Sync failed, nothing was changed: git", None, None, "git")
    decision = decide({}, [sync_failed], {"sync": (Kind.SYNC_FAILED, "git")}, T0)
    assert [n.text for n in decision.notices] == ["Sync failed, nothing was changed: git"]
    saved = decision.delivered(T0)
    assert decide(saved, [sync_failed], {"sync": (Kind.SYNC_FAILED, "git")}, T1).notices == ()
    refused = Event(Kind.PRUNE_REFUSED, "Sync failed: refusing to remove 3 stacks", None, None, "unsafe")
    decision = decide(saved, [refused], {"sync": (Kind.PRUNE_REFUSED, "unsafe")}, T2)
    assert [n.kind for n in decision.notices] == [Kind.PRUNE_REFUSED]
    back = Event(Kind.RECOVERED, "The sync works again: 2 unchanged", None, "abc")
    decision = decide(decision.delivered(T2), [back], {"sync": None}, T3)
    assert [(n.kind, n.text, n.key) for n in decision.notices] == [(Kind.RECOVERED, "The sync works again: 2 unchanged", "sync")]


def test_a_stack_removed_from_git_ends_its_alert_without_a_word():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0)
    decision = decide(saved, [], {}, T1, gone={"stack/web"})
    assert decision.notices == () and decision.alerts == {}


def test_stacks_the_run_knows_nothing_about_keep_their_alert_and_get_no_reminder():
    _, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0)
    decision = decide(saved, [], {"sync": (Kind.SYNC_FAILED, "git")}, T3)  # the sync failed before the stacks
    assert "stack/web" in decision.alerts
    assert [n.key for n in decision.notices] == ["sync"]


def test_kinds_left_out_of_notify_events_are_tracked_not_told():
    decision, saved = run({}, {"web": (Kind.STACK_FAILED, "boom")}, T0, [failed("web", "boom")], enabled={Kind.ROLLED_BACK})
    assert decision.notices == ()
    assert saved["stack/web"].kind == "stack-failed"


def test_one_off_events_are_told_when_enabled():
    applied = Event(Kind.UPDATE_APPLIED, "web: new images applied (image update)", "web", "abc")
    pending = Event(Kind.UPDATE_PENDING, "db: a newer image is available for db (postgres:16)", "db")
    decision = decide({}, [applied, pending], {}, T0)
    assert [n.kind for n in decision.notices] == [Kind.UPDATE_APPLIED]  # update-pending is not a default
    decision = decide({}, [applied, pending], {}, T0, enabled=set(Kind))
    assert [n.kind for n in decision.notices] == [Kind.UPDATE_APPLIED, Kind.UPDATE_PENDING]
    assert decision.alerts == {}


def test_a_unit_death_is_an_alert_that_the_next_sync_ends():
    from composeflux.events import unit_failed

    death = unit_failed("composeflux.service", "timeout", ["Deploying: new", "Health gate of web: waiting"], alerts.DIED["sync"])
    decision = decide({}, [death], {"died/sync": (Kind.UNIT_FAILED, "composeflux.service failed: timeout")}, T0)
    assert [n.text for n in decision.notices] == [
        "composeflux.service failed: timeout, last lines:\nDeploying: new\nHealth gate of web: waiting"
    ]
    saved = decision.delivered(T0)
    assert decide(saved, [death], {"died/sync": (Kind.UNIT_FAILED, "composeflux.service failed: timeout")}, T1).notices == ()
    known, _ = alerts.conditions(_ok_outcome())
    decision = decide(saved, [], known, T2)
    assert [(n.kind, n.text) for n in decision.notices] == [
        (Kind.RECOVERED, "composeflux sync: recovered (was: composeflux.service failed: timeout)")
    ]


def _ok_outcome():
    from composeflux.errors import ExitStatus
    from composeflux.outcome import SyncOutcome

    return SyncOutcome(ExitStatus.OK, (), "abc")


def test_conditions_of_a_sync():
    from composeflux.errors import ExitStatus
    from composeflux.outcome import StackOutcome, SyncOutcome
    from composeflux.plan import Action

    outcome = SyncOutcome(ExitStatus.STACKS_FAILED, (
        StackOutcome("a", Action.FAILED, "new", error="boom"),
        StackOutcome("b", Action.ROLLED_BACK, "hash changed", error="rolled back from abc: unhealthy"),
        StackOutcome("c", Action.ROLLED_BACK, "image update", error="new image unhealthy", bad_images={"app": "sha256:1"}),
        StackOutcome("d", Action.DEPLOY, "new"),
        StackOutcome("e", Action.UNCHANGED),
        StackOutcome("f", Action.PRUNE, "deleted from Git"),
        StackOutcome("g", Action.SUSPENDED, "suspended"),
    ), "abc")
    known, gone = alerts.conditions(outcome)
    assert known == {
        "died/sync": None, "sync": None,
        "stack/a": (Kind.STACK_FAILED, "boom"),
        "stack/b": (Kind.ROLLED_BACK, "rolled back from abc: unhealthy"),
        "stack/c": None,  # back on its old image: it runs what Git says
        "stack/d": None, "stack/e": None,
    }
    assert gone == {"stack/f"}
    stopped = SyncOutcome(ExitStatus.UNSAFE, (), error="refusing to remove 3 stacks")
    assert alerts.conditions(stopped)[0]["sync"] == (Kind.PRUNE_REFUSED, "refusing to remove 3 stacks")


def test_one_message_per_run_groups_the_stacks():
    notices = [
        alerts.Notice(Kind.STACK_FAILED, "web: failed: boom", "stack/web", stack="web"),
        alerts.Notice(Kind.STACK_FAILED, "db: failed: bang", "stack/db", stack="db"),
        alerts.Notice(Kind.RECOVERED, "api: recovered: runs abc again", "stack/api", stack="api"),
        alerts.Notice(Kind.STACK_FAILED, "old: still failing since x: y", "stack/old", reminder=True, stack="old"),
    ]
    title, body = alerts.message(notices, "nas", "0123456789abcdef", "Bump postgres")
    assert title == "composeflux on nas: web, db failed; api recovered; old still failing"
    assert body == (
        "web: failed: boom\n\ndb: failed: bang\n\napi: recovered: runs abc again\n\nold: still failing since x: y"
        "\n\nCommit 0123456789ab Bump postgres"
    )
    title, _ = alerts.message([alerts.Notice(Kind.SYNC_FAILED, "Sync failed: git", "sync")], "nas")
    assert title == "composeflux on nas: sync failed"
