"""PGP-wrapped data keys, through the `gpg` command (GnuPG's keyring and agent do the work).

Each PGP master key of a SOPS file is an ASCII-armored OpenPGP message whose literal data is
the 32-byte data key. It goes to `gpg --batch --quiet --decrypt` on standard input (never as an
argument, which any local user can read in /proc, nor as a file); the key comes back on standard
output. gpg runs with `--pinentry-mode error`, so a passphrase-protected key fails at once
instead of waiting for a pinentry nobody answers (a passphrase the agent has cached still works),
in a process group of its own that is killed as a whole when the deadline passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

from composeflux.processes import run_bounded
from composeflux.sops._errors import SopsError

if TYPE_CHECKING:
    from collections.abc import Sequence

DATA_KEY_SIZE = 32


def gpg_path() -> str | None:
    """The gpg executable on PATH, or None."""
    return shutil.which("gpg")


def _reason(stderr: bytes) -> str:
    """gpg's last diagnostic line, shortened (it names key ids and problems, never key material)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return "gpg failed without a message"
    last = lines[-1].removeprefix("gpg: ")
    return last if len(last) <= 200 else last[:197] + "..."


def _run(gpg: str, message: bytes, environment: dict[str, str], timeout: float) -> tuple[bytes | None, str]:
    """One `gpg --decrypt` of one message: (data key, "") or (None, why not)."""
    command = [gpg, "--batch", "--quiet", "--no-tty", "--pinentry-mode", "error", "--decrypt"]
    try:
        # The whole group at the deadline: gpg and whatever it started in it (processes.py).
        result = run_bounded(command, env=environment, timeout=timeout, stdin=message)
    except OSError as error:
        return None, f"gpg could not be started ({error.strerror})"
    except subprocess.TimeoutExpired:
        return None, f"gpg did not finish within {timeout:.0f} s"
    stdout, stderr = result.stdout, result.stderr
    if result.returncode != 0:
        return None, _reason(stderr)
    if len(stdout) != DATA_KEY_SIZE:
        return None, f"gpg returned {len(stdout)} bytes instead of a {DATA_KEY_SIZE}-byte data key"
    return stdout, ""


def decrypt_data_key(messages: Sequence[str], gnupg_home: str | None, timeout: float) -> bytes:
    """The data key from the first of the armored messages that gpg can decrypt. `timeout` is
    the deadline for all of them together. SopsError with gpg's reason when none works."""
    gpg = gpg_path()
    if gpg is None:
        raise SopsError("gpg is not installed")
    environment = dict(os.environ)
    if gnupg_home is not None:
        environment["GNUPGHOME"] = gnupg_home
    environment["LC_ALL"] = "C"  # gpg's diagnostics in English, as they end up in our message
    deadline = time.monotonic() + timeout
    reasons: list[str] = []
    for message in messages:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reasons.append(f"gpg did not finish within {timeout:.0f} s")
            break
        key, reason = _run(gpg, message.encode("utf-8"), environment, remaining)
        if key is not None:
            return key
        if reason not in reasons:
            reasons.append(reason)
    raise SopsError("; ".join(reasons) or "there is no PGP key to try")
