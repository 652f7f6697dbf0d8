"""Durable per-stack state: the one home of what happened to each stack over time.

    $STATE_DIRECTORY/state.json     (mode 0640; written once per run, atomically)

    {"version": 1,
     "last_sync": {time, result, status, commit, subject, branch, repository, summary,
                   duration, invocation, signer,          seconds it took; systemd's INVOCATION_ID; who
                                                          signed the commit (VERIFY_SIGNATURES)
                   stacks: {NAME: {action, reason, hash, error}}},
     "last_update": {time, result, status, summary, duration, invocation} | null,  `composeflux update`
     "stacks": {NAME: {last_action, last_reason, last_error,
                       deployed: {commit, hash, time, images} | null,   the commit its containers run
                       good: {commit, hash, time, images} | null,       the last one that passed its
                                                                        health gate (images: service ->
                                                                        image ID, for a rollback)
                       consecutive_failures, failing_since,
                       tree: {commit, paths} | null,             what its own tree holds
                       failed_inputs, retry_after,               failure backoff
                       rejected: {commit, hash, time} | null,    a revision that failed its gate:
                       rejected_reason,                          not deployed again while Git wants it
                       heal_hash, heal_attempts,                 redeploys of a broken revision
                       suspended, suspended_since,               `composeflux suspend`: why, since when
                       pending: {commit, hash, time} | null,     being deployed (set before `up`,
                                                                 cleared when the run is recorded)
                       updates: {SERVICE: {image, digest, since}},  newer images `composeflux update` found
                       bad_images: {SERVICE: digest},            applied ones that failed their gate
                       deploys, rollbacks, failures,             counters, for the metrics (never reset)
                       history: [{time, action, commit, detail}, ...]}},  what changed, newest last,
                                                                 at most STACK_HISTORY_LIMIT
     "alerts": {KEY: {kind, since, reason, notified}},   conditions the operator was (or is to be)
                                                         told about: "sync", "stack/NAME", "died/sync",
                                                         "died/update" (alerts.py)
     "counters": {NAME: n},                              syncs_ok, syncs_failed, syncs_error,
                                                         notifications_sent, notifications_failed, ...
     "history": [{time, result, status, commit, summary, duration}, ...]}   newest last, at most HISTORY_LIMIT

`record()` is a pure function from the previous state and a run's outcome to the next state;
`load()` and `save()` are the only I/O. Rollback, failure backoff, notifications (alerts.py) and
metrics (metrics.py) read these records; nothing else keeps its own copy. The file of composeflux 0.1
(`last-sync.json`) is read once and migrated; a damaged file is set aside, never trusted.

"Good" means: the last deploy of the stack passed its health gate, or the sync found it
running exactly what Git says. New keys are optional (a file without them reads as before), so
the format stays version 1; a file of a later version is set aside, as a damaged one is.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from composeflux.checkout import TreeRevision
from composeflux.outcome import StackOutcome, SyncOutcome
from composeflux.plan import IMAGE_UPDATE, Action
from composeflux.rendered import JSON

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LEGACY_STATE_FILE = "last-sync.json"  # composeflux 0.1
VERSION = 1
HISTORY_LIMIT = 50
STACK_HISTORY_LIMIT = 20  # per stack: its deploys, failures, rollbacks (not every unchanged run)
RETRY_BASE = 300  # seconds: the interval of the packaged timer, where failure backoff starts
MODE = 0o640


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Revision:
    commit: str | None
    hash: str | None
    time: str
    images: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> image ID

    @classmethod
    def from_json(cls, data: JSON) -> Revision | None:
        if not isinstance(data, dict):
            return None
        images = data.get("images")
        images = {str(k): v for k, v in images.items() if isinstance(v, str)} if isinstance(images, dict) else {}
        return cls(_str(data.get("commit")), _str(data.get("hash")), _str(data.get("time")) or "", images)


@dataclasses.dataclass(frozen=True)
class ImageUpdate:
    """A newer image behind a service's tag, found by `composeflux update` and not applied."""

    image: str  # the reference
    digest: str  # the registry's digest for it
    since: str  # when it was first seen

    @classmethod
    def from_json(cls, data: JSON) -> ImageUpdate | None:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("image", "digest", "since")):
            return None
        return cls(data["image"], data["digest"], data["since"])


