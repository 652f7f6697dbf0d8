"""Exit statuses and the exceptions that end a sync, mapped to each other in one place.

The exit statuses are part of the interface (systemd, scripts and composeflux(8) rely on them).
Every exception that can end a sync names its status; `exit_status()` is the only place that
maps an exception to a status, so the CLI, the sync and the state file always agree.
"""

from __future__ import annotations

import enum
import errno


class ExitStatus(enum.IntEnum):
    OK = 0
    STACKS_FAILED = 1  # the sync ran, but at least one stack failed to render or deploy
    USAGE = 2  # click's own code for a bad command line
    CONFIG = 3  # invalid configuration (composeflux.conf, environment, stack.yml)
    GIT = 4  # the Git repository could not be fetched or checked out
    SECRETS = 5  # the secrets provider failed
    UNSAFE = 6  # a prune was refused because it looked unsafe (see --allow-prune-all)
    BUSY = 7  # another sync held the lock for longer than we were willing to wait
    ENGINE = 8  # the Docker engine or Docker Compose could not be used
    STATE = 9  # the state directory cannot be used (not writable, full, a damaged hash key or lock)
    UNVERIFIED = 10  # VERIFY_SIGNATURES: what Git wants is not signed by a trusted key; nothing was changed
    INTERNAL = 70  # a bug in composeflux (EX_SOFTWARE)


class ComposefluxError(Exception):
    """An error that stops the whole sync. The message is meant for the operator."""

    status = ExitStatus.STACKS_FAILED


class ConfigError(ComposefluxError):
    """Invalid configuration. The message names the file or variable and the key."""

    status = ExitStatus.CONFIG


class GitSourceError(ComposefluxError):
    status = ExitStatus.GIT


class SecretsError(ComposefluxError):
    """A secrets provider failed. The message names the provider, never a credential or value."""

    status = ExitStatus.SECRETS


class UnsafePruneError(ComposefluxError):
    status = ExitStatus.UNSAFE


class LockTimeoutError(ComposefluxError):
    status = ExitStatus.BUSY


class UnverifiedError(ComposefluxError):
    """The commit (or tag) to deploy carries no valid signature by a trusted key. The message
    names the commit or tag and why (unsigned, unknown key, bad signature, expired or revoked key)."""

    status = ExitStatus.UNVERIFIED
    commit: str | None = None  # the commit refused (VERIFY_SIGNATURES=commit), when known


class EngineError(ComposefluxError):
    status = ExitStatus.ENGINE


class StateError(ComposefluxError):
    """The state directory, or a file in it that cannot simply be rebuilt, is unusable. The
    message names the path and says what to do."""

    status = ExitStatus.STATE


def state_error(path: object, exc: OSError) -> StateError:
    """A StateError for an OSError on `path`, with the usual causes spelled out."""
    hints = {
        errno.ENOSPC: "the file system is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied (run as the composeflux user, or fix the owner)",
        errno.EPERM: "permission denied (run as the composeflux user, or fix the owner)",
        errno.ELOOP: "it is a symbolic link, which composeflux does not follow here",
        errno.EISDIR: "it is a directory",
        errno.ENOTDIR: "a parent of it is not a directory",
        errno.EEXIST: "it, or a parent of it, exists and is not a directory",
    }
    return StateError(f"{path}: {hints.get(exc.errno or 0, exc.strerror or str(exc))}")


def exit_status(error: BaseException) -> ExitStatus:
    """The exit status for an exception that ended a sync: its own, or INTERNAL for a bug."""
    if isinstance(error, ComposefluxError):
        return error.status
    return ExitStatus.INTERNAL
