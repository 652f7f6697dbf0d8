"""The Git source: make the local clone equal to the remote branch, whatever state it was in.

Clone on first run (into a temporary directory, renamed into place, so a half-written clone is
never used). Afterwards fetch with a forced refspec, hard-reset and clean, so force pushes and
branch changes converge. The clone is composeflux's render checkout only: every stack runs from
a tree of its own (trees.py), so nothing of a user's lives here. A clone whose .git is broken is
re-initialised in place. A dry run only fetches (`fetch()`).

With VERIFY_SIGNATURES (signatures.py) the fetched head (commit) or the newest tag matching
VERIFY_TAG_PATTERN (tag) is verified after the fetch and before the working tree is touched; an
unverified one raises UnverifiedError and the clone stays at the last verified commit. A first
clone is then made without a checkout, so no unverified file is ever checked out.

Credentials never reach .git/config, process arguments or logs: the HTTPS token is handed to git
through GIT_CONFIG_* environment variables, the SSH key through GIT_SSH_COMMAND.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import git

from composeflux import signatures
from composeflux.checkout import Checkout
from composeflux.config import DEFAULT_HTTPS_USER, Config
from composeflux.errors import GitSourceError, StateError, UnverifiedError
from composeflux.signatures import Verified

log = logging.getLogger(__name__)

# A hung remote must not block every later sync (systemd would also stop us, but later).
GIT_NETWORK_TIMEOUT = 300
# In the .git of a clone that is composeflux's own render checkout (not a 0.1 checkout that
# containers ran from): from then on it is reset and cleaned completely on every sync.
RENDER_CHECKOUT_MARK = "composeflux-render-checkout"
# What git.Repo and its commands raise for a clone that cannot be used as it is.
UNUSABLE_CLONE = (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError)
RENDER_CHECKOUT_NOTE = "No container runs from this checkout; composeflux resets and cleans it on every sync.\n"
# git's advice after an SSH failure; it crowds out the actual reason.
BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists")


@contextlib.contextmanager
def deploy_key(config: Config) -> Iterator[Path | None]:
    """The SSH key for Git: GIT_SSH_KEY_PATH, or one fetched from the secrets manager that lives
    in the runtime directory (tmpfs under systemd) only while the sync runs."""
    reference = config.settings.get("GIT_DEPLOY_KEY_SECRET_REF", "").strip()
    if not reference:
        yield config.ssh_key_path
        return
    key = config.secrets_provider.fetch_deploy_key(reference)
    config.masker.add([key.strip()])
    config.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config.runtime_dir / "deploy-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.strip() + "\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def git_environment(config: Config, ssh_key: Path | None) -> dict[str, str]:
    """Environment for every git child process (on top of the inherited one)."""
    env = {
        "GIT_TERMINAL_PROMPT": "0",  # fail instead of waiting for a password nobody will type
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_LFS_SKIP_SMUDGE": "1",
    }
    ssh = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=20",
        "-o", f"StrictHostKeyChecking={config.ssh_host_key_checking}",
        "-o", f"UserKnownHostsFile={config.ssh_known_hosts}",
    ]  # fmt: skip
    if ssh_key is not None:
        ssh += ["-o", "IdentitiesOnly=yes", "-i", str(ssh_key)]
    env["GIT_SSH_COMMAND"] = shlex.join(ssh)

    config_pairs = [("http.lowSpeedLimit", "1000"), ("http.lowSpeedTime", "30")]
    if config.https_token:
        user = config.https_username or DEFAULT_HTTPS_USER
        basic = base64.b64encode(f"{user}:{config.https_token}".encode()).decode()
        config_pairs.append(("http.extraHeader", f"Authorization: Basic {basic}"))
    env["GIT_CONFIG_COUNT"] = str(len(config_pairs))
    for index, (key, value) in enumerate(config_pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


# What git says when it cannot write (never a reason to rebuild the clone: that would fail too).
FILE_SYSTEM_ERRORS = (
    ("No space left on device", "the file system is full"),
    ("Out of diskspace", "the file system is full"),
    ("Disk quota exceeded", "the disk quota is used up"),
    ("Read-only file system", "the file system is read-only"),
)


def _raise_if_full(exc: git.GitCommandError, config: Config) -> None:
    """A full or read-only file system is the state directory's problem, not Git's (exit 9)."""
    text = str(exc.stderr or "")
    for marker, why in FILE_SYSTEM_ERRORS:
        if marker in text:
            raise StateError(f"{config.clone_path}: {why} (git: {_first_line(exc, config)})") from None


def _first_line(exc: git.GitCommandError, config: Config) -> str:
    """The useful part of git's stderr, masked."""
    text = (exc.stderr or str(exc)).strip().replace("stderr: ", "")
    lines = [line.strip(" '") for line in text.splitlines() if line.strip(" '") and not line.strip(" '").startswith(BOILERPLATE)]
    message = "; ".join(lines[-4:]) or f"git exited with status {exc.status}"
    return config.masker(message)


