"""composeflux.sops through the real gpg: every PGP-wrapped vector of ../shared/sops-vectors opened
with its private keys imported into a throw-away GNUPGHOME, compared with expected.json; and how
gpg's failures come back (no key, a passphrase nobody can type, a gpg that hangs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from composeflux import sops

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "sops-vectors"
EXPECTED = {k: v for k, v in json.loads((VECTORS / "expected.json").read_text()).items() if k != "_about"}
PGP = sorted(name for name, entry in EXPECTED.items() if entry.get("unwrapped_with", "").startswith("pgp "))
KEYS = [
    "getsops-sops/pgp/sops_functional_tests_key.asc",
    "Mic92-sops-nix/pkgs/sops-install-secrets/test-assets/key.asc",
    "Mic92-sops-nix/pkgs/sops-install-secrets/test-assets/ssh-key.asc",
    "fluxcd-kustomize-controller/internal/controller/testdata/sops/keys/pgp.asc",
]
NO_MAC = "getsops-sops/functional-tests/res/no_mac.yaml"


def gpg(home: Path, *arguments: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["gpg", "--batch", "--quiet", *arguments], input=stdin, env={**os.environ, "GNUPGHOME": str(home)},
        capture_output=True, timeout=120, check=True,
    )
    return result.stdout


def kill_agent(home: Path) -> None:
    """Stop the gpg-agent (and any other daemon) of this GNUPGHOME, and wait until it has removed
    its sockets, so that nothing writes into the directory while pytest deletes it."""
    subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + 5
    while any(home.glob("S.*")) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    """A GNUPGHOME with the vectors' private keys; its gpg-agent is stopped at the end."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    for key in KEYS:
        gpg(home, "--import", str(VECTORS / key))
    yield home
    kill_agent(home)


def without_comments(tree):
    if isinstance(tree, dict):
        return {k: without_comments(v) for k, v in tree.items() if not k.startswith("#comment")}
    if isinstance(tree, list):
        return [without_comments(item) for item in tree]
    return tree


@pytest.mark.parametrize("name", PGP)
def test_pgp_vector_through_gpg(name, keyring):
    identities = sops.Identities(gnupg_home=str(keyring))
    result = sops.decrypt((VECTORS / name).read_bytes(), Path(name).name, identities, verify_mac=name != NO_MAC)
    tree = {"data": result.tree.decode()} if result.format == "binary" else result.tree
    assert result.format == EXPECTED[name]["format"]
    assert without_comments(tree) == without_comments(EXPECTED[name]["decrypted"])


def test_age_and_pgp_in_one_file_falls_back_to_gpg(keyring):
    """sops-nix's secrets.yaml has age and PGP master keys: with a wrong age identity, gpg opens it."""
    name = "Mic92-sops-nix/pkgs/sops-install-secrets/test-assets/secrets.yaml"
    wrong = sops.parse_age_identities((VECTORS / "gibbz00-rops/identity.txt").read_text())
    result = sops.decrypt((VECTORS / name).read_bytes(), "secrets.yaml", sops.Identities(age=tuple(wrong), gnupg_home=str(keyring)))
    assert result.tree == EXPECTED[name]["decrypted"]


def test_empty_keyring_reports_gpgs_reason(tmp_path):
    home = tmp_path / "empty"
    home.mkdir(mode=0o700)
    try:
        with pytest.raises(sops.SopsError, match=r"example\.yaml: gpg could not decrypt any of the file's 2 PGP keys: .*No secret key"):
            sops.decrypt((VECTORS / "getsops-sops/example.yaml").read_bytes(), "example.yaml", sops.Identities(gnupg_home=str(home)))
    finally:
        kill_agent(home)


def test_passphrase_protected_key_fails_at_once(tmp_path):
    """--pinentry-mode error: a key whose passphrase nobody can type fails without waiting."""
    home = tmp_path / "locked"
    home.mkdir(mode=0o700)
    name = "getsops-sops/functional-tests/res/format.enc.yaml"
    try:
        gpg(home, "--passphrase", "secret", "--pinentry-mode", "loopback", "--quick-gen-key", "locked@example.invalid", "future-default")
        message = gpg(home, "--armor", "--trust-model", "always", "--encrypt", "-r", "locked@example.invalid",
                      stdin=bytes.fromhex(EXPECTED[name]["data_key_hex"])).decode()
        kill_agent(home)  # no passphrase cached
        text = (VECTORS / name).read_text()
        pgp_block = text[text.index("    pgp:\n") : text.index("    unencrypted_suffix:")]
        replaced = text.replace(pgp_block, "    pgp:\n        - fp: X\n          enc: |\n" + textwrap.indent(message, " " * 16))
        start = time.monotonic()
        with pytest.raises(sops.SopsError, match="gpg could not decrypt"):
            sops.decrypt(replaced.encode(), "format.enc.yaml", sops.Identities(gnupg_home=str(home)), timeout=20)
        assert time.monotonic() - start < 10
    finally:
        kill_agent(home)


def test_hanging_gpg_is_killed_with_its_children(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "gpg"
    fake.parent.mkdir()
    pids = tmp_path / "pids"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwait\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    with pytest.raises(sops.SopsError, match=r"gpg did not finish within 1 s"):
        sops.decrypt((VECTORS / "getsops-sops/example.yaml").read_bytes(), "example.yaml", sops.Identities(), timeout=1)
    assert time.monotonic() - start < 5
    for pid in map(int, re.findall(r"\d+", pids.read_text())):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), f"process {pid} survived"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"
