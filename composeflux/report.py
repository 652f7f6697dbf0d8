"""Reporting: logs (stderr or journald), sd_notify status, and the last sync's state file.

Every log record passes through a Masker before any handler sees it, so secret values cannot
reach stderr, the journal, or a structured field, whatever code logged them.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

# Structured journal fields (journald keeps upper-case names only).
STACK = "COMPOSEFLUX_STACK"
COMMIT = "COMPOSEFLUX_COMMIT"
ACTION = "COMPOSEFLUX_ACTION"
FIELDS = (STACK, COMMIT, ACTION)

STATE_FILE = "last-sync.json"
MASK = "***"
# Shorter values would mask ordinary words all over the log; documented in composeflux.conf(5).
MIN_MASKED_LENGTH = 4


class Masker(logging.Filter):
    """Replaces known secret values with *** in log records and any text it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []

    def add(self, values: Iterable[str]) -> None:
        extra = {v for v in values if isinstance(v, str) and len(v) >= MIN_MASKED_LENGTH}
        # Longest first, so a secret that contains another one is masked whole.
        self.values = sorted(set(self.values) | extra, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        record.msg, record.args, record.exc_text = self(message), (), None
        return True


class CommitField(logging.Filter):
    """Adds COMPOSEFLUX_COMMIT to every record once the commit is known."""

    commit = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if self.commit and not getattr(record, COMMIT, None):
            setattr(record, COMMIT, self.commit)
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stack = getattr(record, STACK, None)
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{prefix}{stack}: {record.getMessage()}" if stack else f"{prefix}{record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if getattr(record, field, None):
                entry[field.removeprefix("COMPOSEFLUX_").lower()] = getattr(record, field)
        return json.dumps(entry, ensure_ascii=False)


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to journald (JOURNAL_STREAM names its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup_logging(level: str, log_format: str, masker: Masker, commit_field: CommitField) -> None:
    handler: logging.Handler | None = None
    if stderr_is_journal():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="composeflux")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(masker)
    handler.addFilter(commit_field)
    handler.set_name("composeflux")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "composeflux":  # ours from an earlier call; leave any others alone
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # GitPython and urllib3 are chatty at DEBUG and may echo URLs; keep them at WARNING.
    for noisy in ("git", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def notify(status: str) -> None:
    """Tell systemd what we are doing (shown by `systemctl status`); a no-op outside systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        from systemd import daemon
    except ImportError:
        return
    daemon.notify(f"STATUS={status}")


def write_state(state_dir: Path, state: dict) -> None:
    """Atomically replace the last sync's result (readers never see half a file)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_state(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
