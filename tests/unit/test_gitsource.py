"""The Git source (composeflux.gitsource): the environment git runs with, and real clones and
updates of a local bare repository (local paths: no network, no server)."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from composeflux import config as configuration
from composeflux.config import DEFAULT_HTTPS_USER
from composeflux.errors import GitSourceError
from composeflux.gitsource import GitSource, git_environment

BRANCH = "deploy"
TIMEOUT = 30




def load(tmp_path: Path, url: str = "https://git.example.org/home/stacks.git", overrides=None, **settings: str):
    environ = {
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
        "GIT_REPO_URL": url,
        "STACK_PATH": "stacks",
    }
    return configuration.load(config_file=None, environ={**environ, **settings}, overrides=overrides or {})


def ssh_command(env: dict[str, str]) -> list[str]:
    return shlex.split(env["GIT_SSH_COMMAND"])


def ssh_options(env: dict[str, str]) -> list[str]:
    words = ssh_command(env)
    return [words[i + 1] for i, word in enumerate(words) if word == "-o"]


def git_config_pairs(env: dict[str, str]) -> list[tuple[str, str]]:
    count = int(env["GIT_CONFIG_COUNT"])
    assert f"GIT_CONFIG_KEY_{count}" not in env and f"GIT_CONFIG_VALUE_{count}" not in env
    return [(env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"]) for n in range(count)]


def headers(env: dict[str, str]) -> list[str]:
    return [value for key, value in git_config_pairs(env) if key.lower() == "http.extraheader"]


def basic(user: str, token: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


# -- git_environment ------------------------------------------------------------------------------


def test_git_never_prompts_and_ssh_runs_in_batch_mode(tmp_path):
    env = git_environment(load(tmp_path), None)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_ASKPASS"] == "" and env["SSH_ASKPASS"] == ""
    assert ssh_command(env)[0] == "ssh"
    options = ssh_options(env)
    assert "BatchMode=yes" in options
    assert "StrictHostKeyChecking=yes" in options  # the default
    assert "UserKnownHostsFile=/etc/composeflux/known_hosts" in options


def test_host_key_checking_and_known_hosts_come_from_the_config(tmp_path):
    known = tmp_path / "known_hosts"
    cfg = load(tmp_path, GIT_SSH_KNOWN_HOSTS=str(known), overrides={"GIT_SSH_HOST_KEY_CHECKING": "accept-new"})
    options = ssh_options(git_environment(cfg, None))
    assert "StrictHostKeyChecking=accept-new" in options and "StrictHostKeyChecking=yes" not in options
    assert f"UserKnownHostsFile={known}" in options


def test_without_a_key_ssh_chooses_no_identity(tmp_path):
    env = git_environment(load(tmp_path), None)
    assert "IdentitiesOnly=yes" not in ssh_options(env)
    assert "-i" not in ssh_command(env)


@pytest.mark.parametrize("name", ["id_ed25519", "deploy keys/id ed25519", "it's a key/$HOME `x`"])
def test_a_key_is_the_only_identity_and_one_argument(tmp_path, name):
    key = tmp_path / name
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("not really a key\n")
    env = git_environment(load(tmp_path), key)
    words = ssh_command(env)
    assert "IdentitiesOnly=yes" in ssh_options(env)
    assert words.count("-i") == 1 and words[words.index("-i") + 1] == str(key)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
def test_ssh_itself_gets_the_key_path_with_spaces_whole(tmp_path):
    """git runs GIT_SSH_COMMAND through the shell; `ssh -G` prints the options it parsed."""
    key = tmp_path / "deploy keys" / "id ed25519"
    key.parent.mkdir()
    key.write_text("not really a key\n")
    env = git_environment(load(tmp_path), key)
    result = subprocess.run(
        ["sh", "-c", env["GIT_SSH_COMMAND"] + ' -G "$@"', "ssh", "git.example.invalid"],
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parsed = result.stdout.splitlines()
    assert f"identityfile {key}" in parsed
    assert "batchmode yes" in parsed and "identitiesonly yes" in parsed


def test_a_token_becomes_a_basic_auth_header_with_the_default_user(tmp_path):
    token = "tok-0123456789"
    env = git_environment(load(tmp_path, GIT_TOKEN=token), None)
    assert DEFAULT_HTTPS_USER == "x-access-token"
    assert headers(env) == [basic("x-access-token", token)]
    assert not any(token in value for value in env.values())  # only its base64 form, in the header


def test_a_token_with_a_username(tmp_path):
    env = git_environment(load(tmp_path, GIT_TOKEN="tok-0123456789", GIT_USERNAME="deploy-bot"), None)
    assert headers(env) == [basic("deploy-bot", "tok-0123456789")]


def test_no_header_without_a_token(tmp_path):
    env = git_environment(load(tmp_path, GIT_USERNAME="deploy-bot"), None)
    assert headers(env) == []
    assert not any("Authorization" in value for value in env.values())


def test_git_reads_the_header_from_the_environment(tmp_path):
    """The GIT_CONFIG_COUNT/KEY/VALUE triplets are what git itself takes as configuration."""
    env = git_environment(load(tmp_path, GIT_TOKEN="tok-0123456789"), None)
    result = subprocess.run(
        ["git", "config", "--get-all", "http.extraHeader"],
        capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **env}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [basic("x-access-token", "tok-0123456789")]


# -- credentials in the URL -----------------------------------------------------------------------


def test_credentials_in_the_url_are_split_off_and_known_to_the_masker(tmp_path):
    cfg = load(tmp_path, "https://bot:p%40ss-w0rd@host/repo.git")
    assert cfg.repo_url == "https://host/repo.git"
    assert cfg.https_username == "bot" and cfg.https_token == "p@ss-w0rd"
    header_value = base64.b64encode(b"bot:p@ss-w0rd").decode()
    assert {"p@ss-w0rd", "p%40ss-w0rd", header_value} <= cfg.credentials
    assert headers(git_environment(cfg, None)) == [f"Authorization: Basic {header_value}"]
    masked = cfg.masker(f"fatal: https://bot:p%40ss-w0rd@host/repo.git: p@ss-w0rd; Authorization: Basic {header_value}")
    assert "p@ss-w0rd" not in masked and "p%40ss-w0rd" not in masked and header_value not in masked


def test_a_credential_too_short_to_mask_is_used_with_a_warning_naming_its_key(tmp_path, caplog):
    cfg = load(tmp_path, "https://bot:p%40ss@host/repo.git")
    assert cfg.https_token == "p@ss" and "p@ss" in cfg.credentials
    assert "the password in GIT_REPO_URL is shorter than MASK_MIN_LENGTH (6 characters): used, but not masked" in caplog.text
    assert "p@ss" not in caplog.text


# -- real clones and updates of a local repository ------------------------------------------------


class Remote:
    """A bare repository on branch `deploy`, and a work tree to commit and push from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.run("git", "init", "-q", "--bare", f"--initial-branch={BRANCH}", str(self.bare))
        self.run("git", "init", "-q", f"--initial-branch={BRANCH}", str(self.work))
        self.git("remote", "add", "origin", str(self.bare))

    @staticmethod
    def run(*command: str, cwd: Path | None = None) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
        }  # fmt: skip
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=cwd).stdout.strip()

    def git(self, *arguments: str) -> str:
        return self.run("git", "-C", str(self.work), *arguments)

    def commit(self, files: dict[str, str | None], message: str) -> str:
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "--force", "origin", f"HEAD:{BRANCH}")
        return self.head()

    def head(self) -> str:
        return self.run("git", "-C", str(self.bare), "rev-parse", f"refs/heads/{BRANCH}")

    def object_id(self, path: str) -> str:
        return self.run("git", "-C", str(self.bare), "rev-parse", f"refs/heads/{BRANCH}:{path}")


