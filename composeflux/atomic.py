"""A small file replaced atomically: readers see the old file or the new one, never half of one.

The new content goes to a temporary file of a name no one can predict (mkstemp: O_EXCL, so a
link planted in the directory is never followed), in the same directory, and is renamed over
the old name. For files others poll (the webhook's prepared settings, each sync's published
result, both on tmpfs). The state file (state.py: an owner, fsyncs of the file and directory)
and the metrics (metrics.py: fsync'd, a temporary name of its own opened O_NOFOLLOW) are
replaced the same way with what they need besides.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`, mode `mode` whatever the umask. OSError (FileNotFoundError
    when its directory does not exist); no temporary file is left behind either way."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
