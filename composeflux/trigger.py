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
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from pathlib import Path

DEFAULT_TRIGGER_DIR = Path("/var/spool/composeflux")

REQUEST_PREFIX = "request-"


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
