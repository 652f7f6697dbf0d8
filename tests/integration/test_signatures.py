"""composeflux.signatures through the real git, gpg and ssh-keygen: throw-away repositories whose
commits and tags are signed with real SSH keys (ssh-keygen -t ed25519) and real OpenPGP keys
(gpg --quick-gen-key, ed25519), verified against an allowed-signers file and a keyring.

The expired OpenPGP key is genuinely expired: made (and used to sign) at a faked time in 2020 with
gpg's own --faked-system-time, valid for a day. The revoked one carries the revocation certificate
gpg wrote when it made the key. Tampered objects are rewritten with `git hash-object -w`, keeping
their signature."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from composeflux import signatures
from composeflux.signatures import CannotVerify, SignatureError, Trust, newest_verified_tag, verify_commit

EXPIRED_SIGNING_TIME = "20200101T010000"


def run(*command: str, env: dict[str, str] | None = None, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(command, env=env, input=stdin, cwd=cwd, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, f"{command}: {result.stderr.decode()}"
    return result.stdout.decode()


@dataclasses.dataclass
class Keys:
    directory: Path
    gnupg: Path  # the signers' GnuPG home: every key, secret parts included, all ultimately trusted
    ssh: dict[str, Path]  # name -> private key file
    ssh_fingerprints: dict[str, str]
    pgp: dict[str, str]  # name -> fingerprint
    allowed_signers: Path  # alice@example.org and bob@example.org (not mallory)
    keyring: Path  # alice, old (expired), revoked (not mallory), binary
    armored_keyring: Path
    old_gpg: Path  # a gpg that runs at EXPIRED_SIGNING_TIME

    def gpg(self, *arguments: str, stdin: bytes | None = None) -> str:
        return run("gpg", "--batch", "--quiet", "--homedir", str(self.gnupg), *arguments, stdin=stdin)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    gnupg = directory / "gnupg"
    gnupg.mkdir(mode=0o700)
    ssh, fingerprints = {}, {}
    for name in ("alice", "bob", "mallory"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(directory / name))
        ssh[name] = directory / name
        fingerprints[name] = run("ssh-keygen", "-l", "-f", str(directory / f"{name}.pub")).split()[1]
    allowed = directory / "allowed_signers"
    allowed.write_text("".join(f"{name}@example.org {(directory / f'{name}.pub').read_text()}" for name in ("alice", "bob")))
    old_gpg = directory / "old-gpg"
    old_gpg.write_text(f'#!/bin/sh\nexec gpg --faked-system-time {EXPIRED_SIGNING_TIME} "$@"\n')
    old_gpg.chmod(0o755)
    made = Keys(directory, gnupg, ssh, fingerprints, {}, allowed, directory / "trusted.gpg", directory / "trusted.asc", old_gpg)
    for name, extra in (("alice", []), ("mallory", []), ("revoked", []), ("old", ["--faked-system-time", "20200101T000000"])):
        made.gpg("--passphrase", "", *extra, "--quick-gen-key", f"{name.title()} <{name}@example.org>", "ed25519", "sign",
                 "1d" if name == "old" else "never")  # fmt: skip
        listing = made.gpg("--with-colons", "--list-keys", f"{name}@example.org")
        made.pgp[name] = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    yield made
    subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(gnupg)}, capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + 5
    while any(gnupg.glob("S.*")) and time.monotonic() < deadline:
        time.sleep(0.05)


def export_keyrings(keys: Keys) -> None:
    certificate = (keys.gnupg / "openpgp-revocs.d" / f"{keys.pgp['revoked']}.rev").read_text()
    keys.gpg("--import", stdin=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
    trusted = [keys.pgp["alice"], keys.pgp["old"], keys.pgp["revoked"]]
    keys.keyring.write_bytes(subprocess.run(
        ["gpg", "--batch", "--homedir", str(keys.gnupg), "--export", *trusted], capture_output=True, timeout=60, check=True
    ).stdout)  # fmt: skip
    keys.armored_keyring.write_text(keys.gpg("--armor", "--export", *trusted))


class Repo:
    """A throw-away repository; its git sees no user or system configuration."""

    def __init__(self, path: Path, keys: Keys):
        self.path = path
        self.keys = keys
        path.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GNUPGHOME": str(keys.gnupg),
            "GIT_AUTHOR_NAME": "Tester",
            "GIT_AUTHOR_EMAIL": "tester@example.org",
            "GIT_COMMITTER_NAME": "Tester",
            "GIT_COMMITTER_EMAIL": "tester@example.org",
        }
        self.git("init", "-q", "-b", "main")
        self.count = 0

    def git(self, *arguments: str, date: str | None = None, stdin: bytes | None = None) -> str:
        env = {**self.env, **({"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {})}
        return run("git", "-C", str(self.path), *arguments, env=env, stdin=stdin).strip()

    def signing(self, signer: str | None) -> list[str]:
        """git -c options to sign as `signer`: "ssh:<name>", "pgp:<name>" or None (unsigned)."""
        if signer is None:
            return []
        kind, name = signer.split(":")
        if kind == "ssh":
            return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.keys.ssh[name]}"]
        program = [] if name != "old" else ["-c", f"gpg.program={self.keys.old_gpg}"]
        return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={self.keys.pgp[name]}", *program]

    def commit(self, signer: str | None, date: str | None = None) -> str:
        self.count += 1
        (self.path / "file").write_text(f"{self.count}\n")
        self.git("add", "file")
        self.git(*self.signing(signer), "commit", "-q", *(["-S"] if signer else []), "-m", f"change {self.count}", date=date)
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, signer: str | None, date: str, target: str = "HEAD") -> None:
        if signer is None:
            self.git("tag", name, target)
        else:
            self.git(*self.signing(signer), "tag", "-s", "-m", f"release {name}", name, target, date=date)

    def tamper(self, kind: str, object_id: str, old: bytes, new: bytes) -> str:
        """A copy of the object with `old` replaced by `new`, its signature kept; its id."""
        body = subprocess.run(
            ["git", "-C", str(self.path), "cat-file", kind, object_id], capture_output=True, check=True, timeout=60
        ).stdout
        assert old in body
        return self.git("hash-object", "-t", kind, "-w", "--stdin", stdin=body.replace(old, new, 1))


@pytest.fixture(scope="module")
def signed(keys: Keys, tmp_path_factory):
    """One repository with a commit signed by each key (the revoked key signs before it is
    revoked), then the keyrings exported with the revocation in them."""
    repo = Repo(tmp_path_factory.mktemp("signed"), keys)
    commits = {signer: repo.commit(signer) for signer in ("ssh:alice", "ssh:mallory", "pgp:alice", "pgp:mallory", "pgp:old", "pgp:revoked")}
    commits["unsigned"] = repo.commit(None)
    export_keyrings(keys)
    return repo, commits


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """composeflux's temporary directories go here, so each test can see they were removed."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory
    assert list(directory.iterdir()) == []


