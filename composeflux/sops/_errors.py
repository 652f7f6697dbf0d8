"""The one exception of composeflux.sops."""

from __future__ import annotations


class SopsError(Exception):
    """A SOPS file could not be decrypted, or a decrypted file cannot be used as asked.

    The message is safe to log: it names the file (where the caller gave one), the key path and
    what failed, never a value, a plaintext or key material. Exceptions are re-raised as
    SopsError without their cause attached where the cause could quote the input (a YAML error
    shows the offending line).
    """
