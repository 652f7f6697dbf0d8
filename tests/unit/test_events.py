"""The events of a run (events.py): what an outcome means for the operator, and the journal
entries with their MESSAGE_IDs, which the catalog explains."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from composeflux import events, state
from composeflux.errors import ExitStatus
from composeflux.events import Kind
from composeflux.logs import COMMIT, EVENT, MESSAGE_ID, REASON, STACK
from composeflux.masking import Masker
from composeflux.outcome import StackOutcome, SyncOutcome
from composeflux.plan import IMAGE_UPDATE, Action

CATALOG = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "composeflux.catalog"
FAILING = state.StackRecord(last_action="failed", consecutive_failures=2, failing_since="2026-12-01T00:00:00+00:00")


def kinds(found):
    return [(e.kind, e.stack) for e in found]


def test_each_kind_of_stack_outcome_makes_its_event():
    outcome = SyncOutcome(ExitStatus.STACKS_FAILED, (
        StackOutcome("a", Action.FAILED, "new", error="render failed"),
        StackOutcome("b", Action.FAILED, "new", error="same as before", held=True),
        StackOutcome("c", Action.ROLLED_BACK, "hash changed", commit="good", error="rolled back from bad: unhealthy"),
        StackOutcome("d", Action.ROLLED_BACK, f"{IMAGE_UPDATE} (services: app)", commit="c1", error="unhealthy",
                     bad_images={"app": "sha256:" + "1" * 64}),
        StackOutcome("e", Action.DEPLOY, f"{IMAGE_UPDATE} (services: app)", commit="c1"),
        StackOutcome("f", Action.DEPLOY, "hash changed", commit="c1"),
        StackOutcome("g", Action.UNCHANGED, commit="c1"),
        StackOutcome("h", Action.PRUNE, "deleted from Git"),
    ), "c1")
    previous = state.State(stacks={"g": FAILING, "f": state.StackRecord(last_action="deploy")})
    found = events.of_sync(previous, outcome)
    assert kinds(found) == [
        (Kind.STACK_FAILED, "a"), (Kind.ROLLED_BACK, "c"), (Kind.UPDATE_ROLLED_BACK, "d"), (Kind.UPDATE_APPLIED, "e"),
        (Kind.RECOVERED, "g"),
    ]
    by_stack = {e.stack: e for e in found}
    assert by_stack["a"].text == "a: failed: render failed" and by_stack["a"].commit == "c1" and by_stack["a"].reason == "render failed"
    assert by_stack["c"].text == "c: rolled back from bad: unhealthy"
    assert by_stack["d"].text == "d: the new image of app (sha256:111111111111) was rolled back: unhealthy"
    assert by_stack["g"].text == "g: recovered: runs c1 again (failing since 2026-12-01T00:00:00+00:00)"


def test_a_deploy_after_a_failure_is_a_recovery():
    commit = "0123456789abcdef"
    outcome = SyncOutcome(ExitStatus.OK, (StackOutcome("web", Action.DEPLOY, "hash changed", commit=commit),), commit)
    found = events.of_sync(state.State(stacks={"web": FAILING}), outcome)
    assert [(e.kind, e.text) for e in found] == [
        (Kind.RECOVERED, "web: recovered: runs 0123456789ab (failing since 2026-12-01T00:00:00+00:00)")
    ]


def test_a_sync_that_fails_as_a_whole_and_then_works_again():
    failed = SyncOutcome(ExitStatus.GIT, error="git fetch failed: no route to host")
    [event] = events.of_sync(state.State(), failed)
    assert (event.kind, event.text, event.reason) == (
        Kind.SYNC_FAILED, "Sync failed, nothing was changed: git fetch failed: no route to host", "git fetch failed: no route to host"
    )
    refused = SyncOutcome(ExitStatus.UNSAFE, error="refusing")
    assert kinds(events.of_sync(state.State(), refused)) == [(Kind.PRUNE_REFUSED, None)]
    previous = state.State(last_sync=state.LastSync("t", "error", 4, "sync failed"))
    [back] = events.of_sync(previous, SyncOutcome(ExitStatus.OK, (StackOutcome("web", Action.UNCHANGED),), "c1"))
    assert (back.kind, back.stack) == (Kind.RECOVERED, None)
    assert back.text.startswith("The sync works again: ")


def test_a_dry_run_has_no_events():
    outcome = SyncOutcome(ExitStatus.STACKS_FAILED, (StackOutcome("a", Action.FAILED, error="x"),), dry_run=True)
    assert events.of_sync(state.State(), outcome) == []


def test_update_pending_only_for_digests_not_known_before():
    old = state.ImageUpdate("nginx:1", "sha256:old", "t0")
    previous = state.State(stacks={"web": state.StackRecord(updates={"app": old})})
    same = {"web": {"app": old}}
    assert events.of_update(previous, same) == []
    newer = {"web": {"app": state.ImageUpdate("nginx:1", "sha256:new", "t1"), "db": state.ImageUpdate("postgres:16", "sha256:p", "t1")}}
    [event] = events.of_update(previous, newer)
    assert (event.kind, event.stack) == (Kind.UPDATE_PENDING, "web")
    assert event.text == "web: a newer image is available for app (nginx:1), db (postgres:16)"


def test_the_journal_entry_carries_the_message_id_and_masked_fields(caplog):
    masker = Masker(["hunter2-secret"])
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    handler.addFilter(masker)
    logger = logging.getLogger("composeflux.events")
    logger.addHandler(handler)
    try:
        events.log_events([events.Event(Kind.STACK_FAILED, "web: failed: bad password hunter2-secret", "web", "c1", "hunter2-secret")])
    finally:
        logger.removeHandler(handler)
    [record] = records
    # The sync logged the error itself when it happened: the event's entry does not repeat it.
    assert record.getMessage() == "failed (the error is above; `composeflux status web`)"
    assert getattr(record, MESSAGE_ID) == events.MESSAGE_IDS[Kind.STACK_FAILED]
    assert (getattr(record, STACK), getattr(record, COMMIT), getattr(record, EVENT), getattr(record, REASON)) == (
        "web", "c1", "stack-failed", "***"
    )
    assert record.levelno == logging.WARNING


def test_message_ids_are_distinct_128_bit_ids_and_every_kind_has_one():
    assert set(events.MESSAGE_IDS) == set(Kind)
    assert len(set(events.MESSAGE_IDS.values())) == len(Kind)
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in events.MESSAGE_IDS.values())


def test_the_catalog_explains_every_message_id_once():
    text = CATALOG.read_text()
    ids = re.findall(r"^-- ([0-9a-f]{32})$", text, re.MULTILINE)
    assert sorted(ids) == sorted(events.MESSAGE_IDS.values())
    for entry in re.split(r"^-- [0-9a-f]{32}\n", text, flags=re.MULTILINE)[1:]:
        header, _, body = entry.partition("\n\n")
        assert re.search(r"^Subject: composeflux: ", header, re.MULTILINE), header
        assert "Defined-By: composeflux" in header
        assert body.strip(), header
