"""VERIFY_SIGNATURES through a whole in-process sync (the fast lane's harness: local Git, a fake
`docker compose`): real SSH signatures made by `git commit -S` with `ssh-keygen` keys, verified by
git against an allowed-signers file. What is refused changes nothing; what is verified is labelled
and recorded. Here rather than in the fast lane: every test makes keys and runs ssh-keygen and git
verify-commit, which the lane's time cannot afford. OpenPGP against the real engine:
test_signed_sync.py; the verification itself: test_signatures.py."""

from __future__ import annotations

import subprocess

import pytest

from composeflux import state
from composeflux.deployed import SIGNER
from composeflux.errors import ConfigError, ExitStatus
from tests.conftest import service_yaml
from tests.unit.conftest import Runner, isolated_git, quiet_git_config  # noqa: F401 -- the fast lane's fixtures


@pytest.fixture
def cfx(repo, tmp_path):
    """An in-process sync with a fake Compose (tests/unit/conftest.py), not the real CLI."""
    return Runner(repo, tmp_path)


def keypair(directory, name):
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir()
    alice, mallory = keypair(directory, "alice"), keypair(directory, "mallory")
    allowed = directory / "allowed_signers"
    allowed.write_text(f"alice@example.org {(directory / 'alice.pub').read_text()}")
    return {"alice": alice, "mallory": mallory, "allowed": allowed}


def signing(repo, key) -> None:
    """Commits (and tags) of the test repository from now on are signed with `key` (None: unsigned)."""
    if key is None:
        repo.git("config", "commit.gpgsign", "false")
        repo.git("config", "tag.gpgsign", "false")
        return
    repo.git("config", "gpg.format", "ssh")
    repo.git("config", "user.signingkey", str(key))
    repo.git("config", "commit.gpgsign", "true")


def verifying(keys, mode="commit", **more):
    return {"VERIFY_SIGNATURES": mode, "ALLOWED_SIGNERS": str(keys["allowed"]), **more}


def test_a_head_signed_by_an_allowed_key_is_deployed_and_labelled(cfx, repo, keys):
    repo.add_stack("web")
    repo.commit("init")  # the first commit, before signing is set up: never deployed
    signing(repo, keys["alice"])
    repo.add_stack("web", environment={"V": "1"})
    commit = repo.commit("signed")
    assert cfx(**verifying(keys)) is ExitStatus.OK
    labels = cfx.compose.projects["web"]["services"]["app"]["labels"]
    assert labels[SIGNER].startswith("ssh ED25519 SHA256:") and "alice@example.org" in labels[SIGNER]
    last = cfx.state().last_sync
    assert last.commit == commit and last.signer == labels[SIGNER]


@pytest.mark.parametrize("who", [None, "mallory"])
def test_an_unsigned_or_untrusted_head_changes_nothing(cfx, repo, keys, who):
    signing(repo, keys["alice"])
    repo.add_stack("web")
    repo.add_stack("db")
    good = repo.commit("signed")
    assert cfx(**verifying(keys)) is ExitStatus.OK
    signing(repo, keys.get(who) if who else None)
    repo.add_stack("web", environment={"V": "evil"})
    repo.remove("db")
    bad = repo.commit("not by alice")
    ups = len(cfx.compose.called("up"))
    assert cfx(**verifying(keys)) is ExitStatus.UNVERIFIED
    assert len(cfx.compose.called("up")) == ups and cfx.compose.called("down") == []  # nothing deployed or pruned
    assert "evil" not in str(cfx.compose.projects["web"])
    last = cfx.state().last_sync
    reason = "unsigned" if who is None else "unknown key"
    assert last.result == "error" and last.status == ExitStatus.UNVERIFIED
    assert last.commit == bad  # the commit refused, for status and the event
    assert f"commit {bad[:12]}" in last.summary and reason in last.summary
    clone = cfx.state_dir / "repo"
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert head == good  # the clone stays at the last verified commit
    assert (clone / repo.stack_path / "db" / "compose.yaml").exists()


