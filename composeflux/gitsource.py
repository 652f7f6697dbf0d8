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

git runs as a plain child process each time (processes.run_bounded: bounded, its whole process
group killed at the deadline), with GitSource.env on top of the inherited environment. A no-op
sync runs six: config (the remotes), fetch, reset, clean, log (commit, tree, subject), ls-tree.

Credentials never reach .git/config, process arguments or logs: the HTTPS token is handed to git
through GIT_CONFIG_* environment variables, the SSH key through GIT_SSH_COMMAND.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from composeflux import signatures
from composeflux.checkout import Checkout
from composeflux.config import DEFAULT_HTTPS_USER, Config
from composeflux.errors import GitSourceError, StateError, UnverifiedError
from composeflux.processes import run_bounded
from composeflux.signatures import Verified

log = logging.getLogger(__name__)

# A hung remote must not block every later sync (systemd would also stop us, but later).
GIT_NETWORK_TIMEOUT = 300
# Local commands: reading the clone, and writing its working tree (reset and clean touch every
# file, like a clone's checkout does, so they get as long as the network commands).
GIT_READ_TIMEOUT = 60
GIT_WORK_TREE_TIMEOUT = GIT_NETWORK_TIMEOUT
# git's messages in English whatever the host's locale: FILE_SYSTEM_ERRORS looks for them.
GIT_LOCALE = {"LANGUAGE": "C", "LC_ALL": "C"}
# In the .git of a clone that is composeflux's own render checkout (not a 0.1 checkout that
# containers ran from): from then on it is reset and cleaned completely on every sync.
RENDER_CHECKOUT_MARK = "composeflux-render-checkout"
RENDER_CHECKOUT_NOTE = "No container runs from this checkout; composeflux resets and cleans it on every sync.\n"
# git's advice after an SSH failure; it crowds out the actual reason.
BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists")
# A remote helper URL (`<transport>::<address>`; `ext::` runs any command): never cloned.
REMOTE_HELPER_URL = re.compile(r"([A-Za-z0-9][A-Za-z0-9+.-]*|)::")


class GitError(Exception):
    """A git command that failed, or could not run or finish: its arguments, its exit status
    (None when it did not exit by itself) and its stderr."""

    def __init__(self, command: Sequence[str], status: int | None, stderr: str) -> None:
        self.command = list(command)
        self.status = status
        self.stderr = stderr
        super().__init__(f"{' '.join(self.command[:2])} exited with status {status}: {stderr.strip()}")


# What the commands on an existing clone raise when it cannot be used as it is.
UNUSABLE_CLONE = (GitError, ValueError)