def both(keys: Keys) -> Trust:
    return Trust(allowed_signers=keys.allowed_signers, keyring=keys.keyring)


def rejected(reason: str, *args, **kwargs) -> SignatureError:
    function = kwargs.pop("function", verify_commit)
    with pytest.raises(SignatureError) as caught:
        function(*args, **kwargs)
    assert caught.value.reason == reason, str(caught.value)
    return caught.value


# -- commits --------------------------------------------------------------------------------------


def test_allowed_ssh_key_verifies_with_its_principal(signed, keys):
    repo, commits = signed
    verified = verify_commit(repo.path, commits["ssh:alice"], both(keys))
    assert verified == signatures.Verified(
        commit=commits["ssh:alice"], signer=f"ssh ED25519 {keys.ssh_fingerprints['alice']} (alice@example.org)",
        ref=commits["ssh:alice"], kind="commit",
    )  # fmt: skip


def test_the_ref_is_resolved_once_and_named(signed, keys):
    repo, commits = signed
    repo.git("update-ref", "refs/remotes/origin/main", commits["ssh:alice"])
    verified = verify_commit(repo.path, "refs/remotes/origin/main", Trust(keys.allowed_signers, None))
    assert (verified.commit, verified.ref) == (commits["ssh:alice"], "refs/remotes/origin/main")


