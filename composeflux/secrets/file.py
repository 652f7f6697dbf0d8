"""Secrets from a local KEY=VALUE file (SECRETS_FILE), e.g. /etc/composeflux/secrets.env.

The file is refused unless it is a regular file that neither its group nor others can read or
write (chmod 600): the check is made on the opened file, so a swap between check and read can't
slip past it. It happens on every sync (not only at start-up), so fixing the mode is enough.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from composeflux.envfile import parse_env_text
from composeflux.errors import ConfigError, SecretsError
from composeflux.secrets import SecretsProvider


def from_settings(settings: Mapping[str, str], masker: object) -> FileProvider:
    path = settings.get("SECRETS_FILE", "").strip()
    if not path:
        raise ConfigError("SECRETS_FILE: required when SECRETS_PROVIDER=file")
    if not os.path.isabs(path):
        raise ConfigError(f"SECRETS_FILE: must be an absolute path, got {path!r}")
    return FileProvider(path)


class FileProvider(SecretsProvider):
    name = "file"

    def __init__(self, path: str):
        self.path = path

    def fetch(self) -> dict[str, str]:
        try:
            # O_NONBLOCK: opening a FIFO must not hang the sync; it is refused below anyway.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise SecretsError(f"file: cannot open {self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SecretsError(f"file: {self.path} is not a regular file")
            if info.st_mode & 0o077:
                raise SecretsError(
                    f"file: {self.path} is accessible to its group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {self.path}"
                )
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
        try:
            return parse_env_text(data.decode("utf-8"), self.path)
        except UnicodeDecodeError:
            raise SecretsError(f"file: {self.path} is not UTF-8 text") from None
        except ValueError as exc:
            raise SecretsError(f"file: {exc}") from None
