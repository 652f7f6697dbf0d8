"""Native SOPS decryption: files encrypted by Mozilla/getsops `sops`, without the sops binary.

A pure library that knows nothing of the sync. What it reads:

    stores      YAML, JSON, dotenv, INI and binary (JSON envelope), as sops 3.3 to 3.13 write
                them, each parsed the way sops's Go libraries parse it (that decides the MAC)
    data keys   age X25519 recipients (natively), PGP (through `gpg`); not: post-quantum age,
                SSH age recipients, age plugins, cloud KMS / Vault, Shamir key groups
    integrity   the MAC is verified unless the caller turns that off

    data = path.read_bytes()
    if looks_encrypted(data) and detect_format(data, path.name):
        result = decrypt(data, path.name, Identities(age=tuple(parse_age_identities(keys_text))))
        result.content(), result.variables(), result.secrets

Every failure is a SopsError whose message names the file and what failed (a key path, the
MAC, which master keys could not be opened and why), never a value or key material.

Importing this package loads PyYAML, not cryptography: `looks_encrypted` and `detect_format`
work without it; the first decryption imports it.
"""

from __future__ import annotations

import dataclasses

from composeflux.sops import _formats, _keys
from composeflux.sops._age import AgeIdentity, parse_identities
from composeflux.sops._errors import SopsError
from composeflux.sops._formats import detect_format, looks_encrypted
from composeflux.sops._result import Decrypted

__all__ = [
    "AgeIdentity",
    "Decrypted",
    "Identities",
    "SopsError",
    "decrypt",
    "detect_format",
    "looks_encrypted",
    "parse_age_identities",
]


@dataclasses.dataclass(frozen=True)
class Identities:
    """What may open a file's data key.

    age         age X25519 identities, each tried against every age recipient
    gnupg_home  GNUPGHOME for gpg (its keyring and agent); None: gpg's default (~/.gnupg)
    use_gpg     try the file's PGP keys through `gpg` when no age identity opens it and gpg is
                installed
    """

    age: tuple[AgeIdentity, ...] = ()
    gnupg_home: str | None = None
    use_gpg: bool = True


def parse_age_identities(text: str) -> list[AgeIdentity]:
    """The identities of an age key file (age-keygen's layout: `#` comments, blank lines, one
    AGE-SECRET-KEY-1... per line). Post-quantum and plugin identities are skipped (they cannot
    be used here). SopsError on a malformed line, naming its number, never its content."""
    return parse_identities(text)


def decrypt(data: bytes, filename: str, identities: Identities, *, verify_mac: bool = True, timeout: float = 30.0) -> Decrypted:
    """Decrypt a SOPS file. `filename` picks nothing but the binary/JSON distinction and names
    the file in errors; the store is chosen by content (detect_format). `timeout` bounds the
    gpg runs together (age needs none). With verify_mac=False a file without a MAC, or with one
    that does not match, is accepted (sops's --ignore-mac); values must still authenticate.

    SopsError, naming `filename`, when: it is no SOPS file; no identity opens the data key (the
    message says what was tried); a value fails authentication (naming its key path, e.g.
    `spec:secretTemplates:stringData:username`); the MAC does not match or, with verify_mac, is
    missing; the metadata sets more than one encryption rule or several key groups (Shamir)."""
    try:
        parsed = _formats.parse(data, filename)
        key = _keys.unwrap(parsed.metadata, identities.age, identities.gnupg_home, identities.use_gpg, timeout)
        return _formats.decrypt_parsed(parsed, key, verify_mac=verify_mac)
    except SopsError as error:
        raise SopsError(f"{filename}: {error}") from None