def _git(
    arguments: Sequence[str],
    env: dict[str, str],
    timeout: float,
    clone: Path | None = None,
    accept: Collection[int] = (0,),
) -> bytes:
    """Run `git ARGUMENTS` (in the clone at the absolute path `clone`, when given) and return its
    stdout; GitError unless it exits with a status in `accept`.

    In a clone, --git-dir names its .git explicitly: a broken one is an error, never a reason for
    git to look for a repository in the directories above."""
    command = ["git", *arguments] if clone is None else ["git", f"--git-dir={clone / '.git'}", *arguments]
    try:
        result = run_bounded(command, env={**os.environ, **GIT_LOCALE, **env}, timeout=timeout, cwd=clone)
    except OSError as exc:
        raise GitError(command, None, f"git could not be started ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise GitError(command, None, f'Timeout: the command "git {" ".join(arguments)}" did not complete in {timeout:g} secs.') from None
    if result.returncode not in accept:
        raise GitError(command, result.returncode, result.stderr.decode(errors="replace"))
    return result.stdout


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


def _raise_if_full(exc: GitError, config: Config) -> None:
    """A full or read-only file system is the state directory's problem, not Git's (exit 9)."""
    text = exc.stderr
    for marker, why in FILE_SYSTEM_ERRORS:
        if marker in text:
            raise StateError(f"{config.clone_path}: {why} (git: {_first_line(exc, config)})") from None


def _first_line(exc: GitError, config: Config) -> str:
    """The useful part of git's stderr, masked."""
    lines = [line.strip() for line in exc.stderr.splitlines() if line.strip() and not line.strip().startswith(BOILERPLATE)]
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

    def _in(self, clone: Path, *arguments: str, timeout: float = GIT_READ_TIMEOUT, accept: Collection[int] = (0,)) -> bytes:
        """`git ARGUMENTS` in the clone (an absolute path), with this source's environment."""
        return _git(arguments, self.env, timeout, clone, accept)

    def _clone_dir(self) -> Path:
        return Path(os.path.abspath(self.config.clone_path))

    def _target(self, clone: Path) -> tuple[str, Verified | None]:
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
                if self.config.verify_signatures == "commit":
                    refused.commit = self._in(clone, "rev-parse", "--verify", "--end-of-options", f"{head}^{{commit}}").decode().strip()
                else:
                    refused.commit = None
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
            return self._update(self._clone_dir(), migrate)
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
            clone = self._clone_dir()
            bare = self._fetch(clone)
            target, verified = self._target(clone)
            if bare:  # only a bare repository has no working tree; the clone never is one
                raise GitSourceError(f"{path / '.git'} is a bare repository, not a clone with a working tree")
            return self._checkout_at(clone, target, verified)
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
        if isinstance(exc, GitError):
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
        helper = REMOTE_HELPER_URL.match(self.config.repo_url)
        if helper:
            raise GitSourceError(
                f"cannot clone branch {self.config.branch} of {self.config.repo_url}: "
                f"the `{helper.group(1)}::` protocol (a remote helper) is not allowed"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in path.parent.glob(f".{path.name}.clone-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a clone that was interrupted
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.clone-", dir=path.parent))
        try:
            log.info("Cloning %s (branch %s)", self.config.repo_url, self.config.branch)
            # Verifying: nothing of the commit is checked out before its signature is checked.
            options = [] if checkout and not self.verifying else ["--no-checkout"]
            _git(["clone", "-v", *options, f"--branch={self.config.branch}", "--", self.config.repo_url, str(temporary)],
                 self.env, GIT_NETWORK_TIMEOUT)
            (temporary / ".git" / RENDER_CHECKOUT_MARK).write_text(RENDER_CHECKOUT_NOTE)
            if path.exists():
                path.rmdir()  # empty, checked by the caller
            temporary.rename(path)
        except GitError as exc:
            _raise_if_full(exc, self.config)
            raise GitSourceError(
                f"cannot clone branch {self.config.branch} of {self.config.repo_url}: {_first_line(exc, self.config)}"
            ) from None
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        clone = self._clone_dir()
        if not self.verifying:
            return self._checkout_at(clone, "HEAD")
        if self.config.verify_signatures == "tag":
            self._in(clone, "fetch", "--no-tags", "origin", *self.refspecs, timeout=GIT_NETWORK_TIMEOUT)
        target, verified = self._target(clone)
        if checkout:
            self._in(clone, "reset", "--hard", target, timeout=GIT_WORK_TREE_TIMEOUT)
        return self._checkout_at(clone, "HEAD" if checkout else target, verified)

    def _remotes(self, clone: Path) -> tuple[dict[str, list[str]], bool]:
        """The clone's remotes with their URLs as its .git/config has them, and whether it says
        it is bare: one `git config` (which fails for a .git that is not a repository)."""
        try:
            listing = self._in(clone, "config", "-z", "--local", "--get-regexp", r"^(remote\..+|core\.bare)$", accept=(0, 1))
        except GitError as exc:
            if "--local can only be used inside a git repository" in exc.stderr:
                raise GitError(exc.command, exc.status, f"fatal: not a git repository: '{clone / '.git'}'") from None
            raise
        remotes: dict[str, list[str]] = {}
        bare = False
        for record in listing.split(b"\0"):
            key, newline, value = os.fsdecode(record).partition("\n")
            if key == "core.bare":
                bare = not newline or value.strip().lower() in ("true", "yes", "on") or (value.strip().isdigit() and int(value) != 0)
            elif key.startswith("remote."):
                name, _, variable = key.removeprefix("remote.").rpartition(".")
                if name:
                    urls = remotes.setdefault(name, [])
                    if variable == "url":
                        urls.append(value)
        return remotes, bare

    def _fetch(self, clone: Path) -> bool:
        """Make origin the one remote, with our URL, and fetch it; whether the clone says it is bare."""
        remotes, bare = self._remotes(clone)
        if list(remotes) != ["origin"] or remotes["origin"] != [self.config.repo_url]:
            self._reset_remote(clone, remotes)
        self._in(clone, "fetch", "--prune", "--no-tags", "origin", *self.refspecs, timeout=GIT_NETWORK_TIMEOUT)
        return bare

    def _update(self, clone: Path, migrate: Callable[[Path], None] | None) -> Checkout:
        self._fetch(clone)
        mark = clone / ".git" / RENDER_CHECKOUT_MARK
        if not mark.exists():
            if migrate is not None:
                migrate(self.config.clone_path)
            mark.write_text(RENDER_CHECKOUT_NOTE)
        target, verified = self._target(clone)
        self._in(clone, "reset", "--hard", target, timeout=GIT_WORK_TREE_TIMEOUT)
        try:
            self._in(clone, "clean", "-ffdx", timeout=GIT_WORK_TREE_TIMEOUT)  # in the top directory: all of the tree
        except GitError as exc:
            # A file the sync user may not remove; the tracked content is already right.
            log.warning("Could not remove every untracked file from the clone: %s", _first_line(exc, self.config))
        return self._checkout_at(clone, "HEAD", verified)

    def _reset_remote(self, clone: Path, remotes: Collection[str]) -> None:
        for remote in remotes:
            self._in(clone, "remote", "remove", "--", remote)
        self._in(clone, "remote", "add", "origin", self.config.repo_url)

    def _check_remote(self) -> None:
        """Raise GitSourceError unless the remote answers and has our branch."""
        try:
            heads = _git(["ls-remote", "--heads", self.config.repo_url, f"refs/heads/{self.config.branch}"], self.env, GIT_NETWORK_TIMEOUT)
        except GitError as exc:
            raise GitSourceError(
                f"cannot fetch branch {self.config.branch} of {self.config.repo_url}: {_first_line(exc, self.config)}"
            ) from None
        if not heads.strip():
            raise GitSourceError(f"branch {self.config.branch} not found in {self.config.repo_url}")

    def _reinitialise(self, migrate: Callable[[Path], None] | None) -> Checkout:
        """Throw away a broken .git and rebuild it in place; the working tree stays (and, if it
        was a 0.1 checkout that containers ran from, is migrated first)."""
        path = self.config.clone_path
        clone = self._clone_dir()
        was_render_checkout = (path / ".git" / RENDER_CHECKOUT_MARK).exists()
        shutil.rmtree(path / ".git")
        try:
            _git(["init", "-q", "--", str(clone)], self.env, GIT_READ_TIMEOUT)
            if was_render_checkout:
                (clone / ".git" / RENDER_CHECKOUT_MARK).write_text(RENDER_CHECKOUT_NOTE)
            self._in(clone, "remote", "add", "origin", self.config.repo_url)
            return self._update(clone, migrate)
        except GitError as exc:
            _raise_if_full(exc, self.config)
            raise GitSourceError(f"cannot rebuild the clone at {path}: {_first_line(exc, self.config)}") from None

    def _checkout_at(self, clone: Path, revision: str, verified: Verified | None = None) -> Checkout:
        """The commit at `revision` with its subject (its message's first line) and object ids:
        one `git log`, one `git ls-tree`."""
        described = self._in(clone, "log", "-1", "--no-show-signature", "--encoding=UTF-8", "--format=%H%x00%T%x00%B",
                             "--end-of-options", revision, "--")
        commit, tree, message = described.split(b"\0", 2)
        ids, submodules = self._object_ids(clone, commit.decode())
        ids["."] = tree.decode()
        return Checkout(
            path=self.config.clone_path.resolve(),
            commit=commit.decode(),
            subject=message.split(b"\n", 1)[0].decode(errors="replace"),
            object_ids=ids,
            submodules=submodules,
            signer=verified.signer if verified else None,
            ref=verified.ref if verified and verified.kind == "tag" else None,
        )

    def _object_ids(self, clone: Path, commit: str) -> tuple[dict[str, str], frozenset[str]]:
        """Every tracked path (files and directories) of a commit with its Git object id (a free
        content hash), and the paths that are submodules; the root tree is the caller's."""
        listing = self._in(clone, "ls-tree", "-r", "-t", "-z", "--full-tree", commit)
        ids: dict[str, str] = {}
        submodules = set()
        for entry in listing.split(b"\0"):
            if entry:
                meta, _, name = entry.partition(b"\t")
                _mode, kind, object_id = meta.decode().split()
                path = os.fsdecode(name)
                ids[path] = object_id
                if kind == "commit":
                    submodules.add(path)
        return ids, frozenset(submodules)


def _describe(exc: Exception, config: Config) -> str:
    if isinstance(exc, GitError):
        return _first_line(exc, config)
    return config.masker(f"{type(exc).__name__}: {exc}")
