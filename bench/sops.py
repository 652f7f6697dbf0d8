#!/usr/bin/python3
"""Benchmark composeflux.sops: the median cost of decrypting one file. Prints figures; asserts nothing.

    /usr/bin/python3 bench/sops.py [--repeat 50]

Measured, each the median of --repeat runs, in milliseconds per file (data key unwrap with age,
every value, the MAC, the tree; content() not included):
  - a small age dotenv file (flux's env.env), an age binary file (flux's file.txt);
  - the age-encrypted YAML vectors of ../shared/sops-vectors, per file;
  - generated files of 200 keys (YAML, dotenv) and a 1 MiB binary file, written by the
    encryptor below;
  - once: importing composeflux.sops, and the first decryption (it imports cryptography).

The encryptor here is test-only (tests/unit/test_sops.py uses it too): sops's Tree.Encrypt
(AES-256-GCM with a 32-byte IV, AAD = key path + ":", SHA-512 MAC over every leaf, encrypted
with AAD = lastmodified) and age X25519 wrapping of the data key, for the files no vector covers.
It writes files the decryptor must verify, MAC included; it is not meant to make files for use.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS = REPO_ROOT.parent / "shared" / "sops-vectors"
LASTMODIFIED = "2026-01-02T03:04:05Z"
MAC_ONLY_SEED = bytes.fromhex("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69")

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# --- the test-only encryptor ------------------------------------------------------------------


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
    format: str, tree: object, recipients: list[bytes], *, mac_only: bool = False, suffix: str = "_unencrypted", key: bytes | None = None
) -> bytes:
    """A SOPS file of `tree` (yaml/json: a mapping; dotenv: str values; ini: sections of str
    values; binary: bytes) for age X25519 recipients, as sops 3.9 lays it out."""
    import yaml

    key = key or os.urandom(32)
    encryptor = _Encryptor(key, suffix=suffix, mac_only=mac_only)
    body = encryptor.walk({"data": tree.decode()} if isinstance(tree, bytes) else tree, [])
    metadata: dict[str, object] = {
        "age": [{"recipient": "age1benchmark", "enc": age_encrypt(key, recipients)}],
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


# --- the benchmark ----------------------------------------------------------------------------


def _median_ms(function: Callable[[], object], repeat: int) -> float:
    function()  # warm: imports and caches are not what is measured
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    arguments = parser.parse_args()

    start = time.perf_counter()
    from composeflux import sops

    import_ms = (time.perf_counter() - start) * 1000
    flux = VECTORS / "fluxcd-kustomize-controller/internal/controller/testdata/sops"
    identities = sops.Identities(age=tuple(sops.parse_age_identities((flux / "keys/age.txt").read_text())), use_gpg=False)
    env = (flux / "envs/env.env").read_bytes()
    start = time.perf_counter()
    sops.decrypt(env, "env.env", identities)
    first_ms = (time.perf_counter() - start) * 1000

    print(f"import composeflux.sops                {import_ms:8.2f} ms (once)")
    print(f"first decryption (imports cryptography) {first_ms:7.2f} ms (once)")

    def report(label: str, files: list[tuple[bytes, str, sops.Identities]]) -> None:
        def run() -> None:
            for data, name, ids in files:
                sops.decrypt(data, name, ids)

        per_file = _median_ms(run, arguments.repeat) / len(files)
        size = sum(len(data) for data, _, _ in files) / len(files)
        print(f"{label:<40}{per_file:8.2f} ms per file ({len(files)} file(s), {size / 1024:.1f} KiB each on average)")

    report("age dotenv, 1 key (flux env.env)", [(env, "env.env", identities)])
    report("age binary, 5 bytes (flux file.txt)", [((flux / "files/file.txt").read_bytes(), "file.txt", identities)])

    expected = json.loads((VECTORS / "expected.json").read_text())
    yaml_vectors = []
    for name, entry in expected.items():
        if not isinstance(entry, dict):
            continue
        unwrapped = str(entry.get("unwrapped_with", ""))
        if entry.get("format") == "yaml" and unwrapped.startswith("age ") and "#" not in name:
            key_file = unwrapped.rsplit("(", 1)[1].rstrip(")")
            ids = sops.Identities(age=tuple(sops.parse_age_identities((VECTORS / key_file).read_text())), use_gpg=False)
            yaml_vectors.append(((VECTORS / name).read_bytes(), name, ids))
    report("age YAML vectors", yaml_vectors)

    identity = identities.age[0]
    recipients = [identity.public_key]
    tree = {f"key_{i:03d}": f"value number {i} " + "x" * (i % 40) for i in range(200)}
    report("generated YAML, 200 keys", [(encrypt_file("yaml", tree, recipients), "big.yaml", identities)])
    report("generated dotenv, 200 keys", [(encrypt_file("dotenv", tree, recipients), "big.env", identities)])
    nested = {f"service_{i}": {"user": f"u{i}", "password": f"p{i}", "port": 8000 + i, "debug_unencrypted": i % 2 == 0} for i in range(50)}
    report("generated YAML, 50 maps of 4 (200 leaves)", [(encrypt_file("yaml", nested, recipients), "nested.yaml", identities)])
    blob = os.urandom(768 * 1024)
    report("generated binary, 1 MiB on disk", [(encrypt_file("binary", base64.b64encode(blob), recipients), "blob.bin", identities)])


if __name__ == "__main__":
    main()
