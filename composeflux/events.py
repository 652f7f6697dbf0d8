"""What the operator is told about: the events of a run, each with a stable journald MESSAGE_ID.

    of_sync(previous state, outcome)   -> [Event]   pure: what a sync's outcome means
    of_update(previous state, found)   -> [Event]   pure: image updates found for the first time
    unit_failed(unit, result, lines)   -> Event     a run systemd saw die (composeflux unit-failed)
    log(events)                                     one journal entry per event

The MESSAGE_IDs are part of the interface (`journalctl MESSAGE_ID=...`, the catalog in
packaging/systemd/composeflux.catalog explains each one, alerts on them); never change one. The
notifications (alerts.py) are made from these events, so the journal and the notices agree.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterable, Mapping

from composeflux import state
from composeflux.errors import ExitStatus
from composeflux.logs import COMMIT, EVENT, MESSAGE_ID, REASON, STACK
from composeflux.outcome import SyncOutcome
from composeflux.plan import IMAGE_UPDATE, Action

log = logging.getLogger("composeflux.events")


class Kind(str, enum.Enum):  # noqa: UP042 -- as plan.Action: .value is the word
    SYNC_FAILED = "sync-failed"  # the sync as a whole: Git, secrets, configuration, engine, state
    PRUNE_REFUSED = "prune-refused"  # a prune that looked unsafe was refused (nothing was changed)
    UNVERIFIED = "unverified"  # VERIFY_SIGNATURES: the commit or tag to deploy is not signed by a trusted key
    STACK_FAILED = "stack-failed"  # a stack failed to render, come up or pass its health gate
    ROLLED_BACK = "rolled-back"  # a stack failed its health gate and runs its last good revision again
    RECOVERED = "recovered"  # the first success after a failure (of a stack, the sync, or its unit)
    UPDATE_PENDING = "update-pending"  # `composeflux update` found a newer image behind a tag
    UPDATE_APPLIED = "update-applied"  # new images deployed and through their health gate
    UPDATE_ROLLED_BACK = "update-rolled-back"  # a new image failed its gate; the old one runs again
    UNIT_FAILED = "unit-failed"  # the sync or update unit failed without reporting (timeout, OOM, crash, bad config)


MESSAGE_IDS = {
    Kind.SYNC_FAILED: "d988bce06f5f4ad18df39513f86e1694",
    Kind.PRUNE_REFUSED: "cbb757c102e348828eb6ace0721a0716",
    Kind.UNVERIFIED: "5d2f9aee0bdf4847ab9c670c19259dee",
    Kind.STACK_FAILED: "b2c9783b03be451c89e692e34f7b41c1",
    Kind.ROLLED_BACK: "e5892fa2c42f4008912c3112ebb8b8df",
    Kind.RECOVERED: "fbea5e173db1407d8acccbe41145bfd3",
    Kind.UPDATE_PENDING: "2c22fde258454f5ea26af08627af0494",
    Kind.UPDATE_APPLIED: "277505899f6b4195a8ef2ea84c2ed6b7",
    Kind.UPDATE_ROLLED_BACK: "cd80611062ac469093a53c017fdc517d",
    Kind.UNIT_FAILED: "64292bc310a34ff3832e39b47391c86e",
}
LEVELS = {
    Kind.SYNC_FAILED: logging.ERROR, Kind.PRUNE_REFUSED: logging.ERROR, Kind.UNVERIFIED: logging.ERROR, Kind.STACK_FAILED: logging.ERROR,
    Kind.ROLLED_BACK: logging.WARNING, Kind.RECOVERED: logging.INFO, Kind.UPDATE_PENDING: logging.INFO,
    Kind.UPDATE_APPLIED: logging.INFO, Kind.UPDATE_ROLLED_BACK: logging.WARNING, Kind.UNIT_FAILED: logging.ERROR,
}
# A sync that fails as a whole: the event (and alert) of its kind, by exit status.
SYNC_KINDS = {ExitStatus.UNSAFE: Kind.PRUNE_REFUSED, ExitStatus.UNVERIFIED: Kind.UNVERIFIED}
# NOTIFY_EVENTS when it is not set: what goes wrong, what was undone, what works again, what was applied.
DEFAULT_NOTIFY = frozenset(Kind) - {Kind.UPDATE_PENDING}


@dataclasses.dataclass(frozen=True)
class Event:
    kind: Kind
    text: str  # one line, for the journal and the notification (masked by whoever made it)
    stack: str | None = None
    commit: str | None = None  # the commit it is about (for a rollback: the one that was rejected)
    reason: str = ""

    alert: str | None = None  # the alert key it belongs to, when not the stack's or the sync's (alerts.py)


def _failing(record: state.StackRecord | None) -> bool:
    return record is not None and (
        record.consecutive_failures > 0 or record.last_action in (Action.FAILED.value, Action.ROLLED_BACK.value)
    )


def of_sync(previous: state.State, outcome: SyncOutcome) -> list[Event]:
    """The events of a real (not dry) sync: what it did that the operator may need to know."""
    if outcome.dry_run:
        return []
    events = []
    commit = outcome.commit
    if outcome.error is not None:
        kind = SYNC_KINDS.get(outcome.status, Kind.SYNC_FAILED)
        events.append(Event(kind, outcome.summary()[:1].upper() + outcome.summary()[1:], None, commit, outcome.error))
    elif previous.last_sync is not None and previous.last_sync.result == "error":
        events.append(Event(Kind.RECOVERED, "The sync works again: " + outcome.summary(), None, commit, "sync"))
    for stack in outcome.stacks:
        before = previous.stacks.get(stack.name)
        why = stack.error or stack.reason
        if stack.action is Action.FAILED and not stack.held:
            events.append(Event(Kind.STACK_FAILED, f"{stack.name}: failed: {why}", stack.name, commit, why))
        elif stack.action is Action.ROLLED_BACK and stack.bad_images:
            images = ", ".join(f"{service} ({digest[:19]})" for service, digest in sorted(stack.bad_images.items()))
            events.append(Event(Kind.UPDATE_ROLLED_BACK, f"{stack.name}: the new image of {images} was rolled back: {why}",
                                stack.name, stack.commit, why))
        elif stack.action is Action.ROLLED_BACK:
            events.append(Event(Kind.ROLLED_BACK, f"{stack.name}: {why}", stack.name, commit, why))
        elif stack.action in (Action.DEPLOY, Action.UNCHANGED):
            if stack.action is Action.DEPLOY and stack.reason.startswith(IMAGE_UPDATE):
                events.append(Event(Kind.UPDATE_APPLIED, f"{stack.name}: new images applied ({stack.reason})",
                                    stack.name, stack.commit, stack.reason))
            if _failing(before):
                assert before is not None
                since = f" (failing since {before.failing_since})" if before.failing_since else ""
                runs = f"runs {(stack.commit or '?')[:12]}" + (" again" if stack.action is Action.UNCHANGED else "")
                events.append(Event(Kind.RECOVERED, f"{stack.name}: recovered: {runs}{since}", stack.name, stack.commit, stack.reason))
    return events


def of_update(previous: state.State, found: Mapping[str, Mapping[str, state.ImageUpdate]]) -> list[Event]:
    """UPDATE_PENDING for each image update not known before (a new digest): one event per stack."""
    events = []
    for name, updates in sorted(found.items()):
        known = previous.stacks.get(name, state.StackRecord()).updates
        new = {s: u for s, u in updates.items() if s not in known or known[s].digest != u.digest}
        if new:
            what = ", ".join(f"{service} ({update.image})" for service, update in sorted(new.items()))
            events.append(Event(Kind.UPDATE_PENDING, f"{name}: a newer image is available for {what}", name, None, what))
    return events


def unit_failed(unit: str, result: str, lines: Iterable[str], alert: str | None = None) -> Event:
    """A unit of composeflux's that systemd saw fail without it having reported the run itself."""
    last = [line for line in lines if line.strip()]
    text = f"{unit} failed: {result}" + (", last lines:\n" + "\n".join(last) if last else " (nothing in its log)")
    return Event(Kind.UNIT_FAILED, text, None, None, result, alert)


# The sync has logged what went wrong with a stack, as an error, when it happened: the event's
# entry says so in a word (the catalog, `journalctl -x`, explains it; COMPOSEFLUX_REASON has the
# why), so that each failure is told once in the log.
TOLD_ALREADY = {
    Kind.STACK_FAILED: (logging.WARNING, "failed (the error is above; `composeflux status {stack}`)"),
}


def log_events(events: Iterable[Event]) -> None:
    """One journal entry per event, with its MESSAGE_ID and fields (masked as every record is)."""
    for event in events:
        fields = {MESSAGE_ID: MESSAGE_IDS[event.kind], EVENT: event.kind.value, REASON: event.reason}
        if event.stack:
            fields[STACK] = event.stack
        if event.commit:
            fields[COMMIT] = event.commit
        level = LEVELS[event.kind]
        # The stack's name is in the text already: a text log must not say it twice.
        text = event.text.removeprefix(f"{event.stack}: ") if event.stack else event.text
        if event.kind in TOLD_ALREADY:
            level, template = TOLD_ALREADY[event.kind]
            text = template.format(stack=event.stack)
        log.log(level, "%s", text, extra=fields)
