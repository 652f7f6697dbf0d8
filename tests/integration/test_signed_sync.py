"""VERIFY_SIGNATURES with OpenPGP keys through the real CLI against the real Docker engine: commits
and tags of the test repository signed by `git commit -S` / `git tag -s` with real gpg keys, the
host trusting an exported keyring (VERIFY_KEYRING).

A commit signed by a key of the keyring is deployed, and its containers say who signed it; one
signed by a key the keyring does not hold, by a key that has expired or was revoked, or changed
after it was signed, is refused with exit 10 and changes nothing: the same containers keep
running, no stack is pruned. The keys are made as in test_signatures.py: the expired one at a
faked time in 2020 (gpg --faked-system-time), valid for a day; the revoked one signs (its own
GnuPG home does not know of the revocation), and the host's keyring carries its revocation
certificate."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, container_ids, containers, run

pytestmark = pytest.mark.docker

SIGNER_LABEL = "compose.stack.signer"
EXPIRED_SIGNING_TIME = "20200101T010000"  # within the day the expired key was valid


@dataclasses.dataclass
class Keys:
    gnupg: Path  # the signers' GnuPG home: every key with its secret part, never revoked here
    fingerprints: dict[str, str]  # name -> primary key fingerprint
    keyring: Path  # the host's trusted keys: alice, old (expired), revoked (with its revocation); not mallory
    old_gpg: Path  # a gpg that runs at EXPIRED_SIGNING_TIME, to sign with the key while it was valid

    def signer(self, name: str) -> str:
        user = {"alice": "Alice", "mallory": "Mallory", "old": "Old", "revoked": "Revoked"}[name]
        return f"openpgp {self.fingerprints[name]} ({user} <{name}@example.org>)"


def gpg(home: Path, *arguments: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["gpg", "--batch", "--quiet", "--homedir", str(home), *arguments], input=stdin, capture_output=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, f"gpg {arguments}: {result.stderr.decode()}"
    return result.stdout


def stop_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + 5
    while any(home.glob("S.*")) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    directory = tmp_path_factory.mktemp("gpg")
    gnupg, host = directory / "signers", directory / "host"
    gnupg.mkdir(mode=0o700)
    host.mkdir(mode=0o700)
    fingerprints = {}
    for name in ("alice", "mallory", "revoked", "old"):
        faked = ["--faked-system-time", "20200101T000000"] if name == "old" else []
        gpg(gnupg, "--passphrase", "", *faked, "--quick-gen-key", f"{name.title()} <{name}@example.org>", "ed25519", "sign",
            "1d" if name == "old" else "never")  # fmt: skip
        listing = gpg(gnupg, "--with-colons", "--list-keys", f"<{name}@example.org>").decode()
        fingerprints[name] = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    # The host's keyring is built in a GnuPG home of its own, so the signers' home never learns
    # of the revocation (gpg would not sign with a key it knows to be revoked).
    trusted = [fingerprints[name] for name in ("alice", "old", "revoked")]
    gpg(host, "--import", stdin=gpg(gnupg, "--export", *trusted))
    certificate = (gnupg / "openpgp-revocs.d" / f"{fingerprints['revoked']}.rev").read_text()
    gpg(host, "--import", stdin=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
    keyring = directory / "trusted-keys.gpg"
    keyring.write_bytes(gpg(host, "--export", *trusted))
    listing = gpg(host, "--with-colons", "--list-keys", fingerprints["revoked"]).decode()
    assert any(line.startswith("pub:r:") for line in listing.splitlines()), listing  # the keyring carries the revocation
    old_gpg = directory / "old-gpg"
    old_gpg.write_text(f'#!/bin/sh\nexec gpg --faked-system-time {EXPIRED_SIGNING_TIME} "$@"\n')
    old_gpg.chmod(0o755)
    yield Keys(gnupg, fingerprints, keyring, old_gpg)
    stop_agent(gnupg)
    stop_agent(host)


@pytest.fixture
def signed_repo(repo, keys, monkeypatch):
    """The test repository's git signs with the signers' GnuPG home (StackRepo.git passes on
    os.environ), as OpenPGP."""
    monkeypatch.setenv("GNUPGHOME", str(keys.gnupg))
    repo.git("config", "gpg.format", "openpgp")
    return repo


def sign_as(repo, keys: Keys, name: str | None) -> None:
    """Commits and tags of `repo` from now on are signed by `name` (None: not signed)."""
    if name is None:
        repo.git("config", "commit.gpgsign", "false")
        return
    repo.git("config", "user.signingkey", keys.fingerprints[name])
    repo.git("config", "commit.gpgsign", "true")
    repo.git("config", "gpg.program", str(keys.old_gpg) if name == "old" else "gpg")


def verifying(cfx, keys: Keys, mode: str = "commit", **more) -> None:
    cfx.settings(VERIFY_SIGNATURES=mode, VERIFY_KEYRING=keys.keyring, **more)


def status(cfx) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "composeflux", "--config", str(cfx.config_file), "status"],
                          capture_output=True, text=True, timeout=60, env=cfx.env)  # fmt: skip


def signature_of(repo, commit: str) -> str:
    """What the signers' own gpg says of a commit (to check the test made what it meant to)."""
    return repo.git("log", "-1", "--format=%G? %GF", commit)


