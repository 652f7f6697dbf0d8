"""composeflux.signatures without any key: reading gpg's status lines and git's SSH output (as the
real tools print them, copied from git 2.39, gpg 2.2.40 and OpenSSH 9.2), the trust settings, and
what needs no signature check at all (unsigned commits, lightweight and unsigned tags, nothing
trusted), with real local git. The real signatures: tests/integration/test_signatures.py."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from composeflux import signatures
from composeflux.signatures import CannotVerify, SignatureError, Trust, read_gpg_status, read_ssh_output

ALICE = "32F803F3F95EF8FE6FD606B100E8953D3A56AC8A"
SUBKEY = "1111111111111111111111111111111111111111"
REVOKED = "EE08AA04344C30B645206AB39742FFC3854CB733"
OLD = "0EC67CC2B66D942369DB9EB1B83D5E1C9B406E8C"
TRUSTED = frozenset({ALICE})
KEYRING = Path("/etc/composeflux/trusted-keys.gpg")
SIGNERS = Path("/etc/composeflux/allowed_signers")


def status(*lines: str) -> str:
    return "".join(f"[GNUPG:] {line}\n" for line in ("NEWSIG", *lines))


GOOD = status(
    f"KEY_CONSIDERED {ALICE} 0",
    "SIG_ID nyEZVt5nN8nJtGRG7JQ92AfIcZM 2026-12-02 1796178493",
    "GOODSIG 00E8953D3A56AC8A Alice <alice@example.org>",
    f"VALIDSIG {ALICE} 2026-12-02 1796178493 0 4 0 22 8 00 {ALICE}",
    "TRUST_ULTIMATE 0 pgp",
)


def test_good_openpgp_signature():
    verdict = read_gpg_status(GOOD, True, TRUSTED, KEYRING)
    assert verdict == signatures.Verdict(signer=f"openpgp {ALICE} (Alice <alice@example.org>)")


def test_good_signature_by_a_subkey_names_the_primary_key():
    text = GOOD.replace(f"VALIDSIG {ALICE}", f"VALIDSIG {SUBKEY}")
    assert read_gpg_status(text, True, TRUSTED, KEYRING).signer == f"openpgp {ALICE} (Alice <alice@example.org>) with subkey {SUBKEY}"


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        (status("BADSIG 00E8953D3A56AC8A Alice <alice@example.org>"), "bad signature", "bad signature by OpenPGP key 00E8953D3A56AC8A"),
        (
            status(
                "REVKEYSIG 9742FFC3854CB733 Rev <rev@example.org>",
                f"VALIDSIG {REVOKED} 2026-12-02 1796178493 0 4 0 22 8 00 {REVOKED}",
                "KEYREVOKED",
                "TRUST_ULTIMATE 0 pgp",
            ),
            "revoked key",
            f"OpenPGP key {REVOKED} (Rev <rev@example.org>), which has been revoked",
        ),
        (
            status(
                "KEYEXPIRED 1577923200",
                "EXPKEYSIG B83D5E1C9B406E8C Old <old@example.org>",
                f"VALIDSIG {OLD} 2020-01-01 1577840400 0 4 0 22 8 00 {OLD}",
            ),
            "expired key",
            "(Old <old@example.org>), which has expired",
        ),
        (status("EXPSIG 00E8953D3A56AC8A Alice <alice@example.org>"), "expired key", "the signature by OpenPGP key 00E8953D3A56AC8A"),
        (
            status(
                "ERRSIG C6CEE8166C96A94B 22 8 00 1796178493 9 5B68BC3B4122082787232D06C6CEE8166C96A94B",
                "NO_PUBKEY C6CEE8166C96A94B",
            ),
            "unknown key",
            f"OpenPGP key 5B68BC3B4122082787232D06C6CEE8166C96A94B, which is not in {KEYRING}",
        ),
        (status("ERRSIG C6CEE8166C96A94B 99 8 00 1796178493 4 -"), "bad signature", "C6CEE8166C96A94B (ERRSIG code 4)"),
        ("error: no signature found\n", "unsigned", "not signed"),
        ("", "unsigned", "not signed"),
        ("error: something else\n", "bad signature", "something else"),
    ],
)
def test_openpgp_refusals(text, reason, detail):
    verdict = read_gpg_status(text, False, TRUSTED, KEYRING)
    assert (verdict.signer, verdict.reason) == (None, reason)
    assert detail in verdict.detail


def test_a_good_signature_needs_git_a_trusted_key_and_full_validity():
    assert read_gpg_status(GOOD, False, TRUSTED, KEYRING).reason == "bad signature"
    assert read_gpg_status(GOOD, True, frozenset({SUBKEY}), KEYRING).reason == "unknown key"
    untrusted = read_gpg_status(GOOD.replace("TRUST_ULTIMATE", "TRUST_UNDEFINED"), True, TRUSTED, KEYRING)
    assert (untrusted.reason, untrusted.detail) == ("unknown key", f"gpg does not count key {ALICE} as valid (TRUST_UNDEFINED)")
    assert read_gpg_status(GOOD.replace("TRUST_ULTIMATE", "TRUST_FULLY"), True, TRUSTED, KEYRING).signer is not None
    # A bad signature anywhere (a second signature) outweighs a good one.
    assert read_gpg_status(GOOD + status("BADSIG 00E8953D3A56AC8A Alice"), True, TRUSTED, KEYRING).reason == "bad signature"


SSH_KEY = "SHA256:bXOQgKsWdiA1eAkmz5JKMMnhQeipNzHNxci/oXBJWzk"


def test_good_ssh_signature():
    text = f'Good "git" signature for alice@example.org with ED25519 key {SSH_KEY}\n'
    assert read_ssh_output(text, True, SIGNERS).signer == f"ssh ED25519 {SSH_KEY} (alice@example.org)"
    assert read_ssh_output(text, False, SIGNERS).signer is None


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        # The key is in no entry: git still checks the signature, and says so, then refuses.
        (
            f'Good "git" signature with ED25519 key {SSH_KEY}\nNo principal matched.\n',
            "unknown key",
            f"{SSH_KEY}, which is not in {SIGNERS}",
        ),
        (
            f'Good "git" signature with ED25519 key {SSH_KEY}\n{SIGNERS}:1: key has expired: verify time 2026-12-02T02:26:42 > '
            "valid-before 2020-01-01T00:00:00\nNo principal matched.\n",
            "expired key",
            "whose entry in /etc/composeflux/allowed_signers has expired",
        ),
        (
            f'Good "git" signature with ED25519 key {SSH_KEY}\n{SIGNERS}:1: key is not yet valid: verify time 2026-12-02T02:26:42 < '
            "valid-after 2099-01-01T00:00:00\nNo principal matched.\n",
            "unknown key",
            "is not valid yet",
        ),
        (
            f'Could not verify signature.\n{SIGNERS}:1: key is not permitted for use in signature namespace "git"\n',
            "unknown key",
            "does not allow to sign for git",
        ),
        ("Could not verify signature.\nSignature verification failed: incorrect signature\n", "bad signature", "incorrect signature"),
        ("Could not verify signature.\nCouldn't verify signature: namespace does not match\n", "bad signature", "namespace does not match"),
        ("Could not verify signature.\n", "bad signature", "does not verify (Could not verify signature.)"),
        ("error: no signature found\n", "unsigned", "not signed"),
    ],
)
def test_ssh_refusals(text, reason, detail):
    verdict = read_ssh_output(text, False, SIGNERS)
    assert (verdict.signer, verdict.reason) == (None, reason)
    assert detail in verdict.detail


# -- settings -------------------------------------------------------------------------------------


def test_default_trust_takes_the_default_files_that_exist(tmp_path, monkeypatch):
    signers, keyring = tmp_path / "allowed_signers", tmp_path / "trusted-keys.gpg"
    monkeypatch.setattr(signatures, "DEFAULT_ALLOWED_SIGNERS", signers)
    monkeypatch.setattr(signatures, "DEFAULT_KEYRING", keyring)
    assert signatures.default_trust({}) == Trust(None, None)
    signers.write_text("")
    assert signatures.default_trust({"VERIFY_KEYRING": " "}) == Trust(signers, None)
    keyring.write_bytes(b"")
    assert signatures.default_trust({}) == Trust(signers, keyring)


def test_explicit_trust_files_must_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(signatures, "DEFAULT_ALLOWED_SIGNERS", tmp_path / "none")
    monkeypatch.setattr(signatures, "DEFAULT_KEYRING", tmp_path / "none")
    keyring = tmp_path / "keys.asc"
    keyring.write_text("")
    assert signatures.default_trust({"VERIFY_KEYRING": str(keyring)}) == Trust(None, keyring)
    with pytest.raises(ValueError, match=r"^ALLOWED_SIGNERS .*/missing does not exist$"):
        signatures.default_trust({"ALLOWED_SIGNERS": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match=r"^VERIFY_KEYRING .* is not a regular file$"):
        signatures.default_trust({"VERIFY_KEYRING": str(tmp_path)})
    with pytest.raises(ValueError, match=r"^ALLOWED_SIGNERS must be an absolute path, not 'keys'$"):
        signatures.default_trust({"ALLOWED_SIGNERS": "keys"})


def test_describe_trust():
    assert signatures.describe_trust(Trust(None, None)) == "no keys"
    assert signatures.describe_trust(Trust(SIGNERS, KEYRING)) == f"SSH keys of {SIGNERS} and OpenPGP keys of {KEYRING}"
    assert signatures.describe_trust(Trust(None, KEYRING)) == f"OpenPGP keys of {KEYRING}"


# -- what needs no key ----------------------------------------------------------------------------


def git(repo: Path, *arguments: str) -> str:
    environment = {
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *arguments], env={**os.environ, **environment}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository with one unsigned commit, a lightweight tag and an unsigned annotated tag;
    composeflux's temporary directories are checked to be gone afterwards."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "file").write_text("x\n")
    git(path, "add", "file")
    git(path, "commit", "-q", "-m", "unsigned")
    git(path, "tag", "v1")
    git(path, "tag", "-a", "-m", "annotated", "v2")
    yield path
    assert list(temporary.iterdir()) == []


@pytest.fixture
def trust(tmp_path) -> Trust:
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    return Trust(signers, None)


def test_unsigned_commit(repo, trust):
    commit = git(repo, "rev-parse", "HEAD")
    with pytest.raises(SignatureError) as caught:
        signatures.verify_commit(repo, "refs/heads/main", trust)
    assert (caught.value.reason, str(caught.value)) == ("unsigned", f"commit {commit[:12]} (refs/heads/main): not signed")


def test_nothing_trusted(repo):
    for call in (
        lambda: signatures.verify_commit(repo, "HEAD", Trust(None, None)),
        lambda: signatures.newest_verified_tag(repo, "v*", Trust(None, None)),
    ):
        with pytest.raises(SignatureError) as caught:
            call()
        assert caught.value.reason == "no keys configured"


def test_a_missing_revision_cannot_be_verified(repo, trust):
    with pytest.raises(CannotVerify) as caught:
        signatures.verify_commit(repo, "refs/remotes/origin/main", trust)
    assert caught.value.reason == "cannot verify" and "refs/remotes/origin/main" in str(caught.value)
    with pytest.raises(CannotVerify, match="cannot verify --help"):
        signatures.verify_commit(repo, "--help", trust)


def test_lightweight_and_unsigned_tags_are_never_valid(repo, trust, caplog):
    with pytest.raises(SignatureError) as caught:
        signatures.newest_verified_tag(repo, "v*", trust)
    assert caught.value.reason == "no valid tag"
    assert "lightweight" in str(caught.value) and "an annotated tag without a signature" in str(caught.value)
    assert sum("Skipping tag" in record.getMessage() for record in caplog.records) == 2


@pytest.mark.parametrize("pattern", ["", "refs/tags/v*", "/v*", "--sort=x"])
def test_tag_pattern_is_relative_to_refs_tags(repo, trust, pattern):
    with pytest.raises(ValueError, match="relative to refs/tags/"):
        signatures.newest_verified_tag(repo, pattern, trust)


def test_signature_kinds_in_objects():
    commit = b"tree 0\nauthor x\ngpgsig -----BEGIN SSH SIGNATURE-----\n U1NI\n -----END SSH SIGNATURE-----\n\nmessage\n"
    assert signatures._commit_signature_kind(commit, 40) == "ssh"
    assert signatures._commit_signature_kind(commit, 64) is None  # a SHA-256 repository verifies gpgsig-sha256
    assert signatures._commit_signature_kind(b"tree 0\n\ngpgsig -----BEGIN PGP SIGNATURE-----\n", 40) is None  # in the message
    tag = b"object 0\ntype commit\n\nrelease\n-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n"
    assert signatures._tag_signature_kind(tag) == "openpgp"
    assert signatures._tag_signature_kind(b"object 0\n\n-----BEGIN SIGNED MESSAGE-----\n") == "x509"
    assert signatures._tag_signature_kind(b"object 0\ntype commit\n\nrelease\n") is None
