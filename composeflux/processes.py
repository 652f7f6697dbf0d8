"""A bounded child process: its own session, killed as a group at its deadline.

Used where composeflux runs a program it does not control the children of (gpg, which may start
an agent; git, which runs gpg or ssh-keygen; the docker CLI, which runs its plugins): at the deadline the whole process group is killed,
and the pipes are closed rather than drained, in case something that left the group (a
daemonised agent) still holds them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def run_bounded(
    command: Sequence[str], *, env: Mapping[str, str], timeout: float, stdin: bytes | None = None, cwd: Path | str | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `command` to its end, within `timeout` seconds, without a terminal. OSError when it
    cannot be started; subprocess.TimeoutExpired when its group had to be killed. `preexec_fn`:
    run in the child before exec (a resource limit)."""
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        process.wait()
        raise
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)
