"""The data key: unwrapped from the file's master keys with the identities at hand.

Every master key of a group wraps the same 32-byte data key, so the first one that opens is
enough. age goes first (in-process, no subprocess): every identity against every X25519 stanza.
Then PGP through gpg, when allowed and installed. Several key groups mean Shamir secret sharing
(the key split between groups), which is not supported. When nothing opens, the error says what
was tried and why each kind failed (post-quantum or SSH age recipients, no gpg, gpg's reason,
cloud KMS keys composeflux cannot use), never anything secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from composeflux.sops import _age, _pgp
from composeflux.sops._errors import SopsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from composeflux.sops._formats import AgeKey, KeyGroup, Metadata


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _try_age(keys: Sequence[AgeKey], identities: Sequence[_age.AgeIdentity]) -> tuple[bytes | None, str]:
    """(data key, "") or (None, why no age key opened)."""
    files: list[_age.AgeFile] = []
    problems: list[str] = []
    malformed = 0
    for key in keys:
        try:
            files.append(_age.parse(key.enc.encode("utf-8")))
        except SopsError:
            malformed += 1
    for file in files:
        try:
            plaintext = _age.decrypt(file, identities) if identities else None
        except SopsError as error:
            problems.append(str(error))
            continue
        if plaintext is not None:
            if len(plaintext) == 32:
                return plaintext, ""
            problems.append(f"an age key holds {len(plaintext)} bytes instead of a 32-byte data key")
    unusable = [file for file in files if "X25519" not in file.types]
    kinds = []
    if post_quantum := sum(1 for file in unusable if _age.PQ_TYPE in file.types):
        kinds.append(f"{post_quantum} post-quantum (mlkem768x25519), which is not supported")
    if ssh := sum(1 for file in unusable if file.types & _age.SSH_TYPES):
        kinds.append(f"{ssh} SSH (ssh-ed25519/ssh-rsa), which is not supported: convert the SSH key with ssh-to-age")
    if passphrase := sum(1 for file in unusable if "scrypt" in file.types):
        kinds.append(f"{passphrase} passphrase-protected (scrypt), which is not supported")
    if malformed:
        kinds.append(f"{malformed} malformed")
    if kinds and len(unusable) + malformed == len(keys):
        message = f"none of the file's {len(keys)} age recipient(s) can be used: " + "; ".join(kinds)
    else:
        message = f"no age identity matched any of the file's {len(keys)} age recipient(s)"
        if not identities:
            message += " (no age identity was given)"
        if kinds:
            message += " (of them: " + "; ".join(kinds) + ")"
    problems.insert(0, message)
    return None, "; ".join(problems)


def unwrap(metadata: Metadata, age: Sequence[_age.AgeIdentity], gnupg_home: str | None, use_gpg: bool, timeout: float) -> bytes:
    """The file's 32-byte data key. SopsError saying what was tried when no master key opens."""
    groups: tuple[KeyGroup, ...] = metadata.groups
    if not groups:
        raise SopsError("the file's metadata lists no master keys")
    if len(groups) > 1:
        raise SopsError(f"the file has {len(groups)} key groups: Shamir key groups are not supported")
    group = groups[0]
    problems = []
    if group.age:
        key, problem = _try_age(group.age, age)
        if key is not None:
            return key
        problems.append(problem)
    if group.pgp:
        count = _plural(len(group.pgp), "PGP key")
        if not use_gpg:
            problems.append(f"the file's {count} were not tried (gpg is turned off)")
        elif _pgp.gpg_path() is None:
            problems.append(f"gpg is not installed, so the file's {count} could not be tried")
        else:
            try:
                return _pgp.decrypt_data_key([key.enc for key in group.pgp], gnupg_home, timeout)
            except SopsError as error:
                problems.append(f"gpg could not decrypt any of the file's {count}: {error}")
    if group.other:
        kinds = ", ".join(f"{kind} ({count})" for kind, count in group.other)
        problems.append(f"its {kinds} master keys are not supported")
    raise SopsError("; ".join(problems))
