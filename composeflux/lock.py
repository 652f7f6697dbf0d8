"""One sync at a time per state directory: an flock that the kernel releases if we die."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from composeflux.errors import LockTimeoutError, state_error

log = logging.getLogger(__name__)

LOCK_FILE = "sync.lock"
POLL_SECONDS = 0.2


@contextlib.contextmanager
def sync_lock(state_dir: Path, timeout: float, record_pid: bool = True) -> Iterator[None]:
    """Hold the state directory's lock. `record_pid`: write our pid into the lock file for
    those who wait (a dry run does not: it changes nothing in the state directory)."""
    path = state_dir / LOCK_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        owner = os.stat(state_dir)
        if os.geteuid() == 0 and owner.st_uid != 0:  # root (`composeflux suspend`): the service must still open it
            os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError as exc:
        raise state_error(path, exc) from None
    try:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"another sync (pid {holder}) has held {state_dir / LOCK_FILE} for more than "
                        f"{timeout:.0f} s (LOCK_TIMEOUT); giving up"
                    ) from None
                if not waiting:
                    log.info("Another sync (pid %s) is running; waiting for it to finish", holder)
                    waiting = True
                time.sleep(POLL_SECONDS)
        if record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
