"""Repeat suppression: which events become a notification, and what the operator was told.

    conditions(outcome)                    -> {key: (kind, reason) | None}   what holds after a sync
    decide(alerts, events, conditions, ..) -> Decision(notices, alerts)      pure
    message(notices, host, ...)            -> (title, body)                  one message per run

A condition that persists (a failing stack, a sync that fails as a whole, a unit that died) is
an Alert in the state under its key ("stack/NAME", "sync", "died/sync", "died/update"). The
operator gets one notice when it begins, a reminder every NOTIFY_REMIND while it lasts, and one
notice when it ends ("recovered", only for a condition they were told about): never one per
timer run. A rollback while a stack was already failing is news and is told, and so is a refused
prune while the sync was failing otherwise (or the reverse); a sync failing for another reason of
the same kind (Git, then the secrets manager) is not. One-off events (image updates) are told once.

A notice counts as told only once it was delivered (`Decision.delivered`): one that could not be
is tried again by the next run.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Iterable, Mapping

from composeflux.events import SYNC_KINDS, Event, Kind
from composeflux.outcome import SyncOutcome
from composeflux.plan import Action
from composeflux.state import Alert

SYNC = "sync"
DIED = {"sync": "died/sync", "update": "died/update"}  # composeflux unit-failed, by the unit's kind
CONDITIONS = (Kind.SYNC_FAILED, Kind.PRUNE_REFUSED, Kind.UNVERIFIED, Kind.STACK_FAILED, Kind.ROLLED_BACK, Kind.UNIT_FAILED)
REASON_LIMIT = 300  # characters of a reason repeated in a reminder or a recovery


@dataclasses.dataclass(frozen=True)
class Notice:
    kind: Kind
    text: str
    key: str | None = None  # the alert it tells about; None for a one-off
    reminder: bool = False
    stack: str | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    notices: tuple[Notice, ...]
    alerts: dict[str, Alert]  # the next state's, before delivery

    def delivered(self, time: str) -> dict[str, Alert]:
        """The alerts once the notices were delivered: each one told about is marked so."""
        told = {notice.key for notice in self.notices if notice.key}
        return {key: dataclasses.replace(alert, notified=time) if key in told else alert for key, alert in self.alerts.items()}


def key_of(event: Event) -> str | None:
    if event.alert is not None:
        return event.alert
    if event.kind in (Kind.SYNC_FAILED, Kind.PRUNE_REFUSED, Kind.UNVERIFIED) or (event.kind is Kind.RECOVERED and event.stack is None):
        return SYNC
    if event.kind in (Kind.STACK_FAILED, Kind.ROLLED_BACK, Kind.RECOVERED):
        return f"stack/{event.stack}"
    return None


def conditions(outcome: SyncOutcome) -> tuple[dict[str, tuple[Kind, str] | None], set[str]]:
    """After a real sync: each condition it knows of, failing (kind, reason) or not (None); and
    the keys of stacks it removed (their alerts end without a word)."""
    known: dict[str, tuple[Kind, str] | None] = {DIED["sync"]: None}  # the sync ran to its end: its unit did not die
    if outcome.error is not None:
        known[SYNC] = (SYNC_KINDS.get(outcome.status, Kind.SYNC_FAILED), outcome.error)
    else:
        known[SYNC] = None
    gone = set()
    for stack in outcome.stacks:
        key = f"stack/{stack.name}"
        if stack.action is Action.FAILED:
            known[key] = (Kind.STACK_FAILED, stack.error or stack.reason)
        elif stack.action is Action.ROLLED_BACK:
            # Back on the old image of a failed update: it runs what Git says, nothing persists.
            known[key] = None if stack.bad_images else (Kind.ROLLED_BACK, stack.error or stack.reason)
        elif stack.action in (Action.DEPLOY, Action.UNCHANGED):
            known[key] = None
        elif stack.action is Action.PRUNE:
            gone.add(key)
        # KEEP, SUSPENDED, SKIPPED: nothing new is known; no reminder either.
    return known, gone


def _label(key: str) -> str:
    if key == SYNC:
        return "The sync"
    if key.startswith("died/"):
        return f"composeflux {key.removeprefix('died/')}"
    return key.removeprefix("stack/")


def _elapsed(since: str, time: str) -> float:
    try:
        return (datetime.datetime.fromisoformat(time) - datetime.datetime.fromisoformat(since)).total_seconds()
    except ValueError:
        return float("inf")  # an unreadable time: remind rather than stay silent for ever


def _short(text: str) -> str:
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def decide(
    alerts: Mapping[str, Alert],
    events: Iterable[Event],
    known: Mapping[str, tuple[Kind, str] | None],
    *,
    time: str,
    remind: float,
    enabled: Collection[Kind],
    gone: Collection[str] = (),
) -> Decision:
    """The notices of a run and the alerts after it. `known`: conditions() (or the one a unit
    death sets); `remind`: seconds between reminders, 0 for none; `enabled`: NOTIFY_EVENTS."""
    events = list(events)
    texts = {key_of(e): e.text for e in events if key_of(e) and e.kind is not Kind.RECOVERED}
    recoveries = {key_of(e): e.text for e in events if e.kind is Kind.RECOVERED}
    notices: list[Notice] = []
    after = {key: alert for key, alert in alerts.items() if key not in gone}
    for key, condition in sorted(known.items()):
        before = alerts.get(key)
        if condition is None:
            if before is None:
                continue
            del after[key]
            if before.notified is not None and Kind.RECOVERED in enabled:
                text = recoveries.get(key) or f"{_label(key)}: recovered (was: {_short(before.reason)})"
                notices.append(Notice(Kind.RECOVERED, text, key, stack=key.removeprefix("stack/") if key.startswith("stack/") else None))
            continue
        kind, reason = condition
        text = texts.get(key) or f"{_label(key)}: {reason}"
        stack = key.removeprefix("stack/") if key.startswith("stack/") else None
        if before is None or (before.kind != kind.value and (kind is Kind.ROLLED_BACK or key == SYNC)):
            after[key] = Alert(kind.value, before.since if before else time, reason)
            if kind in enabled:
                notices.append(Notice(kind, text, key, stack=stack))
            continue
        after[key] = dataclasses.replace(before, reason=reason)
        told_kind = Kind(before.kind) if before.kind in {k.value for k in Kind} else kind
        if told_kind not in enabled:
            continue
        if before.notified is None:  # never delivered: try again
            notices.append(Notice(told_kind, text, key, stack=stack))
        elif remind > 0 and _elapsed(before.notified, time) >= remind:
            reminder = f"{_label(key)}: still failing since {before.since}: {_short(reason)}"
            notices.append(Notice(told_kind, reminder, key, reminder=True, stack=stack))
    for event in events:
        if key_of(event) is None and event.kind in enabled:
            notices.append(Notice(event.kind, event.text, stack=event.stack))
    return Decision(tuple(notices), after)


WORDS = {
    Kind.SYNC_FAILED: "sync failed", Kind.PRUNE_REFUSED: "prune refused", Kind.UNVERIFIED: "signature refused",
    Kind.STACK_FAILED: "failed",
    Kind.ROLLED_BACK: "rolled back", Kind.RECOVERED: "recovered", Kind.UPDATE_PENDING: "update available",
    Kind.UPDATE_APPLIED: "updated", Kind.UPDATE_ROLLED_BACK: "update rolled back", Kind.UNIT_FAILED: "died",
}


def message(notices: Iterable[Notice], host: str, commit: str | None = None, subject: str | None = None) -> tuple[str, str]:
    """One notification for a run: a title naming what happened to which stacks, and a body with
    one paragraph per notice. The caller masks both (the run's Masker)."""
    notices = list(notices)
    groups: dict[str, list[str]] = {}
    for notice in notices:
        names = groups.setdefault("still failing" if notice.reminder else WORDS[notice.kind], [])
        if notice.stack and notice.stack not in names:
            names.append(notice.stack)
    parts = [f"{', '.join(names)} {word}" if names else word for word, names in groups.items()]
    title = f"composeflux on {host}: " + "; ".join(parts)
    body = "\n\n".join(notice.text for notice in notices)
    if commit:
        body += f"\n\nCommit {commit[:12]}" + (f" {subject}" if subject else "")
    return title, body
