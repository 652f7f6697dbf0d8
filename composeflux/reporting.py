"""The end of every real run (sync, update check, a unit's death): one place, one order.

    decide what to tell (alerts.py) → save the state → the events in the journal (events.py)
    → one notification (notifications.py) → what was delivered, saved → the metrics (metrics.py)

The state is saved before anything is sent, so a run killed while a notification hangs has
still recorded what it did; a delivery is recorded after it, so a notice that did not get
through is tried again by the next run. Nothing after the first save changes a run's result.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
from collections.abc import Callable, Collection, Mapping, Sequence

from composeflux import alerts, events, metrics, notifications, state
from composeflux.config import Reporting
from composeflux.errors import state_error
from composeflux.events import Event, Kind

log = logging.getLogger(__name__)


def finish(
    reporting: Reporting,
    next_state: state.State,
    found: Sequence[Event],
    known: Mapping[str, tuple[Kind, str] | None],
    *,
    gone: Collection[str] = (),
    commit: str | None = None,
    subject: str | None = None,
) -> state.State:
    """Save `next_state` (its alerts as `alerts.decide` makes them from its own, the previous
    ones), log the events, notify, and write the metrics. OSError if the state cannot be saved."""
    time = state.now()
    decision = alerts.decide(
        next_state.alerts, found, known, time=time, remind=reporting.notify_remind, enabled=reporting.notify_events, gone=gone
    )
    next_state = dataclasses.replace(next_state, alerts=decision.alerts)
    state.save(reporting.state_dir, next_state)
    events.log_events(found)
    if decision.notices and reporting.notify_urls:
        title, body = alerts.message(decision.notices, socket.gethostname(), commit, subject)
        sent, failed = notifications.deliver(
            reporting.notify_urls, title, body, reporting.masker, notifications.notify_type(decision.notices)
        )
        next_state = next_state.count(*["notifications_sent"] * sent, *["notifications_failed"] * failed)
        if sent:
            next_state = dataclasses.replace(next_state, alerts=decision.delivered(time))
        try:
            state.save(reporting.state_dir, next_state)
        except OSError as exc:
            log.warning("Cannot record the notification: %s", state_error(reporting.state_dir / state.STATE_FILE, exc))
    write_metrics(reporting, next_state)
    return next_state


def write_metrics(reporting: Reporting, saved: state.State) -> bool:
    """METRICS_TEXTFILE from this state; a failure is logged, never raised."""
    path = reporting.metrics_textfile
    if path is None:
        return False
    try:
        metrics.publish(path, saved)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and os.environ.get("INVOCATION_ID"):
            # The packaged units: the service user cannot write there; ExecStopPost=+ does it.
            log.debug("%s is written by the unit's ExecStopPost (%s)", path, exc.strerror)
        else:
            log.warning("Cannot write the metrics to %s: %s", path, exc.strerror or exc)
        return False
    return True


UNIT_LINES = 10  # of the dead unit's own log, in the notice
UNIT_LOCK_TIMEOUT = 120.0  # seconds: a sync started right after the death holds the lock that long at most, mostly


def _how(environ: Mapping[str, str]) -> str:
    """What systemd says of the death: "timeout (killed by signal TERM)", "exit-code (status 3)"."""
    result = environ.get("MONITOR_SERVICE_RESULT") or "failed"
    code, status = environ.get("MONITOR_EXIT_CODE", ""), environ.get("MONITOR_EXIT_STATUS", "")
    if code == "exited" and status:
        return f"{result} (exit status {status})"
    if code in ("killed", "dumped") and status:
        return f"{result} ({code} by signal {status})"
    return result


def journal_lines(unit: str, invocation: str | None, count: int = UNIT_LINES) -> list[str]:
    """The last lines the unit logged in that run (journalctl; the unit may read the journal)."""
    import subprocess

    match = [f"_SYSTEMD_INVOCATION_ID={invocation}"] if invocation else ["--unit", unit]
    try:
        result = subprocess.run(
            ["journalctl", "--no-pager", "--quiet", "--output=cat", "--lines", str(count), *match],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("Cannot read the journal of %s: %s", unit, exc)
        return []
    return result.stdout.splitlines()[-count:]


def unit_failed(
    reporting: Reporting, unit: str, environ: Mapping[str, str], read_lines: Callable[[str, str | None], list[str]] = journal_lines,
) -> bool:
    """`composeflux unit-failed UNIT`, from OnFailure= (composeflux-notify@.service): tell the
    operator that UNIT died without reporting its run (killed by TimeoutStartSec=, the OOM killer,
    a crash before it could log), with the same suppression as every notice. A run that ended
    with a failure it reported itself (the state has its INVOCATION_ID) adds nothing. Returns
    whether a death was recorded."""
    from composeflux.lock import sync_lock

    kind = "update" if unit.startswith("composeflux-update") else "sync"
    invocation = environ.get("MONITOR_INVOCATION_ID") or None
    how = _how(environ)
    with sync_lock(reporting.state_dir, UNIT_LOCK_TIMEOUT, record_pid=False):
        saved = state.load(reporting.state_dir)
        own = saved.last_update if kind == "update" else saved.last_sync
        if invocation and own is not None and own.invocation == invocation:
            log.info("%s failed (%s) after reporting its run itself; nothing to add", unit, how)
            return False
        lines = [reporting.masker(line) for line in read_lines(unit, invocation)]
        event = events.unit_failed(unit, how, lines, alerts.DIED[kind])
        finish(reporting, saved.count("unit_failures"), [event], {alerts.DIED[kind]: (Kind.UNIT_FAILED, f"{unit} failed: {how}")})
    return True


def test_notification(reporting: Reporting) -> tuple[int, int]:
    """`composeflux notify-test`: one message to every NOTIFY_URLS entry; (delivered, failed)."""
    title = f"composeflux on {socket.gethostname()}: test"
    body = "A test notification from `composeflux notify-test`: NOTIFY_URLS works."
    return notifications.deliver(reporting.notify_urls, title, body, reporting.masker, "info")
