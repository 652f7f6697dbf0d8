"""age v1 decryption (age-encryption.org/v1), X25519 recipients only: what SOPS needs to unwrap
a data key that it wrapped with `age1...` recipients.

An age file:

    age-encryption.org/v1
    -> X25519 <ephemeral share, base64>        one stanza per recipient
    <body: the wrapped file key, base64 in 64-column lines, the last one shorter>
    --- <header MAC, base64>
    <payload: 16-byte nonce, then the STREAM ciphertext>

(base64 without padding; SOPS stores the file ASCII-armored: "-----BEGIN AGE ENCRYPTED
FILE-----", padded base64 in 64-column lines, "-----END AGE ENCRYPTED FILE-----").

    X25519 stanza   shared = X25519(identity, share); wrap key = HKDF-SHA256(ikm=shared,
                    salt=share || recipient public key, info "age-encryption.org/v1/X25519");
                    file key (16 bytes) = ChaCha20-Poly1305(wrap key, zero nonce).open(body)
    header MAC      HMAC-SHA256(HKDF(file key, salt "", info "header"), header up to "---")
    payload         key = HKDF(file key, salt=nonce, info "payload"); 64 KiB chunks, each
                    ChaCha20-Poly1305 with nonce = 11-byte big-endian counter || last-chunk flag

Other stanza types are recognised so that errors can say why nothing matched: post-quantum
`mlkem768x25519` (needs ML-KEM-768, which python3-cryptography does not have), SSH keys
(`ssh-ed25519`, `ssh-rsa`), passphrases (`scrypt`). Identities are Bech32 `AGE-SECRET-KEY-1...`.

Nothing here imports cryptography at module import: the first decryption does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
from typing import TYPE_CHECKING, NamedTuple

from composeflux.sops._errors import SopsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
IDENTITY_HRP = "age-secret-key-"
RECIPIENT_HRP = "age"
_INTRO = b"age-encryption.org/v1\n"
_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
_CHUNK = 64 * 1024
_TAG = 16
X25519_INFO = b"age-encryption.org/v1/X25519"
PQ_TYPE = "mlkem768x25519"
SSH_TYPES = frozenset({"ssh-ed25519", "ssh-rsa"})


def _polymod(values: Sequence[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATORS):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: Sequence[int], source: int, target: int, *, pad: bool) -> list[int] | None:
    accumulator, bits, result = 0, 0, []
    for value in data:
        accumulator = (accumulator << source) | value
        bits += source
        while bits >= target:
            bits -= target
            result.append((accumulator >> bits) & ((1 << target) - 1))
    if pad and bits:
        result.append((accumulator << (target - bits)) & ((1 << target) - 1))
    elif not pad and (bits >= source or (accumulator << (target - bits)) & ((1 << target) - 1)):
        return None
    return result


def bech32_decode(text: str) -> tuple[str, bytes] | None:
    """(human-readable part, data) of a Bech32 string (BIP 173 checksum, no length limit, as
    age uses it), or None when it is not one. All upper or all lower case."""
    if text.lower() != text and text.upper() != text:
        return None
    text = text.lower()
    separator = text.rfind("1")
    if separator < 1 or separator + 7 > len(text):
        return None
    hrp, rest = text[:separator], text[separator + 1 :]
    if any(c not in _CHARSET for c in rest) or any(not 33 <= ord(c) <= 126 for c in hrp):
        return None
    values = [_CHARSET.index(c) for c in rest]
    if _polymod(_expand(hrp) + values) != 1:
        return None
    data = _convert(values[:-6], 5, 8, pad=False)
    return None if data is None else (hrp, bytes(data))


def bech32_encode(hrp: str, data: bytes) -> str:
    values = _convert(data, 8, 5, pad=True) or []
    checksum = _polymod(_expand(hrp) + values + [0] * 6) ^ 1
    values += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values)


@dataclasses.dataclass(frozen=True)
class AgeIdentity:
    """An age X25519 identity (the 32-byte secret scalar of an `AGE-SECRET-KEY-1...` line).
    Its repr shows the public recipient, never the secret."""

    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise SopsError("an age X25519 identity is 32 bytes")

    @classmethod
    def from_string(cls, text: str) -> AgeIdentity:
        """From the Bech32 `AGE-SECRET-KEY-1...` form. SopsError (without the text) otherwise."""
        decoded = bech32_decode(text.strip())
        if decoded is None or decoded[0] != IDENTITY_HRP or len(decoded[1]) != 32:
            raise SopsError("not a valid age identity (AGE-SECRET-KEY-1...)")
        return cls(decoded[1])

    @functools.cached_property
    def private_key(self) -> X25519PrivateKey:
        """The key object, made once: cryptography 38 builds it through DER, ~1 ms each time."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return X25519PrivateKey.from_private_bytes(self.secret)

    @functools.cached_property
    def public_key(self) -> bytes:
        """The X25519 public key (the recipient's 32 bytes)."""
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def recipient(self) -> str:
        """The `age1...` recipient string of this identity (public)."""
        return bech32_encode(RECIPIENT_HRP, self.public_key)

    def __repr__(self) -> str:
        return f"AgeIdentity(recipient={self.recipient!r})"