def test_unsigned_commit(signed, keys):
    repo, commits = signed
    error = rejected("unsigned", repo.path, commits["unsigned"], both(keys))
    assert str(error) == f"commit {commits['unsigned'][:12]}: not signed"


def test_ssh_key_not_in_allowed_signers_is_unknown(signed, keys):
    repo, commits = signed
    error = rejected("unknown key", repo.path, commits["ssh:mallory"], both(keys))
    assert commits["ssh:mallory"][:12] in str(error) and keys.ssh_fingerprints["mallory"] in str(error)
    assert str(keys.allowed_signers) in str(error)


def test_expired_allowed_signers_entry_is_an_expired_key(signed, keys, tmp_path):
    repo, commits = signed
    expired = tmp_path / "allowed_signers"
    expired.write_text(f'alice@example.org valid-before="20200101" {(keys.directory / "alice.pub").read_text()}')
    error = rejected("expired key", repo.path, commits["ssh:alice"], Trust(expired, None))
    assert "expired" in str(error)


def test_openpgp_key_of_the_keyring_verifies_with_its_fingerprint(signed, keys):
    repo, commits = signed
    for keyring in (keys.keyring, keys.armored_keyring):
        verified = verify_commit(repo.path, commits["pgp:alice"], Trust(None, keyring))
        assert verified.signer == f"openpgp {keys.pgp['alice']} (Alice <alice@example.org>)"
        assert (verified.commit, verified.kind) == (commits["pgp:alice"], "commit")


def test_openpgp_key_not_in_the_keyring_is_unknown_even_if_the_hosts_gpg_knows_it(signed, keys, monkeypatch):
    """The signers' GnuPG home (with mallory's key, ultimately trusted) is the host's here."""
    repo, commits = signed
    monkeypatch.setenv("GNUPGHOME", str(keys.gnupg))
    error = rejected("unknown key", repo.path, commits["pgp:mallory"], both(keys))
    assert keys.pgp["mallory"] in str(error)
    # ...and the environment composeflux passes does not change that either.
    rejected("unknown key", repo.path, commits["pgp:mallory"], both(keys), env={"GNUPGHOME": str(keys.gnupg)})


def test_expired_openpgp_key(signed, keys):
    repo, commits = signed
    error = rejected("expired key", repo.path, commits["pgp:old"], both(keys))
    assert f"{keys.pgp['old']} (Old <old@example.org>)" in str(error)


def test_revoked_openpgp_key(signed, keys):
    repo, commits = signed
    error = rejected("revoked key", repo.path, commits["pgp:revoked"], both(keys))
    expected = f"signed by OpenPGP key {keys.pgp['revoked']} (Revoked <revoked@example.org>), which has been revoked"
    assert str(error) == f"commit {commits['pgp:revoked'][:12]}: {expected}"


@pytest.mark.parametrize("signer", ["ssh:alice", "pgp:alice"])
def test_commit_changed_after_signing_is_a_bad_signature(signed, keys, signer):
    repo, commits = signed
    forged = repo.tamper("commit", commits[signer], b"\n\nchange", b"\n\nforged change")
    repo.git("update-ref", "refs/heads/forged", forged)
    error = rejected("bad signature", repo.path, "refs/heads/forged", both(keys))
    assert forged[:12] in str(error)


def test_signature_of_a_kind_without_trusted_keys_is_unknown(signed, keys):
    repo, commits = signed
    error = rejected("unknown key", repo.path, commits["ssh:alice"], Trust(None, keys.keyring))
    assert "no allowed signers file" in str(error)
    error = rejected("unknown key", repo.path, commits["pgp:alice"], Trust(keys.allowed_signers, None))
    assert "no keyring" in str(error)


