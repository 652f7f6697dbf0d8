"""Files that hold secrets on the host (an age identity, a host-local env file): read only while
nobody but their owner may read them, and only as regular files (no FIFO to hang on, no device)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

LIMIT = 1 << 20  # bytes: more is not a key or an env file


class PrivateFileError(Exception):
    """The file must not be used; the message names it and what to do, never its content."""


def read_private(path: Path, *, follow_symlinks: bool = True) -> bytes:
    """The content of `path` (at most LIMIT bytes). FileNotFoundError or NotADirectoryError when
    it is not there, another OSError when it cannot be opened (ELOOP for a symlink when
    `follow_symlinks` is false), PrivateFileError when it is not a regular file or its group or
    others may read it."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PrivateFileError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise PrivateFileError(
                f"{path} may be read by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                "chmod 600 it, owned by the user composeflux runs as"
            )
        return handle.read(LIMIT)