@dataclasses.dataclass(frozen=True)
class Alert:
    """A condition the operator is told about once, reminded of, and told the end of (alerts.py)."""

    kind: str  # an events.Kind value: sync-failed, prune-refused, stack-failed, rolled-back, unit-failed
    since: str  # when it began
    reason: str  # the latest reason (masked)
    notified: str | None = None  # when a notice or reminder about it was last delivered; None: not yet

    @classmethod
    def from_json(cls, data: JSON) -> Alert | None:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("kind", "since")):
            return None
        return cls(data["kind"], data["since"], _str(data.get("reason")) or "", _str(data.get("notified")))


@dataclasses.dataclass(frozen=True)
class StackRecord:
    last_action: str = ""
    last_reason: str = ""
    last_error: str | None = None
    deployed: Revision | None = None
    good: Revision | None = None
    consecutive_failures: int = 0
    failing_since: str | None = None
    tree: TreeRevision | None = None  # what the stack's own tree holds (trees.py)
    failed_inputs: str | None = None  # what failed: not retried before retry_after unless it changes
    retry_after: str | None = None
    rejected: Revision | None = None  # failed its health gate: not deployed again while Git wants it
    rejected_reason: str | None = None
    heal_hash: str | None = None  # the revision heal_attempts counts redeploys of
    heal_attempts: int = 0
    suspended: str | None = None  # `composeflux suspend`: the reason given ("" for none)
    suspended_since: str | None = None
    pending: Revision | None = None  # being deployed by a sync that has not recorded its end
    updates: dict[str, ImageUpdate] = dataclasses.field(default_factory=dict)  # service -> a newer image found
    bad_images: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> a digest that failed its gate
    deploys: int = 0  # counters (never reset while the stack exists): deploys that passed their gate,
    rollbacks: int = 0  # rollbacks,
    failures: int = 0  # and runs in which it failed (not those that held it back)
    history: tuple[dict[str, str | None], ...] = ()  # {time, action, commit, detail}, newest last

    @classmethod
    def from_json(cls, data: JSON) -> StackRecord:
        if not isinstance(data, dict):
            return cls()
        failures = data.get("consecutive_failures")
        return cls(
            last_action=_str(data.get("last_action")) or "",
            last_reason=_str(data.get("last_reason")) or "",
            last_error=_str(data.get("last_error")),
            deployed=Revision.from_json(data.get("deployed")),
            good=Revision.from_json(data.get("good")),
            consecutive_failures=_count(failures),
            failing_since=_str(data.get("failing_since")),
            tree=_tree(data.get("tree")),
            failed_inputs=_str(data.get("failed_inputs")),
            retry_after=_str(data.get("retry_after")),
            rejected=Revision.from_json(data.get("rejected")),
            rejected_reason=_str(data.get("rejected_reason")),
            heal_hash=_str(data.get("heal_hash")),
            heal_attempts=_count(data.get("heal_attempts")),
            suspended=_str(data.get("suspended")),
            suspended_since=_str(data.get("suspended_since")),
            pending=Revision.from_json(data.get("pending")),
            updates=_updates(data.get("updates")),
            bad_images=_strings(data.get("bad_images")),
            deploys=_count(data.get("deploys")),
            rollbacks=_count(data.get("rollbacks")),
            failures=_count(data.get("failures")),
            history=_entries(data.get("history"), STACK_HISTORY_LIMIT),
        )


def _tree(data: JSON) -> TreeRevision | None:
    if not isinstance(data, dict) or not isinstance(data.get("commit"), str) or not isinstance(data.get("paths"), list):
        return None
    paths = tuple(path for path in data["paths"] if isinstance(path, str))
    return TreeRevision(data["commit"], paths)