def test_no_user_or_repository_configuration_leaks_in(signed, keys, tmp_path, monkeypatch):
    """A gpg.program and an allowed-signers file that would accept anything, in ~/.gitconfig, in
    the repository's own config and in GIT_CONFIG_COUNT: none of them is used."""
    repo, commits = signed
    liar = tmp_path / "liar"
    liar.write_text(
        f"#!/bin/sh\necho '[GNUPG:] GOODSIG 0 X'\necho '[GNUPG:] VALIDSIG {keys.pgp['mallory']}'\necho '[GNUPG:] TRUST_ULTIMATE'\n"
    )
    liar.chmod(0o755)
    everyone = tmp_path / "everyone"
    everyone.write_text(f"* {(keys.directory / 'mallory.pub').read_text()}")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[gpg]\n\tprogram = {liar}\n[gpg "ssh"]\n\tallowedSignersFile = {everyone}\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.delenv("GIT_CONFIG_NOSYSTEM", raising=False)
    repo.git("config", "gpg.program", str(liar))
    try:
        environment = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "gpg.ssh.allowedSignersFile", "GIT_CONFIG_VALUE_0": str(everyone)}
        rejected("unknown key", repo.path, commits["pgp:mallory"], both(keys), env=environment)
        rejected("unknown key", repo.path, commits["ssh:mallory"], both(keys), env=environment)
        assert verify_commit(repo.path, commits["pgp:alice"], both(keys), env=environment).signer.startswith("openpgp ")
    finally:
        repo.git("config", "--unset", "gpg.program")


def test_no_keys_configured(signed):
    repo, commits = signed
    rejected("no keys configured", repo.path, commits["ssh:alice"], Trust(None, None))


