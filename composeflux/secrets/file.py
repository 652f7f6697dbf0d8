"""Secrets from local KEY=VALUE files: SECRETS_FILE (e.g. /etc/composeflux/secrets.env) and
SECRETS_DIR (e.g. /etc/composeflux/secrets.d), a directory of `<stack>.env` files, one per stack.

SECRETS_FILE holds global secrets (NAME=value) and may hold a stack's own as STACK/NAME=value.
A `<stack>.env` file in SECRETS_DIR holds that stack's secrets only, as plain NAME=value lines;
they are returned as `<stack>/NAME` and win over a STACK/NAME line of SECRETS_FILE.

A file is refused unless it is a regular file that neither its group nor others can read or
write (chmod 600); a `<stack>.env` must also be owned by the user composeflux runs as and must
not be a symlink, and SECRETS_DIR must not be writable by its group or others. The checks are
made on the opened file (and the files are opened relative to the opened directory), so a swap
between check and read can't slip past them. They happen on every sync (not only at start-up),
so fixing a mode is enough.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Mapping

from composeflux.envfile import VARIABLE_NAMES, NameRule, parse_env_text
from composeflux.errors import ConfigError, SecretsError
from composeflux.secrets import SECRET_KEYS, SecretsProvider, is_valid_stack_name, scoped_key

log = logging.getLogger("composeflux.secrets")

STACK_FILE_SUFFIX = ".env"


def from_settings(settings: Mapping[str, str], masker: object) -> FileProvider:
    path = settings.get("SECRETS_FILE", "").strip()
    directory = settings.get("SECRETS_DIR", "").strip()
    if not path and not directory:
        raise ConfigError("SECRETS_FILE: required when SECRETS_PROVIDER=file and SECRETS_DIR is not set")
    for key, value in (("SECRETS_FILE", path), ("SECRETS_DIR", directory)):
        if value and not os.path.isabs(value):
            raise ConfigError(f"{key}: must be an absolute path, got {value!r}")
    return FileProvider(path or None, directory or None)


class FileProvider(SecretsProvider):
    name = "file"

    def __init__(self, path: str | None, directory: str | None = None):
        self.path = path
        self.directory = directory

    def fetch(self) -> dict[str, str]:
        secrets: dict[str, str] = {}
        if self.path is not None:
            fd = _open(self.path, None, os.O_RDONLY)
            try:
                _check_private_file(fd, self.path, owned=False)
                secrets.update(_parse(fd, self.path, SECRET_KEYS))
            finally:
                os.close(fd)
        if self.directory is not None:
            secrets.update(self._fetch_directory(self.directory))
        return secrets

    @staticmethod
    def _fetch_directory(directory: str) -> dict[str, str]:
        """{stack/NAME: value} from every <stack>.env in the directory."""
        dir_fd = _open(directory, None, os.O_RDONLY | os.O_DIRECTORY)
        try:
            mode = os.fstat(dir_fd).st_mode
            if mode & 0o022:
                raise SecretsError(
                    f"file: SECRETS_DIR {directory} is writable by its group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run: chmod go-w {directory}"
                )
            secrets: dict[str, str] = {}
            for entry in sorted(os.listdir(dir_fd)):
                path = os.path.join(directory, entry)
                stack = entry.removesuffix(STACK_FILE_SUFFIX)
                if not entry.endswith(STACK_FILE_SUFFIX) or not is_valid_stack_name(stack):
                    log.warning(
                        "file: ignoring %s in SECRETS_DIR: not named <stack>%s (a stack's directory name)",
                        path,
                        STACK_FILE_SUFFIX,
                    )
                    continue
                # O_NOFOLLOW: a symlink fails to open (ELOOP) instead of being followed.
                fd = _open(path, dir_fd, os.O_RDONLY | os.O_NOFOLLOW, entry=entry)
                try:
                    _check_private_file(fd, path, owned=True)
                    values = _parse(fd, path, VARIABLE_NAMES)
                finally:
                    os.close(fd)
                secrets.update((scoped_key(stack, name), value) for name, value in values.items())
            return secrets
        finally:
            os.close(dir_fd)


def _open(path: str, dir_fd: int | None, flags: int, entry: str | None = None) -> int:
    """Open `path` (or `entry` relative to dir_fd); SecretsError saying why it can't be."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the sync; it is refused after the open anyway.
        return os.open(entry or path, flags | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and flags & os.O_NOFOLLOW:
            raise SecretsError(f"file: {path} is a symlink (put the file itself in SECRETS_DIR)") from None
        raise SecretsError(f"file: cannot open {path}: {exc.strerror}") from None


def _check_private_file(fd: int, path: str, owned: bool) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise SecretsError(f"file: {path} is not a regular file")
    if owned and info.st_uid != os.geteuid():
        raise SecretsError(
            f"file: {path} is owned by uid {info.st_uid}, not by the user composeflux runs as "
            f"(uid {os.geteuid()}); run: chown {os.geteuid()} {path}"
        )
    if info.st_mode & 0o077:
        raise SecretsError(
            f"file: {path} is accessible to its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )


def _parse(fd: int, path: str, names: NameRule) -> dict[str, str]:
    with os.fdopen(fd, "rb", closefd=False) as f:
        data = f.read()
    try:
        return parse_env_text(data.decode("utf-8"), path, names)
    except UnicodeDecodeError:
        raise SecretsError(f"file: {path} is not UTF-8 text") from None
    except ValueError as exc:
        raise SecretsError(f"file: {exc}") from None
