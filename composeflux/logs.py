"""Logging: to stderr as text or JSON, or natively to journald with structured fields.

Every record passes through the run's Masker before any handler sees it, so secret values
cannot reach stderr, the journal or a structured field, whatever code logged them.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys

from composeflux.masking import Masker

# Structured journal fields (journald keeps upper-case names only).
STACK = "COMPOSEFLUX_STACK"
COMMIT = "COMPOSEFLUX_COMMIT"
ACTION = "COMPOSEFLUX_ACTION"
EVENT = "COMPOSEFLUX_EVENT"  # events.py: the kind of event (stack-failed, recovered, ...)
REASON = "COMPOSEFLUX_REASON"  # events.py: why, in a few words (masked)
MESSAGE_ID = "MESSAGE_ID"  # journald's: one per kind of event, explained by the catalog
FIELDS = (STACK, COMMIT, ACTION, EVENT, REASON, MESSAGE_ID)

HANDLER_NAME = "composeflux"


class CommitField(logging.Filter):
    """Adds COMPOSEFLUX_COMMIT to every record once the commit is known."""

    def __init__(self) -> None:
        super().__init__()
        self.commit = ""

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
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if getattr(record, field, None):
                entry[field.removeprefix("COMPOSEFLUX_").lower()] = str(getattr(record, field))
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


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="composeflux")
    return handler


def setup_logging(level: str, log_format: str, masker: Masker, commit_field: CommitField | None = None) -> CommitField:
    """Install composeflux's one handler on the root logger (again: replaces the earlier one).

    Returns the CommitField filter, whose `commit` the sync sets once the checkout is known."""
    commit_field = commit_field or CommitField()
    handler = _journal_handler() if stderr_is_journal() else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(masker)
    handler.addFilter(commit_field)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:  # ours from an earlier call; leave any others alone
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 (under requests) and apprise are chatty below WARNING and may echo URLs; keep them at WARNING.
    for noisy in ("urllib3", "apprise"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return commit_field