def test_a_force_push_to_an_unsigned_commit_is_refused(cfx, repo, keys):
    repo.add_stack("web")
    unsigned = repo.commit("unsigned")
    signing(repo, keys["alice"])
    repo.add_stack("web", environment={"V": "2"})
    repo.commit("signed")
    assert cfx(**verifying(keys)) is ExitStatus.OK
    repo.force_push(unsigned)
    assert cfx(**verifying(keys)) is ExitStatus.UNVERIFIED
    assert cfx.compose.projects["web"]["services"]["app"]["environment"]["V"] == "2"


def test_a_first_clone_of_an_unsigned_head_checks_nothing_out(cfx, repo, keys):
    repo.add_stack("web")
    repo.commit("unsigned")
    assert cfx(**verifying(keys)) is ExitStatus.UNVERIFIED
    assert cfx.compose.called("up") == []
    clone = cfx.state_dir / "repo"
    assert not (clone / repo.stack_path).exists()
    assert cfx(dry_run=True, **verifying(keys)) is ExitStatus.UNVERIFIED  # a dry run says the same


def test_tag_mode_deploys_the_newest_validly_signed_tag(cfx, repo, keys):
    signing(repo, keys["alice"])
    repo.write("web/compose.yaml", service_yaml(environment={"V": "1"}))
    repo.commit("v1")
    repo.git("tag", "-s", "-m", "v1", "v1")
    repo.write("web/compose.yaml", service_yaml(environment={"V": "2"}))
    repo.commit("v2")
    repo.git("tag", "-s", "-m", "v2", "v2")
    repo.write("web/compose.yaml", service_yaml(environment={"V": "3"}))
    repo.commit("v3, tagged without a signature")
    repo.git("tag", "v3")
    repo.git("push", "-q", "--force", "origin", "--tags")
    assert cfx(**verifying(keys, "tag", VERIFY_TAG_PATTERN="v*")) is ExitStatus.OK
    assert cfx.compose.projects["web"]["services"]["app"]["environment"]["V"] == "2"
    assert cfx.state().last_sync.signer.startswith("ssh ED25519")


def test_verifying_needs_trusted_keys(cfx, repo, tmp_path):
    repo.add_stack("web")
    repo.commit()
    with pytest.raises(ConfigError, match="VERIFY_SIGNATURES=commit needs trusted keys"):
        cfx(VERIFY_SIGNATURES="commit")
    with pytest.raises(ConfigError, match="ALLOWED_SIGNERS"):
        cfx(VERIFY_SIGNATURES="commit", ALLOWED_SIGNERS=str(tmp_path / "missing"))
    assert state.read(cfx.state_dir).last_sync is None


def test_an_expired_ssh_key_cannot_sign_by_backdating_the_commit(cfx, repo, keys, monkeypatch):
    """git checks valid-before at the commit's own date, which whoever signs chooses."""
    key = (keys["allowed"].parent / "alice.pub").read_text()
    keys["allowed"].write_text(f'alice@example.org valid-before="20200101" {key}')
    signing(repo, keys["alice"])
    repo.add_stack("web")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2019-06-01T12:00:00Z")
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2019-06-01T12:00:00Z")
    repo.commit("backdated")
    assert cfx(**verifying(keys)) is ExitStatus.UNVERIFIED
    assert "unknown key" in cfx.state().last_sync.summary


def test_signer_validity_is_judged_now():
    import datetime

    from composeflux.signatures import signer_valid_at

    now = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"
    assert signer_valid_at(f"alice@example.org {key}", now)
    assert signer_valid_at(f'alice@example.org valid-before="20270101" {key}', now)
    assert not signer_valid_at(f'alice@example.org valid-before="20260101Z" {key}', now)
    assert not signer_valid_at(f'alice@example.org namespaces="git",valid-after="202612030000Z" {key}', now)
    assert signer_valid_at(f'alice@example.org namespaces="git",valid-after="20261201000000Z" {key}', now)
    assert signer_valid_at("# a comment valid-before=20000101", now) and signer_valid_at("", now)
