"""Prometheus metrics in node_exporter's textfile format, rendered from the state alone.

    render(state) -> text            pure: everything is in the state, counters included
    publish(path, state)             atomic: a temporary file in the same directory, renamed

METRICS_TEXTFILE defaults to /var/lib/prometheus/node-exporter/composeflux.prom when that
directory exists (Debian's prometheus-node-exporter reads *.prom there with its textfile
collector); `off` disables it. node_exporter reads the file whenever it is scraped, so it is
never written in place: a scrape sees the old file or the new one, never half of one. The
temporary file's name does not end in .prom, so the collector never reads it.

That directory belongs to root. The packaged units write the file from `ExecStopPost=+composeflux
metrics` (see composeflux.service); a sync that can write it itself (run by root) does so too.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from composeflux import __version__, state
from composeflux.plan import Action

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path("/var/lib/prometheus/node-exporter")
FILE_NAME = "composeflux.prom"
MODE = 0o644  # node_exporter runs as its own user
# The per-stack states (a "state set": one series per state, 1 for the current one).
STATES = ("deployed", "unchanged", "failed", "rolled_back", "suspended")
STATE_OF = {
    Action.DEPLOY.value: "deployed",
    Action.UNCHANGED.value: "unchanged",
    Action.KEEP.value: "unchanged",  # deleted from Git, left running as it is (REMOVE_ORPHANS=false)
    Action.FAILED.value: "failed",
    Action.SKIPPED.value: "failed",  # the sync stopped before it: it does not run what Git says
    Action.ROLLED_BACK.value: "rolled_back",
    Action.SUSPENDED.value: "suspended",
}
RESULTS = ("ok", "failed", "error")
ALERT_KINDS = ("sync-failed", "prune-refused", "unverified", "stack-failed", "rolled-back", "unit-failed")  # alerts.CONDITIONS


def default_path() -> Path | None:
    return DEFAULT_DIRECTORY / FILE_NAME if DEFAULT_DIRECTORY.is_dir() else None


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in labels.items()) + "}" if labels else ""


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        samples = list(samples)
        if not samples:
            return
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(**labels)} {_number(value)}" for labels, value in samples]


def render(saved: state.State) -> str:
    """The metrics for this state (sorted, stable: the same state gives the same text)."""
    out = _Text()
    out.metric("composeflux_build_info", "gauge", "The composeflux version that wrote this file.", [({"version": __version__}, 1)])
    last = saved.last_sync
    if last is not None:
        out.metric("composeflux_last_sync_timestamp_seconds", "gauge", "When the last sync ended (Unix time).",
                   [({}, _timestamp(last.time) or 0)])
        out.metric("composeflux_last_sync_success", "gauge", "1 if the last sync converged (every stack runs what Git says).",
                   [({}, 1 if last.result == "ok" else 0)])
        out.metric("composeflux_last_sync_exit_status", "gauge", "The exit status of the last sync (composeflux(8)).",
                   [({}, last.status)])
        if last.duration is not None:
            out.metric("composeflux_last_sync_duration_seconds", "gauge", "How long the last sync took.", [({}, last.duration)])
        if last.commit:
            out.metric("composeflux_last_sync_commit_info", "gauge", "The commit the last sync deployed, as labels.",
                       [({"commit": last.commit, "branch": last.branch or ""}, 1)])
    out.metric("composeflux_syncs_total", "counter", "Syncs run, by result (ok, failed: some stacks failed, error: the sync failed).",
               [({"result": result}, saved.counters.get(f"syncs_{result}", 0)) for result in RESULTS])
    update = saved.last_update
    if update is not None:
        out.metric("composeflux_last_update_check_timestamp_seconds", "gauge", "When the last `composeflux update` ended (Unix time).",
                   [({}, _timestamp(update.time) or 0)])
        out.metric("composeflux_last_update_check_success", "gauge", "1 if the last update check could be made.",
                   [({}, 1 if update.result == "ok" else 0)])
    kinds = [alert.kind for alert in saved.alerts.values()]
    out.metric("composeflux_alerts", "gauge", "Conditions the operator is told about and that last, by kind (0 when none).",
               [({"kind": kind}, kinds.count(kind)) for kind in ALERT_KINDS])
    out.metric("composeflux_unit_failures_total", "counter", "Runs of the sync or update unit that failed without reporting.",
               [({}, saved.counters.get("unit_failures", 0))])
    out.metric("composeflux_notifications_total", "counter", "Notifications handed to apprise, by result (per URL).",
               [({"result": r}, saved.counters.get(f"notifications_{r}", 0)) for r in ("sent", "failed")])
    stacks = sorted(saved.stacks.items())
    out.metric("composeflux_stack_state", "gauge", "The state of each stack after the last sync it was part of (1 for the current one).",
               [({"stack": name, "state": s}, int(STATE_OF.get(record.last_action) == s)) for name, record in stacks for s in STATES])
    out.metric("composeflux_stack_last_deploy_timestamp_seconds", "gauge", "When the revision each stack runs was deployed (Unix time).",
               [({"stack": name}, t) for name, record in stacks if record.deployed and (t := _timestamp(record.deployed.time)) is not None])
    out.metric("composeflux_stack_consecutive_failures", "gauge", "Syncs in a row in which each stack failed.",
               [({"stack": name}, record.consecutive_failures) for name, record in stacks])
    out.metric("composeflux_stack_pending_image_updates", "gauge", "Services of each stack with a newer image found and not applied.",
               [({"stack": name}, len(record.updates)) for name, record in stacks])
    out.metric("composeflux_stack_deploys_total", "counter", "Deploys of each stack that passed their health gate.",
               [({"stack": name}, record.deploys) for name, record in stacks])
    out.metric("composeflux_stack_rollbacks_total", "counter", "Rollbacks of each stack.",
               [({"stack": name}, record.rollbacks) for name, record in stacks])
    out.metric("composeflux_stack_failures_total", "counter", "Syncs in which each stack failed (not counting those that held it back).",
               [({"stack": name}, record.failures) for name, record in stacks])
    return "\n".join(out.lines) + "\n"


def publish(path: Path, saved: state.State) -> None:
    """Replace the file atomically (fsync'd, mode 0644, never through a symlink). OSError."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), MODE)  # whatever the umask
            handle.write(render(saved))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
