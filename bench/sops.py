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

The generated files come from the tests' SOPS encryptor (tests/sopsenc.py).
"""

from __future__ import annotations

import argparse
import base64
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
    from tests.sopsenc import encrypt_file

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