@dataclasses.dataclass(frozen=True)
class LastSync:
    time: str
    result: str  # ok, failed, error
    status: int
    summary: str
    commit: str | None = None
    subject: str | None = None
    branch: str | None = None
    repository: str | None = None
    stacks: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=dict)
    duration: float | None = None  # seconds
    invocation: str | None = None  # systemd's INVOCATION_ID of the run (composeflux unit-failed)
    signer: str | None = None  # VERIFY_SIGNATURES: who signed the commit (signatures.py)

    @classmethod
    def from_json(cls, data: JSON) -> LastSync | None:
        if not isinstance(data, dict):
            return None
        stacks = data.get("stacks")
        status = data.get("status")
        return cls(
            time=_str(data.get("time")) or "",
            result=_str(data.get("result")) or "error",
            status=status if isinstance(status, int) else (0 if data.get("result") == "ok" else 1),
            summary=_str(data.get("summary")) or "",
            commit=_str(data.get("commit")),
            subject=_str(data.get("subject")),
            branch=_str(data.get("branch")),
            repository=_str(data.get("repository")),
            duration=_seconds(data.get("duration")),
            invocation=_str(data.get("invocation")),
            signer=_str(data.get("signer")),
            stacks={
                str(name): {key: _str(value) for key, value in entry.items()}
                for name, entry in (stacks.items() if isinstance(stacks, dict) else [])
                if isinstance(entry, dict)
            },
        )

    def history_entry(self) -> dict[str, JSON]:
        return {
            "time": self.time, "result": self.result, "status": self.status, "commit": self.commit, "summary": self.summary,
            "duration": self.duration,
        }


@dataclasses.dataclass(frozen=True)
class LastUpdate:
    """The last `composeflux update` check."""

    time: str
    result: str  # ok, error
    status: int
    summary: str
    duration: float | None = None
    invocation: str | None = None

    @classmethod
    def from_json(cls, data: JSON) -> LastUpdate | None:
        if not isinstance(data, dict) or not isinstance(data.get("time"), str):
            return None
        status = data.get("status")
        return cls(
            data["time"], _str(data.get("result")) or "error", status if isinstance(status, int) else 1,
            _str(data.get("summary")) or "", _seconds(data.get("duration")), _str(data.get("invocation")),
        )


@dataclasses.dataclass(frozen=True)
class State:
    last_sync: LastSync | None = None
    stacks: dict[str, StackRecord] = dataclasses.field(default_factory=dict)
    history: tuple[dict[str, JSON], ...] = ()
    alerts: dict[str, Alert] = dataclasses.field(default_factory=dict)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    last_update: LastUpdate | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "version": VERSION,
            "last_sync": dataclasses.asdict(self.last_sync) if self.last_sync else None,
            "last_update": dataclasses.asdict(self.last_update) if self.last_update else None,
            "stacks": {name: dataclasses.asdict(record) for name, record in sorted(self.stacks.items())},
            "alerts": {key: dataclasses.asdict(alert) for key, alert in sorted(self.alerts.items())},
            "counters": dict(sorted(self.counters.items())),
            "history": list(self.history),
        }

    def count(self, *names: str) -> State:
        """The state with these counters one higher."""
        counters = dict(self.counters)
        for name in names:
            counters[name] = counters.get(name, 0) + 1
        return dataclasses.replace(self, counters=counters)

    @classmethod
    def from_json(cls, data: JSON) -> State:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("not a composeflux state file of version 1")
        stacks = data.get("stacks")
        history = data.get("history")
        alerts = data.get("alerts")
        found = {str(k): Alert.from_json(v) for k, v in alerts.items()} if isinstance(alerts, dict) else {}
        return cls(
            last_sync=LastSync.from_json(data.get("last_sync")),
            stacks={str(k): StackRecord.from_json(v) for k, v in stacks.items()} if isinstance(stacks, dict) else {},
            history=tuple(h for h in history if isinstance(h, dict))[-HISTORY_LIMIT:] if isinstance(history, list) else (),
            alerts={key: alert for key, alert in found.items() if alert is not None},
            counters={str(k): _count(v) for k, v in data["counters"].items()} if isinstance(data.get("counters"), dict) else {},
            last_update=LastUpdate.from_json(data.get("last_update")),
        )


def _str(value: JSON) -> str | None:
    return value if isinstance(value, str) else None


def _updates(data: JSON) -> dict[str, ImageUpdate]:
    if not isinstance(data, dict):
        return {}
    found = {str(service): ImageUpdate.from_json(entry) for service, entry in data.items()}
    return {service: update for service, update in found.items() if update is not None}


