"""`composeflux trigger`: ask for a sync now, through a spool directory.

A request is an empty file with a unique name in the trigger directory (TRIGGER_DIR, default
/var/spool/composeflux). composeflux.path starts composeflux.service while that directory is not
empty (DirectoryNotEmpty=, which systemd checks again whenever the sync ends), and the sync empties
the directory first, before it fetches. So:

- a request made while a sync runs is not lost: it stays in the directory and starts one more run
  as soon as the running one is over;
- a burst of requests yields one more sync, not one per request.

Who may trigger: root and the members of the ``composeflux-trigger`` group. The package creates
the directory (tmpfiles.d) as ``composeflux:composeflux-trigger`` mode 2770: the service user
empties it, the group adds to it, the setgid bit keeps every request in that group. Membership of
``composeflux-trigger`` grants nothing else (not the configuration, not the Docker socket).

The result of the last sync is published next to it, for whoever asked for one and wants to wait
for it (`composeflux webhook`, ``?wait=1``): ``last-sync.json`` in the result directory
(/run/composeflux-results, ``composeflux:composeflux-trigger`` mode 0750, tmpfiles.d), replaced
atomically at the end of every sync. A sync that started after a request was made has drained it
(the sync empties the spool first), so the first result whose ``started`` is not before the
request is the answer to it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from composeflux.atomic import replace_file

DEFAULT_TRIGGER_DIR = Path("/var/spool/composeflux")
DEFAULT_RESULT_DIR = Path("/run/composeflux-results")

REQUEST_PREFIX = "request-"
RESULT_FILE = "last-sync.json"
RESULTS = ("ok", "failed", "error")
RESULT_POLL = 0.25  # seconds between two looks at the result file while waiting for one


class TriggerError(Exception):
    """The request could not be made; the message says why and what to do."""


def request_sync(trigger_dir: Path | str = DEFAULT_TRIGGER_DIR) -> Path:
    """Drop one request into ``trigger_dir`` and return its path.

    The request is created in one step (O_CREAT|O_EXCL of an empty file), so the path unit never
    sees a half-made request and two requests never collide.
    """
    trigger_dir = Path(trigger_dir)
    name = f"{REQUEST_PREFIX}{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}"
    path = trigger_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except FileNotFoundError:
        raise TriggerError(
            f"trigger directory {trigger_dir} does not exist (is the composeflux package installed? "
            "`systemd-tmpfiles --create composeflux.conf` recreates it)"
        ) from None
    except PermissionError:
        raise TriggerError(
            f"not allowed to write to {trigger_dir}: run as root or as a member of the "
            "composeflux-trigger group (`adduser USER composeflux-trigger`, then log in again)"
        ) from None
    os.close(fd)
    return path


def drain_requests(trigger_dir: Path | str = DEFAULT_TRIGGER_DIR) -> int:
    """Remove every entry of ``trigger_dir``; return how many requests were removed.

    Called first by the sync, before it fetches: anything arriving afterwards starts another run.
    Every entry is removed, not only well-formed requests, since anything left behind would keep
    the directory non-empty and restart the sync over and over. A missing directory is no error
    (no requests; `composeflux sync` run by hand on a host without the package's tmpfiles).
    """
    trigger_dir = Path(trigger_dir)
    try:
        entries = list(os.scandir(trigger_dir))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except PermissionError:
        raise TriggerError(f"not allowed to read {trigger_dir}; requests stay queued") from None
    removed = 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another sync (or a person) removed it first
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise TriggerError(f"{entry.path} is a non-empty directory; remove it by hand") from None
            raise TriggerError(f"cannot remove trigger request {entry.path}: {exc.strerror}") from None
        if entry.name.startswith(REQUEST_PREFIX):
            removed += 1
    return removed


def has_pending_request(trigger_dir: Path | str = DEFAULT_TRIGGER_DIR) -> bool:
    """True when the spool holds anything, so a sync that has not drained it yet will start (the
    path unit starts one while the directory is not empty): a request made now would add nothing.
    A missing or unreadable directory holds nothing we know of."""
    try:
        with os.scandir(trigger_dir) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def publish_result(directory: Path | str, result: Mapping[str, Any]) -> Path | None:
    """Replace ``last-sync.json`` in ``directory`` with ``result``, atomically (a reader sees the
    old result or the new one, never half of one); return its path.

    ``result`` holds ``started`` and ``finished`` (Unix times, float), ``status`` (the exit
    status), ``result`` ("ok", "failed" or "error"), ``summary`` (the summary line) and ``failed``
    ({stack: reason}). The file is mode 0644: the directory (0750, group composeflux-trigger)
    decides who may read it. None when the directory does not exist (no one can wait for a result
    here: a sync run by hand without the package's tmpfiles); TriggerError when it cannot be written.
    """
    started = result.get("started")
    if isinstance(started, bool) or not isinstance(started, int | float) or not math.isfinite(started):
        raise ValueError("a sync result needs its start time (started: a Unix time)")
    if result.get("result") not in RESULTS:
        raise ValueError(f"a sync result's result is one of {', '.join(RESULTS)}")
    directory = Path(directory)
    data = json.dumps(dict(result), sort_keys=True, ensure_ascii=False).encode("utf-8")
    try:
        replace_file(directory / RESULT_FILE, data, 0o644)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TriggerError(f"cannot publish the sync's result in {directory}: {exc.strerror}") from None
    return directory / RESULT_FILE


def read_result(directory: Path | str = DEFAULT_RESULT_DIR) -> dict[str, Any] | None:
    """The last published result, or None (none yet, unreadable, or not a result)."""
    try:
        with open(Path(directory) / RESULT_FILE, "rb") as source:
            loaded: object = json.loads(source.read(1 << 20))
    except (OSError, ValueError):
        return None
    if not isinstance(loaded, dict):
        return None
    result: dict[str, Any] = loaded
    started = result.get("started")
    if isinstance(started, bool) or not isinstance(started, int | float):
        return None
    return result


def wait_for_result(
    directory: Path | str,
    requested_at: float,
    timeout: float,
    *,
    poll: float = RESULT_POLL,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Wait until a sync that started at ``requested_at`` (a Unix time, taken before the request
    was made) or later has published its result, and return that result; None after ``timeout``
    seconds, or as soon as ``cancelled()`` says nobody waits any more."""
    deadline = time.monotonic() + timeout
    while True:
        result = read_result(directory)
        if result is not None and result["started"] >= requested_at:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (cancelled is not None and cancelled()):
            return None
        time.sleep(min(poll, remaining))