class GitSource:
    def __init__(self, config: Config, ssh_key: Path | None):
        self.config = config
        self.env = git_environment(config, ssh_key)
        self.refspecs = [f"+refs/heads/{config.branch}:refs/remotes/origin/{config.branch}"]
        self.verifying = config.verify_signatures != "off"
        if config.verify_signatures == "tag":
            self.refspecs.append("+refs/tags/*:refs/tags/*")
        if self.verifying:
            self.env["GIT_NO_REPLACE_OBJECTS"] = "1"  # check out exactly the objects that were verified

    def _target(self, repo: git.Repo) -> tuple[str, Verified | None]:
        """What to check out: the branch's head; with VERIFY_SIGNATURES, the verified commit (the
        head, or the newest signed tag's), or UnverifiedError before anything is touched."""
        head = f"refs/remotes/origin/{self.config.branch}"
        if not self.verifying:
            return head, None
        try:
            if self.config.verify_signatures == "tag":
                verified = signatures.newest_verified_tag(self.config.clone_path, self.config.verify_tag_pattern, self.config.trust,
                                                          self.env)
            else:
                verified = signatures.verify_commit(self.config.clone_path, head, self.config.trust, self.env)
        except signatures.SignatureError as exc:
            refused = UnverifiedError(f"refused ({exc.reason}): {exc}; VERIFY_SIGNATURES={self.config.verify_signatures}")
            with contextlib.suppress(*UNUSABLE_CLONE):  # the commit it is about, for the state and the event
                refused.commit = repo.commit(head).hexsha if self.config.verify_signatures == "commit" else None
            raise refused from None
        name = verified.ref.removeprefix("refs/remotes/origin/").removeprefix("refs/tags/")
        log.info("%s %s (%s) is signed by %s", "Tag" if verified.kind == "tag" else "Branch", name, verified.commit[:12], verified.signer)
        return verified.commit, verified

    def sync(self, migrate: Callable[[Path], None] | None = None) -> Checkout:
        """Bring the clone to origin/<branch> and return what is checked out.

        The clone is composeflux's own render checkout: no container runs from it (each stack
        has its own tree, see trees.py), so it is reset and cleaned completely. A checkout of
        composeflux 0.1, which containers did run from, is first handed to `migrate` (after
        the fetch succeeded), which moves the files that are not Git's out of it.
        """
        path = self.config.clone_path
        first = self._clone_if_missing(checkout=True)
        if first is not None:
            return first
        try:
            return self._update(git.Repo(path), migrate)
        except UNUSABLE_CLONE as exc:
            self._check_not_local_or_remote(exc)  # then the clone itself is broken
            log.warning("The clone at %s could not be updated (%s); re-initialising it", path, _describe(exc, self.config))
            return self._reinitialise(migrate)

    def fetch(self) -> Checkout:
        """Fetch origin/<branch> without touching any working tree (for a dry run), and describe
        that commit; `path` is the clone, whose files are not those of the commit."""
        path = self.config.clone_path
        first = self._clone_if_missing(checkout=False)
        if first is not None:
            return first
        try:
            repo = git.Repo(path)
            with repo.git.custom_environment(**self.env):
                self._fetch(repo)
                return self._checkout_at(repo, *self._target(repo))
        except UNUSABLE_CLONE as exc:
            self._check_not_local_or_remote(exc)
            raise GitSourceError(f"the clone at {path} cannot be used ({_describe(exc, self.config)}); a real sync rebuilds it") from None

    def _clone_if_missing(self, checkout: bool) -> Checkout | None:
        """A first clone when there is none yet; None when there is one (and it is composeflux's)."""
        path = self.config.clone_path
        if not os.path.lexists(path / ".git"):
            self._check_empty(path)
            return self._clone(checkout=checkout)
        self._check_own_clone(path)
        return None

    def _check_not_local_or_remote(self, exc: Exception) -> None:
        """Raise if the clone could not be used because of a full disk (rebuilding would only
        make it worse) or an unreachable remote (then nothing must change); return if not."""
        if isinstance(exc, git.GitCommandError):
            _raise_if_full(exc, self.config)
        self._check_remote()

    @staticmethod
    def _check_own_clone(path: Path) -> None:
        git_dir = path / ".git"
        if git_dir.is_symlink() or not git_dir.is_dir():
            raise GitSourceError(
                f"{git_dir} is not a directory (a link to another repository, a worktree?): {path} is not a clone "
                "composeflux made; move it away or choose another GIT_CLONE_PATH"
            )

    @staticmethod
    def _check_empty(path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise GitSourceError(f"GIT_CLONE_PATH {path} exists and is not a directory; move it away or choose another GIT_CLONE_PATH")
        if path.exists() and any(path.iterdir()):
            raise GitSourceError(
                f"GIT_CLONE_PATH {path} exists, is not empty and is not a composeflux clone; "
                "move it away or choose another GIT_CLONE_PATH"
            )

    def _clone(self, checkout: bool) -> Checkout:
        path = self.config.clone_path
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in path.parent.glob(f".{path.name}.clone-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a clone that was interrupted
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.clone-", dir=path.parent))
        try:
            log.info("Cloning %s (branch %s)", self.config.repo_url, self.config.branch)
            git.Repo.clone_from(
                self.config.repo_url,
                temporary,
                # Verifying: nothing of the commit is checked out before its signature is checked.
                multi_options=[] if checkout and not self.verifying else ["--no-checkout"],
                branch=self.config.branch,
                env=self.env,
                kill_after_timeout=GIT_NETWORK_TIMEOUT,
            )
            (temporary / ".git" / RENDER_CHECKOUT_MARK).write_text(RENDER_CHECKOUT_NOTE)
            if path.exists():
                path.rmdir()  # empty, checked by the caller
            temporary.rename(path)
        except git.GitCommandError as exc:
            _raise_if_full(exc, self.config)
            raise GitSourceError(
                f"cannot clone branch {self.config.branch} of {self.config.repo_url}: {_first_line(exc, self.config)}"
            ) from None
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        repo = git.Repo(path)
        if not self.verifying:
            return self._checkout_at(repo, "HEAD")
        with repo.git.custom_environment(**self.env):
            if self.config.verify_signatures == "tag":
                repo.git.fetch("--no-tags", "origin", *self.refspecs, kill_after_timeout=GIT_NETWORK_TIMEOUT)
            target, verified = self._target(repo)
            if checkout:
                repo.git.reset("--hard", target)
            return self._checkout_at(repo, "HEAD" if checkout else target, verified)

    def _fetch(self, repo: git.Repo) -> None:
        # The remotes as .git/config has them (GitPython reads the file: no git process).
        if [remote.name for remote in repo.remotes] != ["origin"] or repo.remotes.origin.url != self.config.repo_url:
            self._reset_remote(repo)
        repo.git.fetch("--prune", "--no-tags", "origin", *self.refspecs, kill_after_timeout=GIT_NETWORK_TIMEOUT)

    def _update(self, repo: git.Repo, migrate: Callable[[Path], None] | None) -> Checkout:
        with repo.git.custom_environment(**self.env):
            self._fetch(repo)
            mark = Path(repo.git_dir) / RENDER_CHECKOUT_MARK
            if not mark.exists():
                if migrate is not None:
                    migrate(self.config.clone_path)
                mark.write_text(RENDER_CHECKOUT_NOTE)
            target, verified = self._target(repo)
            repo.git.reset("--hard", target)
            try:
                repo.git.clean("-ffdx")
            except git.GitCommandError as exc:
                # A file the sync user may not remove; the tracked content is already right.
                log.warning("Could not remove every untracked file from the clone: %s", _first_line(exc, self.config))
            return self._checkout_at(repo, "HEAD", verified)

    def _reset_remote(self, repo: git.Repo) -> None:
        for remote in repo.git.remote().split():
            repo.git.remote("remove", remote)
        repo.git.remote("add", "origin", self.config.repo_url)

    def _check_remote(self) -> None:
        """Raise GitSourceError unless the remote answers and has our branch."""
        try:
            # GitPython's execute() takes env= and kill_after_timeout=, but its overloads leave them out.
            # With the defaults (no extended output, stdout as a string) it returns str.
            heads: str = git.Git().execute(  # type: ignore[call-overload]
                ["git", "ls-remote", "--heads", self.config.repo_url, f"refs/heads/{self.config.branch}"],
                env={**os.environ, **self.env},
                kill_after_timeout=GIT_NETWORK_TIMEOUT,
            )
        except git.GitCommandError as exc:
            raise GitSourceError(
                f"cannot fetch branch {self.config.branch} of {self.config.repo_url}: {_first_line(exc, self.config)}"
            ) from None
        if not heads.strip():
            raise GitSourceError(f"branch {self.config.branch} not found in {self.config.repo_url}")

    def _reinitialise(self, migrate: Callable[[Path], None] | None) -> Checkout:
        """Throw away a broken .git and rebuild it in place; the working tree stays (and, if it
        was a 0.1 checkout that containers ran from, is migrated first)."""
        path = self.config.clone_path
        was_render_checkout = (path / ".git" / RENDER_CHECKOUT_MARK).exists()
        shutil.rmtree(path / ".git")
        repo = git.Repo.init(path)
        if was_render_checkout:
            (Path(repo.git_dir) / RENDER_CHECKOUT_MARK).write_text(RENDER_CHECKOUT_NOTE)
        try:
            with repo.git.custom_environment(**self.env):
                repo.git.remote("add", "origin", self.config.repo_url)
            return self._update(repo, migrate)
        except git.GitCommandError as exc:
            _raise_if_full(exc, self.config)
            raise GitSourceError(f"cannot rebuild the clone at {path}: {_first_line(exc, self.config)}") from None

    def _checkout_at(self, repo: git.Repo, revision: str, verified: Verified | None = None) -> Checkout:
        commit = repo.commit(revision)
        ids, submodules = _object_ids(repo, commit.hexsha)
        if repo.working_tree_dir is None:  # only a bare repository has none; the clone never is one
            raise GitSourceError(f"{repo.git_dir} is a bare repository, not a clone with a working tree")
        return Checkout(
            path=Path(repo.working_tree_dir).resolve(),
            commit=commit.hexsha,
            subject=commit.summary if isinstance(commit.summary, str) else commit.summary.decode(errors="replace"),
            object_ids=ids,
            submodules=submodules,
            signer=verified.signer if verified else None,
            ref=verified.ref if verified and verified.kind == "tag" else None,
        )


def _object_ids(repo: git.Repo, commit: str) -> tuple[dict[str, str], frozenset[str]]:
    """Every tracked path (files and directories) of a commit with its Git object id (a free
    content hash), and the paths that are submodules."""
    listing = repo.git.ls_tree("-r", "-t", "-z", "--full-tree", commit)
    ids: dict[str, str] = {}
    submodules = set()
    for entry in listing.split("\0"):
        if entry:
            meta, _, name = entry.partition("\t")
            _mode, kind, object_id = meta.split()
            ids[name] = object_id
            if kind == "commit":
                submodules.add(name)
    ids["."] = repo.commit(commit).tree.hexsha
    return ids, frozenset(submodules)


def _describe(exc: Exception, config: Config) -> str:
    if isinstance(exc, git.GitCommandError):
        return _first_line(exc, config)
    return config.masker(f"{type(exc).__name__}: {exc}")
