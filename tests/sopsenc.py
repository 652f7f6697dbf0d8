"""A SOPS *encryptor*, for tests and the benchmark only: sops's Tree.Encrypt (AES-256-GCM with
a 32-byte IV, AAD = key path + ":", SHA-512 MAC over every leaf, encrypted with AAD =
lastmodified) and age X25519 wrapping of the data key, in the dotenv, YAML, JSON, INI and binary
layouts of sops 3.9. It makes the files no vector in ../shared/sops-vectors covers (new keys,
rotated values, every type and rule); the vectors, made by the real `sops`, check the decryptor
itself. It writes files the decryptor must verify, MAC included; it is not meant to make files
for use.

The data key is wrapped natively for 32-byte X25519 public keys (`recipients`), or by the real
`age` CLI (Debian's `age` package) for `age1...` recipients (`age_recipients`, used by the
integration tests against real Compose).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

LASTMODIFIED = "2026-01-02T03:04:05Z"
MAC_ONLY_SEED = bytes.fromhex("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69")


def age_keygen(directory: Path) -> tuple[Path, str]:
    """A new age identity file (mode 0600) in `directory`, made by `age-keygen`, and its recipient."""
    path = directory / "age.key"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()
    return path, recipient


def age_cli_encrypt(plaintext: bytes, recipient: str) -> str:
    """An armored age file of `plaintext` for an `age1...` recipient, by the real `age` CLI."""
    return subprocess.run(["age", "-a", "-r", recipient], input=plaintext, check=True, capture_output=True).stdout.decode()


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _raw_b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def age_encrypt(plaintext: bytes, recipients: list[bytes]) -> str:
    """An armored age v1 file of `plaintext` for X25519 recipients (32-byte public keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    file_key = os.urandom(16)
    header = b"age-encryption.org/v1\n"
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
        body = ChaCha20Poly1305(_hkdf(shared, share + recipient, b"age-encryption.org/v1/X25519")).encrypt(b"\x00" * 12, file_key, None)
        encoded = _raw_b64(body)
        lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
        if not lines or len(lines[-1]) == 64:
            lines.append(b"")
        header += b"-> X25519 " + _raw_b64(share) + b"\n" + b"\n".join(lines) + b"\n"
    header += b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    nonce = os.urandom(16)
    payload_cipher = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunks = [plaintext[i : i + 65536] for i in range(0, len(plaintext), 65536)] or [b""]
    payload = b"".join(
        payload_cipher.encrypt(i.to_bytes(11, "big") + (b"\x01" if i == len(chunks) - 1 else b"\x00"), chunk, None)
        for i, chunk in enumerate(chunks)
    )
    binary = header + b" " + _raw_b64(mac) + b"\n" + nonce + payload
    armored = base64.b64encode(binary).decode()
    lines = [armored[i : i + 64] for i in range(0, len(armored), 64)]
    return "-----BEGIN AGE ENCRYPTED FILE-----\n" + "\n".join(lines) + "\n-----END AGE ENCRYPTED FILE-----\n"


def encrypt_value(value: object, key: bytes, aad: str) -> str:
    """sops's aes.Cipher.Encrypt: ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from composeflux.sops._golang import to_bytes

    kinds = {str: "str", bool: "bool", int: "int", float: "float", bytes: "bytes"}
    kind = "time" if type(value).__name__ == "GoTime" else kinds[type(value)]
    iv = os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, to_bytes(value), aad.encode())
    parts = (base64.b64encode(sealed[:-16]), base64.b64encode(iv), base64.b64encode(sealed[-16:]))
    return "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]".format(*(p.decode() for p in parts), kind)


class _Encryptor:
    """sops's Tree.Encrypt over a tree of dicts, lists and scalars, with the default rule."""

    def __init__(self, key: bytes, *, suffix: str, mac_only: bool) -> None:
        self.key, self.suffix, self.mac_only = key, suffix, mac_only
        self.hash = hashlib.sha512(MAC_ONLY_SEED if mac_only else b"")

    def walk(self, node: object, path: list[str]) -> object:
        from composeflux.sops._golang import to_bytes

        if isinstance(node, dict):
            return {k: self.walk(v, [*path, k]) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(item, path) for item in node]
        if node is None:
            return None
        encrypted = not any(part.endswith(self.suffix) for part in path)
        if encrypted or not self.mac_only:
            self.hash.update(to_bytes(node))
        if not encrypted or node == "":
            return node
        return encrypt_value(node, self.key, ":".join(path) + ":")

    def mac(self) -> str:
        return encrypt_value(self.hash.hexdigest().upper(), self.key, LASTMODIFIED)


def _flatten(value: object, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flatten(v, f"{prefix}__map_{k}" if prefix else k)]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _flatten(v, f"{prefix}__list_{i}")]
    return [(prefix, "true" if value is True else "false" if value is False else str(value))]


def encrypt_file(
    format: str,
    tree: object,
    recipients: Sequence[bytes] = (),
    *,
    age_recipients: Sequence[str] = (),
    mac_only: bool = False,
    suffix: str = "_unencrypted",
    key: bytes | None = None,
) -> bytes:
    """A SOPS file of `tree` (yaml/json: a mapping; dotenv: str values; ini: sections of str
    values; binary: bytes) for age X25519 recipients, as sops 3.9 lays it out."""
    import yaml

    key = key or os.urandom(32)
    encryptor = _Encryptor(key, suffix=suffix, mac_only=mac_only)
    body = encryptor.walk({"data": tree.decode()} if isinstance(tree, bytes) else tree, [])
    stanzas = [{"recipient": "age1native", "enc": age_encrypt(key, list(recipients))}] if recipients else []
    stanzas += [{"recipient": recipient, "enc": age_cli_encrypt(key, recipient)} for recipient in age_recipients]
    metadata: dict[str, object] = {
        "age": stanzas,
        "lastmodified": LASTMODIFIED,
        "mac": encryptor.mac(),
        "unencrypted_suffix": suffix,
        "version": "3.9.0",
    }
    if mac_only:
        metadata["mac_only_encrypted"] = True
    assert isinstance(body, dict)
    if format == "yaml":
        return yaml.safe_dump({**body, "sops": metadata}, sort_keys=False, allow_unicode=True).encode()
    if format in ("json", "binary"):
        return json.dumps({**body, "sops": metadata}, indent="\t").encode()
    if format == "dotenv":
        lines = [f"{k}={v}" for k, v in body.items()] + [f"sops_{k}={v}" for k, v in _flatten(metadata, "")]
        return ("\n".join(line.replace("\n", "\\n") for line in lines) + "\n").encode()
    if format == "ini":
        blocks = ["[{}]\n{}".format(name, "".join(f"{k} = {v}\n" for k, v in section.items())) for name, section in body.items()]
        sops_block = "".join(f"{k} = {v.replace(chr(10), chr(92) + 'n')}\n" for k, v in _flatten(metadata, ""))
        return ("\n".join([*blocks, "[sops]\n" + sops_block])).encode()
    raise ValueError(format)