def test_a_hanging_gpg_is_killed_at_the_deadline(signed, keys, tmp_path, monkeypatch):
    repo, commits = signed
    fake = tmp_path / "bin" / "gpg"
    fake.parent.mkdir()
    pids = tmp_path / "pids"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwait\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(signatures, "TIMEOUT", 1.0)
    start = time.monotonic()
    with pytest.raises(CannotVerify, match="gpg did not finish within 1 s") as caught:
        verify_commit(repo.path, commits["pgp:alice"], both(keys))
    assert caught.value.reason == "cannot verify"
    assert time.monotonic() - start < 5
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not gone(pid):
            time.sleep(0.05)
        assert gone(pid), f"process {pid} survived"


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet (pid 1 of a container may not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


# -- tags -----------------------------------------------------------------------------------------


@pytest.fixture
def tagged(keys, signed, tmp_path):
    """v1 (OpenPGP, alice) < v2 (SSH, bob) < v3 (SSH, mallory: unknown) < v4 (lightweight), by
    date; v0 (SSH, alice) is the oldest. `signed` has exported the keyrings already."""
    repo = Repo(tmp_path / "tags", keys)
    repo.commit("ssh:alice", date="2024-01-01T00:00:00Z")
    repo.tag("v0", "ssh:alice", date="2024-01-01T00:00:00Z")
    repo.tag("v1", "pgp:alice", date="2024-02-01T00:00:00Z")
    v2 = repo.commit(None, date="2024-03-01T00:00:00Z")
    repo.tag("v2", "ssh:bob", date="2024-03-01T00:00:00Z")
    repo.commit(None, date="2024-04-01T00:00:00Z")
    repo.tag("v3", "ssh:mallory", date="2024-04-01T00:00:00Z")
    repo.commit(None, date="2024-05-01T00:00:00Z")
    repo.tag("v4", None, date="2024-05-01T00:00:00Z")
    return repo, v2


def test_the_newest_valid_tag_wins_and_the_newer_ones_are_logged(tagged, keys, caplog):
    repo, v2 = tagged
    caplog.set_level(logging.WARNING, logger="composeflux.signatures")
    verified = newest_verified_tag(repo.path, "v*", both(keys))
    assert verified == signatures.Verified(
        commit=v2, signer=f"ssh ED25519 {keys.ssh_fingerprints['bob']} (bob@example.org)", ref="refs/tags/v2", kind="tag"
    )
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Skipping tag v4 ") and "lightweight" in warnings[0]
    assert warnings[1].startswith("Skipping tag v3 ") and keys.ssh_fingerprints["mallory"] in warnings[1]


def test_only_the_tags_own_signature_counts(tagged, keys):
    """v1 points at a commit signed by alice's SSH key; with only the keyring trusted, v1's own
    OpenPGP signature is what makes it valid (v2, v3 are SSH-signed: unknown keys)."""
    repo, _ = tagged
    verified = newest_verified_tag(repo.path, "v*", Trust(None, keys.keyring))
    assert (verified.ref, verified.signer) == ("refs/tags/v1", f"openpgp {keys.pgp['alice']} (Alice <alice@example.org>)")
    assert verified.commit == repo.git("rev-parse", "v1^{commit}")


def test_a_tag_moved_to_another_commit_is_a_bad_signature(tagged, keys):
    repo, v2 = tagged
    newest = repo.git("rev-parse", "HEAD")
    forged = repo.tamper("tag", repo.git("rev-parse", "refs/tags/v2"), f"object {v2}".encode(), f"object {newest}".encode())
    repo.git("update-ref", "refs/tags/v9", forged)  # same tagger date as v2, sorted first by version
    assert newest_verified_tag(repo.path, "v[29]", both(keys)).ref == "refs/tags/v2"
    error = rejected("no valid tag", repo.path, "v9", both(keys), function=newest_verified_tag)
    assert "v9: bad SSH signature" in str(error)


def test_a_signed_tag_under_another_name_is_not_valid(tagged, keys):
    """v1's signed tag object pushed again as v8 is still v1: not a release v8."""
    repo, _ = tagged
    repo.git("update-ref", "refs/tags/v8", repo.git("rev-parse", "refs/tags/v1"))
    error = rejected("no valid tag", repo.path, "v8", both(keys), function=newest_verified_tag)
    assert "v8: signed as tag v1, not as v8" in str(error)


def test_no_valid_tag_names_the_pattern_and_the_reasons(tagged, keys):
    repo, _ = tagged
    error = rejected("no valid tag", repo.path, "v[34]", both(keys), function=newest_verified_tag)
    message = str(error)
    assert "refs/tags/v[34]" in message
    assert message.index("v4: ") < message.index("v3: ") and "lightweight" in message and "not in" in message
    error = rejected("no valid tag", repo.path, "release-*", both(keys), function=newest_verified_tag)
    assert str(error) == "no tag matches refs/tags/release-*"


def test_an_unsigned_annotated_tag_is_not_valid(tagged, keys):
    repo, _ = tagged
    repo.git("tag", "-a", "-m", "not signed", "v5")
    error = rejected("no valid tag", repo.path, "v5", both(keys), function=newest_verified_tag)
    assert "v5: an annotated tag without a signature" in str(error)


def test_newest_means_the_tags_date_not_its_name(tagged, keys):
    """w9 was made after w10: it wins, though its version is the lower one; w7 and w8 have the
    same date, and the higher version goes first."""
    repo, _ = tagged
    repo.tag("w10", "ssh:alice", date="2024-06-01T00:00:00Z")
    repo.tag("w9", "ssh:alice", date="2024-07-01T00:00:00Z")
    assert newest_verified_tag(repo.path, "w*", both(keys)).ref == "refs/tags/w9"
    repo.tag("w7", "ssh:alice", date="2024-08-01T00:00:00Z")
    repo.tag("w8", "ssh:alice", date="2024-08-01T00:00:00Z")
    assert newest_verified_tag(repo.path, "w*", both(keys)).ref == "refs/tags/w8"