@pytest.fixture
def remote(tmp_path) -> Remote:
    remote = Remote(tmp_path / "git")
    remote.commit({"stacks/web/compose.yaml": "services: {app: {image: nginx}}\n", "README.md": "hello\n"}, "first commit")
    return remote


def source_for(tmp_path: Path, url: str | Path, **settings: str) -> GitSource:
    return GitSource(load(tmp_path, str(url), GIT_BRANCH=BRANCH, **settings), None)


def test_a_first_sync_clones_the_remote_head(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    checkout = source.sync()
    clone = tmp_path / "state" / "repo"
    assert checkout.path == clone.resolve()
    assert checkout.commit == remote.head()
    assert checkout.subject == "first commit"
    assert checkout.object_ids["stacks/web/compose.yaml"] == remote.object_id("stacks/web/compose.yaml")
    assert checkout.object_ids["stacks/web"] == remote.object_id("stacks/web")
    assert checkout.object_ids["."] == remote.run("git", "-C", str(remote.bare), "rev-parse", f"refs/heads/{BRANCH}^{{tree}}")
    assert (clone / "stacks/web/compose.yaml").read_text() == "services: {app: {image: nginx}}\n"
    assert not [p for p in clone.parent.iterdir() if p.name.startswith(".repo.clone-")]  # no temporary clone left


def test_later_syncs_follow_new_commits_and_clean_untracked_files(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    first = source.sync()
    clone = first.path
    (clone / "stacks/web/junk.txt").write_text("left behind\n")
    (clone / "stacks/web/data").mkdir()
    (clone / "stacks/web/data/db.sqlite").write_text("a container's data\n")
    (clone / "README.md").write_text("edited on the host\n")
    second_commit = remote.commit({"stacks/web/compose.yaml": "services: {app: {image: nginx:1.28}}\n"}, "second commit")

    migrated = []
    second = source.sync(migrate=migrated.append)
    assert migrated == []  # a clone composeflux made itself is its render checkout, nothing else
    assert second.commit == second_commit != first.commit
    assert second.object_ids["stacks/web/compose.yaml"] == remote.object_id("stacks/web/compose.yaml")
    assert second.object_ids["stacks/web/compose.yaml"] != first.object_ids["stacks/web/compose.yaml"]
    assert (clone / "stacks/web/compose.yaml").read_text().endswith("nginx:1.28}}\n")
    assert (clone / "README.md").read_text() == "hello\n"  # hard reset
    # Cleaned completely: no container runs from this checkout (each stack has its own tree).
    assert not (clone / "stacks/web/junk.txt").exists() and not (clone / "stacks/web/data").exists()


def test_a_checkout_of_composeflux_0_1_is_migrated_once_after_the_fetch(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    clone = source.sync().path
    (clone / ".git" / "composeflux-render-checkout").unlink()  # as 0.1 left it
    (clone / "stacks/web/data").mkdir()
    (clone / "stacks/web/data/db.sqlite").write_text("a container's data\n")
    seen = []

    def migrate(path):
        seen.append(sorted(p.name for p in (path / "stacks/web").iterdir()))
        (path / "stacks/web/data/db.sqlite").rename(tmp_path / "moved.sqlite")

    source.sync(migrate=migrate)
    assert seen == [["compose.yaml", "data"]]  # handed over before anything was cleaned
    assert (tmp_path / "moved.sqlite").exists()
    source.sync(migrate=migrate)
    assert len(seen) == 1  # once


def test_fetch_for_a_dry_run_touches_no_working_tree(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    clone = source.sync().path
    before = (clone / "stacks/web/compose.yaml").read_text()
    new = remote.commit({"stacks/web/compose.yaml": "services: {app: {image: nginx:1.29}}\n"}, "third")
    fetched = source.fetch()
    assert fetched.commit == new and fetched.object_ids["stacks/web/compose.yaml"] == remote.object_id("stacks/web/compose.yaml")
    assert (clone / "stacks/web/compose.yaml").read_text() == before


def test_a_force_pushed_older_commit_converges(tmp_path, remote):
    first_commit = remote.head()
    source = source_for(tmp_path, remote.bare)
    source.sync()
    remote.commit({"stacks/new/compose.yaml": "services: {n: {image: busybox}}\n", "README.md": "changed\n"}, "second")
    assert source.sync().commit == remote.head()
    remote.git("reset", "-q", "--hard", first_commit)
    remote.git("push", "-q", "--force", "origin", f"HEAD:{BRANCH}")

    checkout = source.sync()
    assert checkout.commit == first_commit
    assert "stacks/new/compose.yaml" not in checkout.object_ids
    assert not (checkout.path / "stacks/new").exists()
    assert (checkout.path / "README.md").read_text() == "hello\n"
    assert checkout.object_ids["README.md"] == remote.object_id("README.md")


def test_an_unreachable_remote_fails_the_first_clone_naming_the_branch(tmp_path):
    source = source_for(tmp_path, tmp_path / "does-not-exist.git")
    with pytest.raises(GitSourceError, match=f"branch {BRANCH} "):
        source.sync()
    assert not (tmp_path / "state" / "repo").exists()


def test_an_unreachable_remote_leaves_the_clone_alone(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    checkout = source.sync()
    remote.bare.rename(remote.bare.with_name("moved.git"))
    with pytest.raises(GitSourceError) as caught:
        source.sync()
    assert f"branch {BRANCH} " in str(caught.value)
    assert (checkout.path / "stacks/web/compose.yaml").exists()
    assert remote.run("git", "-C", str(checkout.path), "rev-parse", "HEAD") == checkout.commit


def test_a_branch_the_remote_does_not_have_is_an_error_naming_it(tmp_path, remote):
    source = GitSource(load(tmp_path, str(remote.bare), GIT_BRANCH="no-such-branch"), None)
    with pytest.raises(GitSourceError, match="no-such-branch"):
        source.sync()


def test_a_branch_change_converges(tmp_path, remote):
    GitSource(load(tmp_path, str(remote.bare), GIT_BRANCH=BRANCH), None).sync()
    (remote.work / "stacks/other").mkdir(parents=True)
    (remote.work / "stacks/other/compose.yaml").write_text("services: {o: {image: busybox}}\n")
    remote.git("checkout", "-q", "-b", "other")
    remote.git("add", "-A")
    remote.git("commit", "-q", "-m", "on other")
    remote.git("push", "-q", "origin", "HEAD:other")
    assert "stacks/other/compose.yaml" not in GitSource(load(tmp_path, str(remote.bare), GIT_BRANCH=BRANCH), None).sync().object_ids
    checkout = GitSource(load(tmp_path, str(remote.bare), GIT_BRANCH="other"), None).sync()
    assert checkout.commit == remote.run("git", "-C", str(remote.bare), "rev-parse", "refs/heads/other")
    assert "stacks/other/compose.yaml" in checkout.object_ids


def test_credentials_reach_git_only_through_its_environment(tmp_path, remote, monkeypatch):
    """The token is never a process argument and never written to .git/config."""
    token = "tok-5ecret-0123456789"
    encoded = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    commands: list[list[str]] = []
    environments: list[dict[str, str]] = []
    real_popen = subprocess.Popen

    def recording_popen(command, *args, **kwargs):  # every child process: git's, and any other
        commands.append([str(word) for word in command])
        environments.append(dict(kwargs.get("env") or {}))
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    source = source_for(tmp_path, remote.bare, GIT_TOKEN=token)
    source.sync()
    remote.commit({"README.md": "again\n"}, "again")
    checkout = source.sync()
    assert checkout.commit == remote.head()
    assert any("clone" in command for command in commands) and any("fetch" in command for command in commands)
    for command in commands:
        assert not any(token in word or encoded in word for word in command), command
    assert all(headers(env) == [f"Authorization: Basic {encoded}"] for env in environments if "GIT_CONFIG_COUNT" in env)
    assert sum("GIT_CONFIG_COUNT" in env for env in environments) >= 3  # clone, fetch, reset...
    git_config = (checkout.path / ".git" / "config").read_text()
    assert token not in git_config and encoded not in git_config
    assert f"url = {remote.bare}" in git_config


def test_a_no_op_sync_runs_six_git_commands_and_nothing_else(tmp_path, remote, monkeypatch):
    source = source_for(tmp_path, remote.bare)
    source.sync()
    commands: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(command, *args, **kwargs):
        commands.append([str(word) for word in command])
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    source.sync()
    subcommands = [next(word for word in command[1:] if not word.startswith("-")) for command in commands]
    assert [command[0] for command in commands] == ["git"] * len(commands)
    assert subcommands == ["config", "fetch", "reset", "clean", "log", "ls-tree"]


def test_the_subject_is_the_first_line_of_the_message(tmp_path, remote):
    remote.commit({"README.md": "again\n"}, "a first line\nand a second one, same paragraph\n\nthe body")
    assert source_for(tmp_path, remote.bare).sync().subject == "a first line"


def broken_head_and_objects(git_dir: Path) -> None:
    shutil.rmtree(git_dir / "objects")
    (git_dir / "HEAD").write_text("garbage\n")


def no_head(git_dir: Path) -> None:
    (git_dir / "HEAD").unlink()


def no_config(git_dir: Path) -> None:
    (git_dir / "config").write_text("[core\n")


@pytest.mark.parametrize("damage", [broken_head_and_objects, no_head, no_config])
def test_a_broken_clone_is_rebuilt_in_place_not_mistaken_for_a_repository_around_it(tmp_path, remote, caplog, damage):
    Remote.run("git", "init", "-q", str(tmp_path))  # a repository the state directory lies in
    source = source_for(tmp_path, remote.bare)
    clone = source.sync().path
    (clone / "untracked.txt").write_text("left behind\n")
    damage(clone / ".git")
    new = remote.commit({"README.md": "second\n"}, "second")

    checkout = source.sync()
    assert "re-initialising it" in caplog.text
    assert checkout.commit == new and checkout.subject == "second"
    assert remote.run("git", "-C", str(clone), "rev-parse", "HEAD") == new
    assert (clone / "README.md").read_text() == "second\n" and not (clone / "untracked.txt").exists()
    assert (clone / ".git" / "composeflux-render-checkout").exists()  # still composeflux's own
    assert Remote.run("git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=no") == ""  # the outer one untouched


def test_a_dry_run_does_not_rebuild_a_broken_clone(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    clone = source.sync().path
    (clone / ".git" / "HEAD").unlink()
    with pytest.raises(GitSourceError, match=r"cannot be used \(fatal: not a git repository: .*\); a real sync rebuilds it"):
        source.fetch()
    assert not (clone / ".git" / "HEAD").exists()


def test_other_remotes_and_another_url_are_replaced_by_origin(tmp_path, remote):
    source = source_for(tmp_path, remote.bare)
    clone = source.sync().path
    remote.run("git", "-C", str(clone), "remote", "set-url", "origin", str(tmp_path / "elsewhere.git"))
    remote.run("git", "-C", str(clone), "remote", "add", "upstream", str(tmp_path / "other.git"))
    new = remote.commit({"README.md": "again\n"}, "again")
    assert source.sync().commit == new
    remotes = remote.run("git", "-C", str(clone), "remote", "-v").splitlines()
    assert remotes == [f"origin\t{remote.bare} (fetch)", f"origin\t{remote.bare} (push)"]


def test_a_hung_remote_is_given_up_at_the_network_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr("composeflux.gitsource.GIT_NETWORK_TIMEOUT", 0.2)
    source = source_for(tmp_path, "ssh://git.example.invalid/stacks.git")
    source.env["GIT_SSH_COMMAND"] = "sleep 60; false"
    with pytest.raises(GitSourceError, match=r"cannot clone branch deploy .*did not complete in 0.2 secs"):
        source.sync()
    assert not (tmp_path / "state" / "repo").exists()