def parse_identities(text: str) -> list[AgeIdentity]:
    """The identities of an age-keygen style file: `#` comments, blank lines, one
    `AGE-SECRET-KEY-1...` per line. Post-quantum (`AGE-SECRET-KEY-PQ-1...`) and plugin
    (`AGE-PLUGIN-...`) identities are skipped: they cannot be used here, and a file that needs
    them fails with an error that says so. SopsError names the line number of a malformed line,
    never its content."""
    identities = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        upper = line.upper()
        if upper.startswith(("AGE-SECRET-KEY-PQ-", "AGE-PLUGIN-")):
            continue
        if not upper.startswith("AGE-SECRET-KEY-1"):
            raise SopsError(f"line {number}: not an age identity (AGE-SECRET-KEY-1...), a comment or a blank line")
        try:
            identities.append(AgeIdentity.from_string(line))
        except SopsError:
            raise SopsError(f"line {number}: not a valid age identity (bad encoding or checksum)") from None
    return identities


class Stanza(NamedTuple):
    type: str
    arguments: tuple[str, ...]
    body: bytes


class AgeFile(NamedTuple):
    stanzas: tuple[Stanza, ...]
    header: bytes  # what the header MAC covers: up to and including "---"
    mac: bytes
    payload: bytes

    @property
    def types(self) -> frozenset[str]:
        return frozenset(stanza.type for stanza in self.stanzas)


def _b64(text: bytes) -> bytes:
    """age's base64: standard alphabet, no padding, canonical. binascii.Error otherwise."""
    if b"=" in text or len(text) % 4 == 1:
        raise binascii.Error("not age base64")
    decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    if base64.b64encode(decoded).rstrip(b"=") != text:
        raise binascii.Error("not canonical base64")
    return decoded


def dearmor(data: bytes) -> bytes:
    """The binary age file of SOPS's ASCII armor (or the data itself when it is binary)."""
    if data.startswith(_INTRO):
        return data
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SopsError("an age key is neither armored nor an age file") from None
    if not (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)):
        raise SopsError("an age key is not ASCII-armored age")
    body = "".join(line.strip() for line in text[len(_ARMOR_BEGIN) : -len(_ARMOR_END)].splitlines())
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise SopsError("an age key's armor is not valid base64") from None