def test_only_commits_signed_by_a_valid_key_of_the_keyring_are_deployed(cfx, signed_repo, keys, prefix):
    repo, web, db = signed_repo, f"{prefix}-web", f"{prefix}-db"
    verifying(cfx, keys)
    sign_as(repo, keys, "alice")
    repo.add_stack(web, environment={"V": "1"})
    repo.add_stack(db)
    good = repo.commit("signed by alice")

    result = cfx.sync()
    assert f"signed by {keys.signer('alice')}" in result.stderr
    for project in (web, db):
        for info in containers(project).values():
            assert info.state == "running"
            assert info.labels[SIGNER_LABEL] == keys.signer("alice")
            assert info.labels["compose.stack.commit"] == good
    assert cfx.last_state()["signer"] == keys.signer("alice")
    shown = status(cfx)
    assert shown.returncode == 0, shown.stderr
    assert f"Signed by: {keys.signer('alice')}" in shown.stdout.splitlines()
    running = {web: container_ids(web), db: container_ids(db)}

    def refused(name: str | None, reason: str, push) -> None:
        """A commit that changes web and deletes db, made by `push`, is refused for `reason`."""
        sign_as(repo, keys, name)
        repo.add_stack(web, environment={"V": "evil"})
        repo.remove(db)
        bad = push()
        if name is None:
            assert signature_of(repo, bad).startswith("B")  # a bad signature to the signers' gpg too
        else:
            assert signature_of(repo, bad).endswith(keys.fingerprints[name])  # signed by the key the scenario names
        result = cfx.sync(expect=10)
        assert f"commit {bad[:12]}" in result.stderr and f"refused ({reason})" in result.stderr, result.stderr
        assert "Deploying" not in result.stderr and "Pruning" not in result.stderr
        assert {web: container_ids(web), db: container_ids(db)} == running  # the same containers, db not pruned
        assert "V=1" in containers(web)["app"].env
        last = cfx.last_state()
        assert (last["result"], last["status"]) == ("error", 10) and reason in last["summary"] and not last.get("signer")
        shown = status(cfx)
        assert shown.returncode == 1 and "result: error" in shown.stdout and f"commit {bad[:12]}" in shown.stdout
        repo.force_push(good)  # the next scenario starts from the verified commit again

    def commit() -> str:
        return repo.commit("not deployable")

    refused("mallory", "unknown key", commit)
    refused("old", "expired key", commit)
    refused("revoked", "revoked key", commit)

    def tampered() -> str:
        """alice's signed commit with its tree swapped for the evil one: the signature is kept."""
        repo.git("add", "-A")
        evil_tree = repo.git("write-tree")
        body = run("git", "-C", str(repo.work), "cat-file", "commit", good).stdout
        original_tree = repo.git("rev-parse", f"{good}^{{tree}}")
        assert f"tree {original_tree}\n" in body and "-----BEGIN PGP SIGNATURE-----" in body
        forged_body = body.replace(f"tree {original_tree}\n", f"tree {evil_tree}\n", 1)
        forged = run("git", "-C", str(repo.work), "hash-object", "-t", "commit", "-w", "--stdin", input=forged_body).stdout.strip()
        repo.git("reset", "-q", "--hard", forged)
        repo.git("push", "-q", "--force", "origin", "HEAD:main")
        return forged

    refused(None, "bad signature", tampered)

    # After the refusals, alice's commit is deployed as before: nothing to do, and no alert left.
    result = cfx.sync()
    assert "0 deployed, 2 unchanged, 0 pruned, 0 failed" in result.stderr and "The sync works again" in result.stderr
    assert json.loads((cfx.state / "state.json").read_text())["alerts"] == {}
    assert {web: container_ids(web), db: container_ids(db)} == running


def test_tag_mode_deploys_the_newest_validly_signed_tag(cfx, signed_repo, keys, prefix):
    """v1 and v2 signed by alice; v3 by mallory (not in the keyring); v4 an annotated tag without a
    signature; v5 lightweight. v2 is deployed, whatever the branch's head. Then a signed v6
    arrives and is deployed."""
    repo, web = signed_repo, f"{prefix}-web"
    verifying(cfx, keys, "tag", VERIFY_TAG_PATTERN="v*")
    sign_as(repo, keys, None)  # only the tags' own signatures count
    for version, how in ((1, "alice"), (2, "alice"), (3, "mallory"), (4, "annotated"), (5, "lightweight")):
        repo.add_stack(web, environment={"V": str(version)})
        repo.commit(f"v{version}")
        if how in ("alice", "mallory"):
            repo.git("-c", f"user.signingkey={keys.fingerprints[how]}", "tag", "-s", "-m", f"release v{version}", f"v{version}")
        elif how == "annotated":
            repo.git("tag", "-a", "-m", f"release v{version}", f"v{version}")
        else:
            repo.git("tag", f"v{version}")
    repo.git("push", "-q", "--force", "origin", "--tags")

    result = cfx.sync()
    assert "from " in result.stderr and "tag v2" in result.stderr, result.stderr
    for skipped in ("v5", "v4", "v3"):
        assert f"Skipping tag {skipped} " in result.stderr
    info = containers(web)["app"]
    assert "V=2" in info.env
    assert info.labels[SIGNER_LABEL] == keys.signer("alice")
    assert f"Signed by: {keys.signer('alice')}" in status(cfx).stdout.splitlines()

    repo.add_stack(web, environment={"V": "6"})
    repo.commit("v6")
    repo.git("-c", f"user.signingkey={keys.fingerprints['alice']}", "tag", "-s", "-m", "release v6", "v6")
    repo.git("push", "-q", "--force", "origin", "--tags")
    cfx.sync()
    assert "V=6" in containers(web)["app"].env