def _strings(data: JSON) -> dict[str, str]:
    return {str(k): v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _seconds(value: JSON) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _entries(data: JSON, limit: int) -> tuple[dict[str, str | None], ...]:
    if not isinstance(data, list):
        return ()
    entries = [{str(k): _str(v) for k, v in entry.items()} for entry in data if isinstance(entry, dict)]
    return tuple(entries[-limit:])


def _count(value: JSON) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


# -- the pure part -------------------------------------------------------------------------------


def migrate_legacy(data: JSON) -> State:
    """State from composeflux 0.1's last-sync.json: its last sync, and per stack what it did."""
    last = LastSync.from_json(data)
    if last is None:
        raise ValueError("not a composeflux 0.1 last-sync.json")
    stacks = {}
    for name, entry in last.stacks.items():
        action = entry.get("action") or ""
        revision = Revision(last.commit, entry.get("hash"), last.time) if action in ("deploy", "unchanged") else None
        stacks[name] = StackRecord(
            last_action=action,
            last_reason=entry.get("reason") or "",
            last_error=entry.get("reason") if action == "failed" else None,
            deployed=revision,
            good=revision,
            consecutive_failures=1 if action == "failed" else 0,
            failing_since=last.time if action == "failed" else None,
        )
    return State(last_sync=last, stacks=stacks, history=(last.history_entry(),))


def backoff(failures: int, maximum: float) -> float:
    """Seconds before the same failing inputs are tried again: the timer's interval, doubling
    with every consecutive failure, at most `maximum` (0: retry on every sync)."""
    if maximum <= 0:
        return 0.0
    return float(min(RETRY_BASE * 2 ** max(failures - 1, 0), maximum))


def held_back(record: StackRecord | None, at: str) -> str | None:
    """The inputs this stack is not retried with at time `at`, or None."""
    if record is None or not record.failed_inputs or not record.retry_after:
        return None
    return record.failed_inputs if at < record.retry_after else None


def record(
    previous: State, outcome: SyncOutcome, *, branch: str, repository: str, time: str | None = None, retry_max: float = 0.0,
    duration: float | None = None, invocation: str | None = None,
) -> State:
    """The state after a (real, not dry) run with this outcome (the alerts are alerts.py's)."""
    time = time or now()
    last = LastSync(
        time=time,
        result=outcome.result,
        status=int(outcome.status),
        summary=outcome.summary(),
        commit=outcome.commit,
        subject=outcome.subject,
        branch=branch,
        repository=repository,
        stacks={
            s.name: {"action": s.action.value, "reason": s.reason, "hash": s.stack_hash, "error": s.error}
            for s in outcome.stacks
        },
        duration=round(duration, 3) if duration is not None else None,
        invocation=invocation,
        signer=outcome.signer,
    )
    stacks = dict(previous.stacks)
    if outcome.error is None:
        # A complete sync names every stack that is in Git or deployed: one it does not name is
        # neither any more (deleted from Git before it ever ran, say). Forgotten, unless suspended
        # (`composeflux suspend` may name a stack before it exists).
        named = {stack.name for stack in outcome.stacks}
        stacks = {name: record for name, record in stacks.items() if name in named or record.suspended is not None}
    for stack in outcome.stacks:
        if stack.action is Action.PRUNE:
            stacks.pop(stack.name, None)  # removed from the host: nothing left to remember
        else:
            before = stacks.get(stack.name, StackRecord())
            stacks[stack.name] = _counted(before, _next_record(before, stack, time, retry_max), stack, time, outcome.commit)
    history = (*previous.history, last.history_entry())[-HISTORY_LIMIT:]
    return dataclasses.replace(previous, last_sync=last, stacks=stacks, history=history).count(f"syncs_{outcome.result}")


def _counted(before: StackRecord, after: StackRecord, stack: StackOutcome, time: str, wanted: str | None) -> StackRecord:
    """The record with this run's counters and, when something changed for the stack, a history entry.
    `wanted`: the commit the sync was for (a rolled-back stack runs another)."""
    deploys, rollbacks, failures = after.deploys, after.rollbacks, after.failures
    detail: str | None = None
    if stack.action is Action.DEPLOY:
        deploys += 1
        detail = stack.reason
    elif stack.action is Action.ROLLED_BACK:
        rollbacks += 1
        detail = stack.error or stack.reason
    elif stack.action is Action.FAILED and not stack.held:
        failures += 1
        detail = stack.error or stack.reason
    last = before.history[-1] if before.history else None
    if detail is None and (last is None or last.get("action") != stack.action.value):
        # An unchanged, kept or suspended stack: said once, when it becomes so (a recovery, a suspend).
        detail = None if stack.action is Action.SKIPPED else (stack.reason or stack.action.value)
    if stack.action is Action.FAILED and last and last.get("action") == Action.FAILED.value and last.get("detail") == detail:
        detail = None  # failing again the same way: counted, not repeated
    history = before.history
    if detail is not None:
        commit = stack.commit if stack.action is not Action.FAILED else wanted
        entry: dict[str, str | None] = {"time": time, "action": stack.action.value, "commit": commit, "detail": detail}
        history = (*history, entry)[-STACK_HISTORY_LIMIT:]
    return dataclasses.replace(after, deploys=deploys, rollbacks=rollbacks, failures=failures, history=history)


def _next_record(record: StackRecord, stack: StackOutcome, time: str, retry_max: float) -> StackRecord:
    record = dataclasses.replace(record, pending=None)  # this run's end is recorded now
    if stack.bad_images:
        record = dataclasses.replace(
            record, bad_images={**record.bad_images, **stack.bad_images},
            updates={s: u for s, u in record.updates.items() if s not in stack.bad_images},
        )
    elif stack.action is Action.DEPLOY and stack.reason.startswith(IMAGE_UPDATE):
        record = dataclasses.replace(record, updates={})  # applied
    if stack.tree is not None:
        record = dataclasses.replace(record, tree=stack.tree)
    if stack.rejected is not None:
        commit, digest, why = stack.rejected
        record = dataclasses.replace(record, rejected=Revision(commit, digest, time), rejected_reason=why)
    if stack.action is Action.FAILED and stack.held:
        return dataclasses.replace(record, last_action=stack.action.value)  # not tried: nothing new
    if stack.action in (Action.FAILED, Action.ROLLED_BACK):
        failures = record.consecutive_failures + 1
        wait = backoff(failures, retry_max) if stack.inputs else 0.0
        record = dataclasses.replace(
            record,
            last_action=stack.action.value,
            last_reason=stack.reason,
            last_error=stack.error or stack.reason,
            consecutive_failures=failures,
            failing_since=record.failing_since or time,
            failed_inputs=stack.inputs if wait else None,
            retry_after=_later(time, wait) if wait else None,
        )
        if stack.action is Action.ROLLED_BACK:  # it runs its last good revision again
            images = stack.images or (record.good.images if record.good else {})
            record = dataclasses.replace(record, deployed=Revision(stack.commit, stack.stack_hash, time, images))
        if stack.healed:  # a heal of the rolled-back revision: counted against HEAL_MAX_ATTEMPTS
            healed = record.good.hash if record.good else None
            attempts = record.heal_attempts + 1 if record.heal_hash == healed else 1
            record = dataclasses.replace(record, heal_hash=healed, heal_attempts=attempts)
        return record
    if stack.action in (Action.DEPLOY, Action.UNCHANGED):
        deployed = record.deployed
        if stack.action is Action.DEPLOY or deployed is None or deployed.hash != stack.stack_hash:
            images = stack.images or (deployed.images if deployed and deployed.hash == stack.stack_hash else {})
            deployed = Revision(stack.commit, stack.stack_hash, time, images)
        heal_hash, attempts = record.heal_hash, record.heal_attempts
        if stack.healed:
            attempts = attempts + 1 if heal_hash == stack.stack_hash else 1
            heal_hash = stack.stack_hash
        elif heal_hash != stack.stack_hash:
            heal_hash, attempts = None, 0
        return dataclasses.replace(
            record,
            last_action=stack.action.value,
            last_reason=stack.reason,
            last_error=None,
            deployed=deployed,
            good=deployed,
            consecutive_failures=0,
            failing_since=None,
            failed_inputs=None,
            retry_after=None,
            rejected=None if stack.action is Action.DEPLOY else record.rejected,
            rejected_reason=None if stack.action is Action.DEPLOY else record.rejected_reason,
            heal_hash=heal_hash,
            heal_attempts=attempts,
        )
    # KEEP, SUSPENDED, SKIPPED: nothing happened to the stack; only say so.
    return dataclasses.replace(record, last_action=stack.action.value, last_reason=stack.reason)


def mark_pending(state_dir: Path, name: str, commit: str | None, digest: str | None) -> None:
    """Write down, before `up`, that this stack is being deployed at this revision: a sync killed
    between `up` and recording its end leaves containers of a revision no gate has passed, and
    the next sync must gate them (not take them for good because their hash is what Git wants)."""
    mark_pending_many(state_dir, {name: (commit, digest)})


def mark_pending_many(state_dir: Path, marks: Mapping[str, tuple[str | None, str | None]]) -> None:
    """mark_pending for several stacks (name -> (commit, stack hash)) in one write of the file:
    stacks deployed side by side ask at about the same time."""
    current = _load(state_dir, set_aside=False)
    stacks = dict(current.stacks)
    for name, (commit, digest) in marks.items():
        stacks[name] = dataclasses.replace(stacks.get(name, StackRecord()), pending=Revision(commit, digest, now()))
    save(state_dir, dataclasses.replace(current, stacks=stacks))


def record_update_check(
    previous: State, updates: dict[str, dict[str, ImageUpdate]], *, result: str, status: int, summary: str,
    duration: float | None = None, invocation: str | None = None,
) -> State:
    """The state after `composeflux update`: each listed stack's available image updates replaced,
    and the check itself recorded (pure; the caller saves it under the sync lock)."""
    stacks = dict(previous.stacks)
    for name, found in updates.items():
        stacks[name] = dataclasses.replace(stacks.get(name, StackRecord()), updates=found)
    last = LastUpdate(now(), result, status, summary, round(duration, 3) if duration is not None else None, invocation)
    return dataclasses.replace(previous, stacks=stacks, last_update=last).count(f"update_checks_{result}")


def set_suspended(state_dir: Path, name: str, reason: str | None) -> State:
    """`composeflux suspend NAME` (reason: text, "" for none) and `resume NAME` (reason None),
    under the sync lock; returns the new state."""
    current = load(state_dir)
    record = current.stacks.get(name, StackRecord())
    if reason is None:
        record = dataclasses.replace(record, suspended=None, suspended_since=None)
    else:
        record = dataclasses.replace(record, suspended=reason, suspended_since=record.suspended_since or now())
    updated = dataclasses.replace(current, stacks={**current.stacks, name: record})
    save(state_dir, updated)
    return updated


def _later(time: str, seconds: float) -> str:
    try:
        moment = datetime.datetime.fromisoformat(time)
    except ValueError:
        moment = datetime.datetime.now(datetime.UTC)
    return (moment + datetime.timedelta(seconds=seconds)).isoformat(timespec="seconds")


# -- the file ------------------------------------------------------------------------------------


def load(state_dir: Path) -> State:
    """The saved state, for a sync that will save the next one; an empty one on the first run.
    A file that cannot be used is moved aside (state.json.damaged-<time>) with a warning: no
    later run may crash on it."""
    return _load(state_dir, set_aside=True)


def read(state_dir: Path) -> State:
    """The saved state, for showing it: changes nothing on disk."""
    return _load(state_dir, set_aside=False)


def _load(state_dir: Path, set_aside: bool) -> State:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(_read_no_follow(path))
        return State.from_json(data)
    except FileNotFoundError:
        return _load_legacy(state_dir)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        if set_aside:
            moved = _set_aside(path)
            log.warning("The state file %s cannot be used (%s); moved to %s, starting afresh", path, why, moved)
        else:
            log.warning("The state file %s cannot be used (%s)", path, why)
        return State()


def _load_legacy(state_dir: Path) -> State:
    path = state_dir / LEGACY_STATE_FILE
    try:
        data = json.loads(_read_no_follow(path))
        state = migrate_legacy(data)
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as exc:
        log.warning("Cannot migrate %s (%s); starting with an empty state", path, exc)
        return State()
    log.info("Migrated %s to %s", LEGACY_STATE_FILE, STATE_FILE)
    return state


def _read_no_follow(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode("utf-8")


def _set_aside(path: Path) -> Path | None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.rename(path, target)
    except OSError:
        return None
    return target


def save(state_dir: Path, state: State) -> None:
    """Atomically replace the state file (readers never see half a file), fsync'd, never through
    a symlink; then the migrated 0.1 file is removed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    temporary = path.with_name(f".{STATE_FILE}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, MODE)
    try:
        owner = os.stat(state_dir)
        if os.geteuid() == 0 and owner.st_uid != 0:
            # root running `composeflux suspend`: the file stays the service user's to read.
            os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    (state_dir / LEGACY_STATE_FILE).unlink(missing_ok=True)