def parse(data: bytes) -> AgeFile:
    """The header and payload of an (armored) age v1 file. SopsError when it is malformed."""
    raw = dearmor(data)
    if not raw.startswith(_INTRO):
        raise SopsError("an age key is not an age v1 file")
    position = len(_INTRO)
    stanzas = []
    try:
        while True:
            end = raw.index(b"\n", position)
            line = raw[position:end]
            if line.startswith(b"--- "):
                header = raw[: position + 3]
                mac = _b64(line[4:])
                payload = raw[end + 1 :]
                break
            if not line.startswith(b"-> "):
                raise SopsError("an age key has a malformed header")
            arguments = line[3:].decode("ascii").split(" ")
            if not all(arguments):
                raise SopsError("an age key has a malformed stanza")
            position = end + 1
            body = b""
            while True:
                end = raw.index(b"\n", position)
                chunk = raw[position:end]
                position = end + 1
                if len(chunk) > 64:
                    raise SopsError("an age key has a malformed stanza body")
                body += chunk
                if len(chunk) < 64:
                    break
            stanzas.append(Stanza(arguments[0], tuple(arguments[1:]), _b64(body)))
    except (ValueError, binascii.Error):
        # ValueError: no newline where one must be, non-ASCII arguments; binascii.Error: base64.
        raise SopsError("an age key has a malformed header") from None
    if len(mac) != 32:
        raise SopsError("an age key has a malformed header MAC")
    return AgeFile(tuple(stanzas), header, mac, payload)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _unwrap_x25519(stanza: Stanza, identity: AgeIdentity) -> bytes | None:
    """The file key when this identity opens this X25519 stanza, else None."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(stanza.arguments) != 1 or len(stanza.body) != 32:
        raise SopsError("an age key has a malformed X25519 stanza")
    try:
        share = _b64(stanza.arguments[0].encode())
    except binascii.Error:
        raise SopsError("an age key has a malformed X25519 stanza") from None
    if len(share) != 32:
        raise SopsError("an age key has a malformed X25519 stanza")
    try:
        shared = identity.private_key.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:  # a low-order share gives the all-zero secret, which age refuses
        return None
    wrap_key = _hkdf(shared, share + identity.public_key, X25519_INFO)
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(b"\x00" * 12, stanza.body, None)
    except InvalidTag:
        return None


def _payload(file_key: bytes, payload: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(payload) < 16 + _TAG:
        raise SopsError("an age key's payload is truncated")
    cipher = ChaCha20Poly1305(_hkdf(file_key, payload[:16], b"payload"))
    ciphertext = payload[16:]
    size = _CHUNK + _TAG
    chunks = [ciphertext[i : i + size] for i in range(0, len(ciphertext), size)]
    plaintext = []
    for counter, chunk in enumerate(chunks):
        last = counter == len(chunks) - 1
        if len(chunk) < _TAG or (last and len(chunk) == _TAG and counter > 0):
            raise SopsError("an age key's payload is malformed")
        nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            plaintext.append(cipher.decrypt(nonce, chunk, None))
        except InvalidTag:
            raise SopsError("an age key's payload failed authentication") from None
    return b"".join(plaintext)


def decrypt(file: AgeFile, identities: Sequence[AgeIdentity]) -> bytes | None:
    """The plaintext of an age file when one of the identities opens one of its X25519 stanzas;
    None when none does. SopsError when a stanza opens but the header MAC or payload fails."""
    for stanza in file.stanzas:
        if stanza.type != "X25519":
            continue
        for identity in identities:
            file_key = _unwrap_x25519(stanza, identity)
            if file_key is None:
                continue
            if len(file_key) != 16:
                raise SopsError("an age key has a malformed X25519 stanza")
            expected = hmac.new(_hkdf(file_key, b"", b"header"), file.header, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, file.mac):
                raise SopsError("an age key's header MAC does not match (the key was changed)")
            return _payload(file_key, file.payload)
    return None


def decrypt_file(data: bytes, identities: Sequence[AgeIdentity]) -> bytes:
    """The plaintext of an (armored) age file. SopsError when no identity opens it."""
    file = parse(data)
    plaintext = decrypt(file, identities)
    if plaintext is None:
        raise SopsError(f"no age identity matched any of the file's {len(file.stanzas)} recipient(s)")
    return plaintext
