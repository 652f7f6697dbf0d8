"""Per-stack working trees (composeflux.trees) against real local Git repositories: what a tree
holds after update(), what is kept, displaced, archived and restored, the render overlay, the
dry-run export and the migration of a 0.1 checkout. No root, no Docker, no network."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from composeflux.checkout import TreeRevision
from composeflux.errors import GitSourceError
from composeflux.trees import GitObjects, StackTrees, TreeUpdate, blob_id, export, migrate_checkout, overlay

TIMEOUT = 30
TIME = r"\d{8}T\d{6}\.\d{6}Z"  # the archive's time stamps
OLD = 1_000_000_000  # an mtime far in the past: a rewritten file gets a new one
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
}
PATHS = ("stacks/web", "shared/x.conf")  # the web stack's directory and one dependency outside it




def git(cwd: Path, *arguments: str, stdin: bytes | None = None) -> str:
    completed = subprocess.run(
        ["git", "-C", str(cwd), *arguments], input=stdin, capture_output=True,
        env={**os.environ, **GIT_IDENTITY}, timeout=TIMEOUT, check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout.decode().strip()


class Repo:
    """A work tree to commit from; remembers what each commit tracks, as snapshot() shows it."""

    def __init__(self, path: Path, object_format: str = "sha1") -> None:
        self.path = path
        self.tracked: dict[str, tuple] = {}
        self.at: dict[str, dict[str, tuple]] = {}
        path.mkdir(parents=True)
        git(path, "init", "-q", "--initial-branch=main", f"--object-format={object_format}")

    def write(self, name: str, content: str | bytes, mode: int = 0o644) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            target.unlink()
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(mode)
        self.tracked[name] = ("file", mode, target.read_bytes())

    def link(self, name: str, destination: str) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            target.unlink()
        os.symlink(destination, target)
        self.tracked[name] = ("link", destination)

    def remove(self, name: str) -> None:
        (self.path / name).unlink()
        del self.tracked[name]
        parent = (self.path / name).parent
        while parent != self.path and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def commit(self, message: str = "change", gitlinks: dict[str, str] | None = None) -> str:
        git(self.path, "add", "-A")
        for name, commit in (gitlinks or {}).items():
            git(self.path, "update-index", "--add", "--cacheinfo", f"160000,{commit},{name}")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        head = git(self.path, "rev-parse", "HEAD")
        self.at[head] = dict(self.tracked)
        return head

    def files(self, commit: str, paths=(".",)) -> dict[str, tuple]:
        """What `commit` tracks under `paths` (not its submodules), as snapshot() shows it."""
        return {name: entry for name, entry in self.at[commit].items() if any(under(name, path) for path in paths)}


def under(name: str, path: str) -> bool:
    return path == "." or name == path or name.startswith(path + "/")


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under `root`: directories, symlinks (not followed), files with mode and content."""
    found: dict[str, tuple] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir",)
            else:
                found[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def with_dirs(files: dict[str, tuple]) -> dict[str, tuple]:
    """These files plus the directories that hold them: what a tree with exactly them looks like."""
    result = dict(files)
    for name in files:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            result["/".join(parts[:depth])] = ("dir",)
    return result


def prefixed(prefix: str, files: dict[str, tuple]) -> dict[str, tuple]:
    return {f"{prefix}/{name}": entry for name, entry in files.items()}


def file_entry(content: str | bytes, mode: int = 0o644) -> tuple:
    return ("file", mode, content.encode() if isinstance(content, str) else content)


@dataclasses.dataclass
class Workspace:
    repo: Repo
    objects: GitObjects
    trees: StackTrees
    state: Path
    a: str  # the first commit

    def deploy(self, name: str = "web", commit: str | None = None, paths=PATHS) -> Path:
        """A new stack's tree at `commit` (the first one by default)."""
        self.trees.update(name, TreeRevision(commit or self.a, tuple(paths)), None)
        return self.trees.path(name)


def populate(repo: Repo) -> str:
    repo.write(".gitignore", ".env\n")
    repo.write("stacks/web/compose.yaml", "services:\n  app:\n    image: busybox\n")
    repo.write("stacks/web/app.conf", "listen 80\n")
    repo.write("stacks/web/run.sh", "#!/bin/sh\necho hi\n", 0o755)
    repo.link("stacks/web/link", "app.conf")
    repo.write("stacks/web/conf/nested.conf", "a=1\n")
    repo.write("stacks/web/keep/tracked.txt", "tracked\n")
    repo.write("stacks/web/empty", b"")
    repo.write("stacks/web-2/compose.yaml", "services:\n  other:\n    image: busybox\n")
    repo.write("stacks/db/compose.yaml", "services:\n  db:\n    image: busybox\n")
    repo.write("shared/x.conf", "shared x\n")
    repo.write("shared/y.conf", "shared y\n")
    return repo.commit("A")


@pytest.fixture
def ws(tmp_path) -> Workspace:
    repo = Repo(tmp_path / "repo")
    a = populate(repo)
    objects = GitObjects(repo.path)
    return Workspace(repo, objects, StackTrees(tmp_path / "state", objects), tmp_path / "state", a)


def displaced_dir(ws: Workspace, where: Path, stack: str, path: str) -> None:
    """`where` is state/archive/displaced-<time>/<stack>/<path>."""
    relative = where.relative_to(ws.state / "archive").parts
    assert re.fullmatch(f"displaced-{TIME}", relative[0]), where
    assert relative[1:] == (stack, *path.split("/")), where


# -- blob_id, GitObjects --------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"hello\n", b"no newline", b"\0\x01\xff" * 1000, "ünïcode\r\n".encode()])
def test_blob_id_is_what_git_hash_object_prints(tmp_path, content):
    assert blob_id(content) == git(tmp_path, "hash-object", "--stdin", stdin=content)
    repo = Repo(tmp_path / "sha256", object_format="sha256")
    assert blob_id(content, "sha256") == git(repo.path, "hash-object", "--stdin", stdin=content)
    assert blob_id(content, "sha256") != blob_id(content)


def test_git_objects_lists_files_with_modes_and_ids(ws):
    files = ws.objects.files(ws.a, PATHS)
    assert set(files) == set(ws.repo.files(ws.a, PATHS))
    assert {name: entry.mode for name, entry in files.items() if entry.mode != "100644"} == {
        "stacks/web/run.sh": "100755", "stacks/web/link": "120000",
    }
    for name, entry in files.items():
        assert entry.object_id == git(ws.repo.path, "rev-parse", f"{ws.a}:{name}")
    assert set(ws.objects.files(ws.a, ["."])) == set(ws.repo.files(ws.a))
    assert ws.objects.files(ws.a, []) == {}
    assert ws.objects.files(ws.a, ["stacks/we*"]) == {}  # a path, not a pattern
    assert set(ws.objects.files(ws.a, ["stacks/web-2"])) == {"stacks/web-2/compose.yaml"}


def test_git_objects_reads_blobs_in_one_batch(ws):
    files = ws.objects.files(ws.a, PATHS)
    ids = [files[name].object_id for name in ("stacks/web/app.conf", "stacks/web/empty", "stacks/web/link", "stacks/web/app.conf")]
    assert list(ws.objects.blobs(ids)) == [(ids[0], b"listen 80\n"), (ids[1], b""), (ids[2], b"app.conf")]
    assert list(ws.objects.blobs([])) == []
    assert ws.objects.object_format() == "sha1"


def test_git_objects_errors_are_git_source_errors(ws, tmp_path):
    with pytest.raises(GitSourceError, match="ls-tree"):
        ws.objects.files("0" * 40, PATHS)
    (tmp_path / "not-a-repo").mkdir()
    with pytest.raises(GitSourceError):
        GitObjects(tmp_path / "not-a-repo").files("HEAD", ["."])


# -- update(): a new stack ------------------------------------------------------------------------


def test_new_stack_gets_exactly_its_tracked_files(ws):
    result = ws.trees.update("web", TreeRevision(ws.a, PATHS), None)
    tree = ws.state / "stacks" / "web"
    assert ws.trees.path("web") == tree and ws.trees.exists("web")
    assert result == TreeUpdate(TreeRevision(ws.a, PATHS), (), None)
    assert snapshot(tree) == with_dirs(ws.repo.files(ws.a, PATHS))  # nothing of web-2, db, shared/y.conf
    assert (tree / "stacks/web/compose.yaml").read_text() == "services:\n  app:\n    image: busybox\n"
    assert stat.S_IMODE((tree / "stacks/web/compose.yaml").stat().st_mode) == 0o644
    assert stat.S_IMODE((tree / "stacks/web/run.sh").stat().st_mode) == 0o755
    assert (tree / "stacks/web/link").is_symlink() and os.readlink(tree / "stacks/web/link") == "app.conf"
    assert (tree / "shared/x.conf").read_text() == "shared x\n"
    assert not (tree / "stacks/web-2").exists() and not (tree / "shared/y.conf").exists()
    assert not (ws.state / "archive").exists()


def test_new_stack_written_regardless_of_umask(ws):
    previous = os.umask(0o077)
    try:
        ws.deploy()
    finally:
        os.umask(previous)
    tree = ws.trees.path("web")
    assert stat.S_IMODE((tree / "stacks/web/app.conf").stat().st_mode) == 0o644
    assert stat.S_IMODE((tree / "stacks/web/run.sh").stat().st_mode) == 0o755


def test_sha256_repository_keeps_unchanged_files(tmp_path):
    repo = Repo(tmp_path / "repo", object_format="sha256")
    a = populate(repo)
    objects = GitObjects(repo.path)
    assert objects.object_format() == "sha256"
    trees = StackTrees(tmp_path / "state", objects)
    trees.update("web", TreeRevision(a, PATHS), None)
    tree = trees.path("web")
    kept = tree / "stacks/web/compose.yaml"
    os.utime(kept, (OLD, OLD))
    inode = kept.stat().st_ino
    repo.write("stacks/web/app.conf", "listen 8080\n")
    b = repo.commit("B")
    result = trees.update("web", TreeRevision(b, PATHS), TreeRevision(a, PATHS))
    assert result.displaced == ()
    assert snapshot(tree) == with_dirs(repo.files(b, PATHS))
    assert (kept.stat().st_ino, kept.stat().st_mtime) == (inode, OLD)


# -- update(): from one commit to the next --------------------------------------------------------


def test_update_rewrites_changed_removes_deleted_and_keeps_the_rest(ws):
    tree = ws.deploy()
    web = tree / "stacks/web"
    (web / "data/db").mkdir(parents=True)
    (web / "data/db/store.bin").write_bytes(b"\0precious\xff")
    (web / "data/log").mkdir()  # an empty untracked directory
    (web / ".env").write_text("SECRET=1\n")
    (web / "keep/mine.txt").write_text("mine\n")
    untracked = {name: entry for name, entry in snapshot(tree).items()
                 if name.startswith(("stacks/web/data", "stacks/web/.env", "stacks/web/keep/mine"))}
    kept = ["stacks/web/compose.yaml", "stacks/web/run.sh", "stacks/web/link", "stacks/web/empty", "shared/x.conf"]
    for name in kept:
        os.utime(tree / name, (OLD, OLD), follow_symlinks=False)
    before = {name: (tree / name).lstat().st_ino for name in kept}

    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    ws.repo.remove("stacks/web/conf/nested.conf")  # conf/ is empty then: removed
    ws.repo.remove("stacks/web/keep/tracked.txt")  # keep/ still holds mine.txt: stays
    ws.repo.write("stacks/web/new/added.txt", "new\n")
    ws.repo.write("stacks/db/compose.yaml", "services: {}\n")  # another stack's change
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))

    assert result == TreeUpdate(TreeRevision(b, PATHS), (), None)
    assert snapshot(tree) == {**with_dirs(ws.repo.files(b, PATHS)), **with_dirs(untracked)}
    assert not (web / "conf").exists() and (web / "keep").is_dir()
    assert (web / "app.conf").read_text() == "listen 8080\n"
    assert (web / "data/db/store.bin").read_bytes() == b"\0precious\xff" and (web / "data/log").is_dir()
    for name in kept:
        info = (tree / name).lstat()
        assert (info.st_ino, info.st_mtime) == (before[name], OLD), f"{name} was rewritten"
    assert not (ws.state / "archive").exists()


def test_update_changes_modes_and_symlinks_in_place(ws):
    tree = ws.deploy()
    ws.repo.write("stacks/web/run.sh", "#!/bin/sh\necho hi\n", 0o644)  # the executable bit only
    ws.repo.write("stacks/web/app.conf", "listen 80\n", 0o755)
    ws.repo.link("stacks/web/link", "compose.yaml")  # another target
    ws.repo.link("stacks/web/empty", "app.conf")  # a file becomes a symlink
    ws.repo.remove("stacks/web/keep/tracked.txt")
    ws.repo.write("stacks/web/keep", "a file where a directory was\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))
    assert result.displaced == ()
    assert snapshot(tree) == with_dirs(ws.repo.files(b, PATHS))
    assert stat.S_IMODE((tree / "stacks/web/run.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((tree / "stacks/web/app.conf").stat().st_mode) == 0o755
    assert os.readlink(tree / "stacks/web/link") == "compose.yaml"
    assert os.readlink(tree / "stacks/web/empty") == "app.conf"


def test_host_changes_to_tracked_files_are_archived_before_git_replaces_them(ws):
    tree = ws.deploy()
    web = tree / "stacks/web"
    (web / "app.conf").write_text("listen 80 # tuned on the host\n")  # B changes it
    (web / "conf/nested.conf").write_text("a=2 # host\n")  # B deletes it
    (web / "run.sh").chmod(0o644)  # B deletes it; only its mode was changed on the host
    (tree / "shared/x.conf").write_text("host x\n")  # B changes it, to what the host has already
    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    ws.repo.remove("stacks/web/conf/nested.conf")
    ws.repo.remove("stacks/web/run.sh")
    ws.repo.write("shared/x.conf", "host x\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))

    displaced = dict(result.displaced)
    assert set(displaced) == {"stacks/web/app.conf", "stacks/web/conf/nested.conf", "stacks/web/run.sh"}
    for name, where in displaced.items():
        displaced_dir(ws, where, "web", name)
    assert displaced["stacks/web/app.conf"].read_text() == "listen 80 # tuned on the host\n"
    assert displaced["stacks/web/conf/nested.conf"].read_text() == "a=2 # host\n"
    assert displaced["stacks/web/run.sh"].read_text() == "#!/bin/sh\necho hi\n"
    assert len({where.parents[len(name.split("/"))] for name, where in displaced.items()}) == 1  # one displaced-<time>/web
    files = {name: entry for name, entry in snapshot(tree).items() if entry[0] != "dir"}
    assert files == ws.repo.files(b, PATHS)
    assert (web / "app.conf").read_text() == "listen 8080\n"


def test_untracked_file_in_the_way_of_a_new_tracked_file_is_archived(ws):
    tree = ws.deploy()
    (tree / "stacks/web/new.conf").write_text("mine\n")
    (tree / "stacks/web/thing/data").mkdir(parents=True)  # an untracked directory where B has a file
    (tree / "stacks/web/thing/data/db").write_bytes(b"rows")
    ws.repo.write("stacks/web/new.conf", "from git\n")
    ws.repo.write("stacks/web/thing", "a file\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))

    displaced = dict(result.displaced)
    assert set(displaced) == {"stacks/web/new.conf", "stacks/web/thing"}
    displaced_dir(ws, displaced["stacks/web/new.conf"], "web", "stacks/web/new.conf")
    assert displaced["stacks/web/new.conf"].read_text() == "mine\n"
    assert (displaced["stacks/web/thing"] / "data/db").read_bytes() == b"rows"
    assert snapshot(tree) == with_dirs(ws.repo.files(b, PATHS))


def test_untracked_file_where_git_now_has_a_directory_is_archived(ws):
    tree = ws.deploy()
    (tree / "stacks/web/newdir").write_text("mine\n")
    ws.repo.write("stacks/web/newdir/file.txt", "from git\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))
    displaced = dict(result.displaced)
    assert set(displaced) == {"stacks/web/newdir"}
    displaced_dir(ws, displaced["stacks/web/newdir"], "web", "stacks/web/newdir")
    assert displaced["stacks/web/newdir"].read_text() == "mine\n"
    assert (tree / "stacks/web/newdir/file.txt").read_text() == "from git\n"


def test_untracked_file_where_a_tracked_directory_was_is_kept(ws):
    tree = ws.deploy()
    web = tree / "stacks/web"
    (web / "conf/nested.conf").unlink()
    (web / "conf").rmdir()
    (web / "conf").write_text("mine\n")  # the host replaced the directory conf/ with a file
    ws.repo.remove("stacks/web/conf/nested.conf")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))
    assert result.displaced == ()
    assert (web / "conf").read_text() == "mine\n"


def test_untracked_symlink_where_git_now_has_a_directory_is_archived_not_followed(ws, tmp_path):
    tree = ws.deploy()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tree / "stacks/web/newdir")
    ws.repo.write("stacks/web/newdir/file.txt", "from git\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))
    displaced = dict(result.displaced)
    assert set(displaced) == {"stacks/web/newdir"}
    assert displaced["stacks/web/newdir"].is_symlink() and os.readlink(displaced["stacks/web/newdir"]) == str(outside)
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert snapshot(tree) == with_dirs(ws.repo.files(b, PATHS))


def test_dependency_dropped_from_paths_is_removed_when_unmodified(ws):
    paths = (*PATHS, "shared/y.conf")
    tree = ws.deploy(paths=paths)
    (tree / "shared/y.conf").write_text("host y\n")
    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, ("stacks/web",)), TreeRevision(ws.a, paths))
    assert [name for name, _ in result.displaced] == ["shared/y.conf"]  # changed on the host: kept
    assert dict(result.displaced)["shared/y.conf"].read_text() == "host y\n"
    assert not (tree / "shared/x.conf").exists() and not (tree / "shared").exists()
    assert snapshot(tree) == with_dirs(ws.repo.files(b, ("stacks/web",)))


def test_dependency_dropped_keeps_its_directory_when_it_holds_other_files(ws):
    tree = ws.deploy()
    (tree / "shared/local.conf").write_text("host\n")
    result = ws.trees.update("web", TreeRevision(ws.a, ("stacks/web",)), TreeRevision(ws.a, PATHS))
    assert result.displaced == ()
    assert not (tree / "shared/x.conf").exists() and (tree / "shared/local.conf").read_text() == "host\n"


def test_unknown_history_displaces_what_differs_and_keeps_what_matches(ws):
    tree = ws.trees.path("web")
    (tree / "stacks/web").mkdir(parents=True)
    (tree / "stacks/web/compose.yaml").write_text("services:\n  app:\n    image: busybox\n")  # as in Git
    (tree / "stacks/web/app.conf").write_text("listen 81\n")  # not as in Git
    (tree / "stacks/web/data").mkdir()
    (tree / "stacks/web/data/x").write_text("data\n")
    os.utime(tree / "stacks/web/compose.yaml", (OLD, OLD))
    inode = (tree / "stacks/web/compose.yaml").stat().st_ino
    result = ws.trees.update("web", TreeRevision(ws.a, PATHS), None)
    displaced = dict(result.displaced)
    assert set(displaced) == {"stacks/web/app.conf"}
    displaced_dir(ws, displaced["stacks/web/app.conf"], "web", "stacks/web/app.conf")
    assert displaced["stacks/web/app.conf"].read_text() == "listen 81\n"
    assert (tree / "stacks/web/app.conf").read_text() == "listen 80\n"
    info = (tree / "stacks/web/compose.yaml").stat()
    assert (info.st_ino, info.st_mtime) == (inode, OLD)
    assert (tree / "stacks/web/data/x").read_text() == "data\n"
    assert result.restored_from is None


def test_submodule_is_refused_and_the_tree_is_left_alone(ws):
    tree = ws.deploy()
    (tree / "stacks/web/.env").write_text("A=1\n")
    before = snapshot(tree)
    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    ws.repo.remove("stacks/web/conf/nested.conf")
    b = ws.repo.commit("B with a submodule", gitlinks={"stacks/web/sub": ws.a})
    assert ws.objects.files(b, PATHS)["stacks/web/sub"].mode == "160000"
    with pytest.raises(GitSourceError, match="submodule") as raised:
        ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))
    assert "stacks/web/sub" in str(raised.value)
    assert snapshot(tree) == before
    assert not (ws.state / "archive").exists()


def test_submodule_outside_the_paths_does_not_matter(ws):
    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    b = ws.repo.commit("B", gitlinks={"stacks/db/sub": ws.a})
    tree = ws.deploy(commit=b)
    assert snapshot(tree) == with_dirs(ws.repo.files(b, PATHS))


# -- archive() and restoring ----------------------------------------------------------------------


def test_archive_moves_the_tree_and_update_brings_it_back(ws):
    tree = ws.deploy()
    (tree / "stacks/web/data").mkdir()
    (tree / "stacks/web/data/db").write_bytes(b"rows\0")
    (tree / "stacks/web/.env").write_text("A=1\n")
    before = snapshot(tree)

    archived = ws.trees.archive("web")
    assert archived is not None and archived.parent == ws.state / "archive" / "stacks"
    assert re.fullmatch(f"web-{TIME}", archived.name)
    assert not tree.exists() and not ws.trees.exists("web")
    assert snapshot(archived) == before
    assert ws.trees.archive("web") is None
    assert ws.trees.archive("never-deployed") is None

    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    b = ws.repo.commit("B")
    result = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS))
    assert result.restored_from == archived and not archived.exists()
    assert result.displaced == ()
    assert (tree / "stacks/web/data/db").read_bytes() == b"rows\0"
    assert (tree / "stacks/web/.env").read_text() == "A=1\n"
    assert (tree / "stacks/web/app.conf").read_text() == "listen 8080\n"
    assert list((ws.state / "archive" / "stacks").iterdir()) == []


def test_the_newest_archive_is_restored(ws):
    tree = ws.trees.path("web")
    (tree / "stacks/web").mkdir(parents=True)
    (tree / "stacks/web/data").write_text("new\n")
    newest = ws.trees.archive("web")
    older = ws.state / "archive" / "stacks" / "web-20000101T000000.000000Z"
    (older / "stacks/web").mkdir(parents=True)
    (older / "stacks/web/data").write_text("old\n")

    result = ws.trees.update("web", TreeRevision(ws.a, PATHS), None)
    assert result.restored_from == newest
    assert (tree / "stacks/web/data").read_text() == "new\n"
    assert (older / "stacks/web/data").read_text() == "old\n"  # the older one stays archived
    assert snapshot(tree) == {**with_dirs(ws.repo.files(ws.a, PATHS)), "stacks/web/data": file_entry("new\n")}


def test_an_archive_of_a_stack_with_a_longer_name_is_never_taken(ws):
    other = ws.deploy("web-2", paths=("stacks/web-2",))
    (other / "stacks/web-2/data").write_text("web-2's\n")
    archived_other = ws.trees.archive("web-2")
    result = ws.trees.update("web", TreeRevision(ws.a, PATHS), None)
    assert result.restored_from is None
    assert snapshot(ws.trees.path("web")) == with_dirs(ws.repo.files(ws.a, PATHS))
    assert (archived_other / "stacks/web-2/data").read_text() == "web-2's\n"


def test_own_older_archive_wins_over_a_newer_one_of_a_longer_name(ws):
    own = ws.state / "archive" / "stacks" / "web-20000101T000000.000000Z"
    (own / "stacks/web").mkdir(parents=True)
    (own / "stacks/web/data").write_text("web's\n")
    other = ws.deploy("web-2", paths=("stacks/web-2",))
    (other / "stacks/web-2/data").write_text("web-2's\n")
    archived_other = ws.trees.archive("web-2")
    result = ws.trees.update("web", TreeRevision(ws.a, PATHS), None)
    assert result.restored_from == own
    assert (ws.trees.path("web") / "stacks/web/data").read_text() == "web's\n"
    assert (archived_other / "stacks/web-2/data").read_text() == "web-2's\n"


def test_a_stack_named_displaced_does_not_take_the_displaced_files(ws):
    tree = ws.deploy()
    (tree / "stacks/web/app.conf").write_text("host\n")
    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    ws.repo.write("stacks/displaced/compose.yaml", "services: {}\n")
    b = ws.repo.commit("B")
    (_, where), = ws.trees.update("web", TreeRevision(b, PATHS), TreeRevision(ws.a, PATHS)).displaced
    result = ws.trees.update("displaced", TreeRevision(b, ("stacks/displaced",)), None)
    assert result.restored_from is None
    assert where.read_text() == "host\n"


def test_a_stack_named_checkout_does_not_take_the_migrated_checkout_files(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.write("stacks/checkout/compose.yaml", "services: {}\n")
    a = repo.commit("A")
    (repo.path / "notes.txt").write_text("notes\n")
    trees = StackTrees(tmp_path / "state", GitObjects(repo.path))
    migrate_checkout(repo.path, "stacks", trees, {})
    result = trees.update("checkout", TreeRevision(a, ("stacks/checkout",)), None)
    assert result.restored_from is None


# -- overlay() ------------------------------------------------------------------------------------


def test_overlay_links_what_only_the_tree_has(ws, tmp_path):
    tree = ws.deploy()
    web = tree / "stacks/web"
    (web / ".env").write_text("A=1\n")
    (web / "data/sub").mkdir(parents=True)
    (web / "data/sub/x").write_text("x\n")
    (web / "conf/local.conf").write_text("local\n")  # in a directory both have
    ws.repo.write("stacks/web/compose.yaml", "services: {newer: {image: busybox}}\n")
    ws.repo.write("stacks/web/render-only.txt", "r\n")
    b = ws.repo.commit("B")
    render = tmp_path / "render"
    export(ws.objects, b, render)
    rendered_before = snapshot(render)

    assert overlay(tree, render, "stacks/web") == 3
    after = snapshot(render)
    added = {name: entry for name, entry in after.items() if name not in rendered_before}
    assert added == {
        "stacks/web/.env": ("link", str(web / ".env")),
        "stacks/web/data": ("link", str(web / "data")),  # linked, not walked
        "stacks/web/conf/local.conf": ("link", str(web / "conf/local.conf")),
    }
    assert {name: after[name] for name in rendered_before} == rendered_before  # the render root's files win
    assert (render / "stacks/web/compose.yaml").read_text() == "services: {newer: {image: busybox}}\n"
    assert (render / "stacks/web/data/sub/x").read_text() == "x\n"


def test_overlay_does_nothing_without_the_directory(ws, tmp_path):
    tree = ws.deploy()
    render = tmp_path / "render"
    export(ws.objects, ws.a, render)
    before = snapshot(render)
    assert overlay(tree, render, "stacks/db") == 0  # the tree has no stacks/db
    assert overlay(tmp_path / "state/stacks/none", render, "stacks/web") == 0  # no tree at all
    assert overlay(tree, render, "stacks/web") == 0  # nothing untracked in the tree
    assert snapshot(render) == before


# -- export() -------------------------------------------------------------------------------------


def test_export_writes_every_tracked_file_but_submodules(ws, tmp_path):
    ws.repo.write("stacks/web/app.conf", "listen 8080\n")
    b = ws.repo.commit("B", gitlinks={"stacks/web/sub": ws.a})
    destination = tmp_path / "export"
    export(ws.objects, b, destination)
    assert snapshot(destination) == with_dirs(ws.repo.files(b))
    assert stat.S_IMODE((destination / "stacks/web/run.sh").stat().st_mode) == 0o755
    assert os.readlink(destination / "stacks/web/link") == "app.conf"
    assert not os.path.lexists(destination / "stacks/web/sub")


# -- migrate_checkout() ---------------------------------------------------------------------------


def contents(root: Path) -> collections.Counter:
    """Every file's and symlink's content under root (not .git): where it is does not matter."""
    return collections.Counter(
        entry[1:] for name, entry in snapshot(root).items() if entry[0] != "dir" and not name.startswith(".git/")
    )


@pytest.mark.parametrize("stack_path", ["stacks", "."])
def test_migrate_checkout_moves_untracked_files_where_they_belong(tmp_path, stack_path):
    prefix = "" if stack_path == "." else f"{stack_path}/"
    origin = Repo(tmp_path / "origin")
    origin.write(".gitignore", ".env\n")
    origin.write(f"{prefix}web/compose.yaml", "services: {}\n")
    origin.write(f"{prefix}web/app.conf", "listen 80\n")
    origin.write(f"{prefix}db/compose.yaml", "services: {}\n")
    origin.commit("A")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin.path), str(clone))
    assert (clone / ".git").is_dir()

    (clone / f"{prefix}web/data/db").mkdir(parents=True)
    (clone / f"{prefix}web/data/db/store.bin").write_bytes(b"\0rows\xff")
    (clone / f"{prefix}web/data/top.txt").write_text("top\n")
    (clone / f"{prefix}web/.env").write_text("SECRET=1\n")  # git-ignored
    (clone / "notes é.txt").write_text("notes\n")  # outside every stack directory
    (clone / f"{prefix}stray.txt").write_text("stray\n")  # in STACK_PATH, not in a stack
    (clone / f"{prefix}old/data").mkdir(parents=True)  # a whole stack directory no longer in Git
    (clone / f"{prefix}old/compose.yaml").write_text("services: {}\n")
    (clone / f"{prefix}old/data/x").write_text("old data\n")
    (clone / f"{prefix}web/app.conf").write_text("listen 80 # host\n")  # tracked, changed here
    before = contents(clone)

    state = tmp_path / "state"
    trees = StackTrees(state, GitObjects(clone))
    done = migrate_checkout(clone, stack_path, trees, {})

    archives = list((state / "archive").iterdir())
    assert len(archives) == 1 and re.fullmatch(f"checkout-{TIME}", archives[0].name)
    archive = archives[0]
    assert snapshot(trees.path("web")) == with_dirs({
        f"{prefix}web/data/db/store.bin": file_entry(b"\0rows\xff"),
        f"{prefix}web/data/top.txt": file_entry("top\n"),
        f"{prefix}web/.env": file_entry("SECRET=1\n"),
    })
    assert snapshot(trees.path("old")) == with_dirs({
        f"{prefix}old/compose.yaml": file_entry("services: {}\n"),
        f"{prefix}old/data/x": file_entry("old data\n"),
    })
    assert snapshot(archive) == with_dirs({
        "notes é.txt": file_entry("notes\n"),
        f"{prefix}stray.txt": file_entry("stray\n"),
        f"changed-tracked-files/{prefix}web/app.conf": file_entry("listen 80 # host\n"),
    })
    assert (clone / f"{prefix}web/app.conf").read_text() == "listen 80 # host\n"  # copied, not moved
    assert git(clone, "status", "--porcelain", "--ignored", "--untracked-files=all") == f"M {prefix}web/app.conf"
    assert sorted(trees.root.iterdir()) == [trees.path("old"), trees.path("web")]

    assert len(done) == 6
    assert sum(line.startswith("moved ") for line in done) == 5 and sum(line.startswith("copied ") for line in done) == 1
    assert before - (contents(clone) + contents(state)) == collections.Counter()  # every byte is still somewhere


def test_migrate_checkout_never_overwrites_an_existing_tree(tmp_path):
    origin = Repo(tmp_path / "origin")
    origin.write("stacks/web/compose.yaml", "services: {}\n")
    origin.commit("A")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin.path), str(clone))
    (clone / "stacks/web/.env").write_text("from the clone\n")
    trees = StackTrees(tmp_path / "state", GitObjects(clone))
    (trees.path("web") / "stacks/web").mkdir(parents=True)
    (trees.path("web") / "stacks/web/.env").write_text("already in the tree\n")
    migrate_checkout(clone, "stacks", trees, {})
    assert (trees.path("web") / "stacks/web/.env").read_text() == "already in the tree\n"
    (archive,) = (tmp_path / "state/archive").iterdir()
    assert (archive / "stacks/web/.env").read_text() == "from the clone\n"


def test_migrate_checkout_of_a_clean_clone_does_nothing(tmp_path):
    origin = Repo(tmp_path / "origin")
    origin.write("stacks/web/compose.yaml", "services: {}\n")
    origin.commit("A")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin.path), str(clone))
    trees = StackTrees(tmp_path / "state", GitObjects(clone))
    assert migrate_checkout(clone, "stacks", trees, {}) == []
    assert not (tmp_path / "state").exists()


def test_migrate_checkout_of_something_that_is_not_a_clone_fails(tmp_path):
    (tmp_path / "plain").mkdir()
    trees = StackTrees(tmp_path / "state", GitObjects(tmp_path / "plain"))
    with pytest.raises(GitSourceError, match="untracked"):
        migrate_checkout(tmp_path / "plain", "stacks", trees, {})


def test_files_lists_what_ls_tree_lists_for_those_paths_from_one_listing_per_commit(tmp_path):
    repo = Repo(tmp_path / "repo")
    for name in ("stacks/web/compose.yaml", "stacks/web/conf/nginx.conf", "stacks/web2/compose.yaml", "stacks/shared.env", "top"):
        repo.write(name, name)
    first = repo.commit()
    repo.write("stacks/web/compose.yaml", "changed")
    second = repo.commit()
    objects = GitObjects(repo.path)
    calls: list[tuple[str, ...]] = []
    original = objects._git

    def counting(*arguments, stdin=None):
        calls.append(arguments)
        return original(*arguments, stdin=stdin)

    objects._git = counting
    for commit in (first, second):
        for paths in (["stacks/web"], ["stacks/shared.env", "stacks/web2"], ["."], ["stacks/we"], []):
            expected = {}
            if paths:
                specs = [f":(literal){path}" if path != "." else "." for path in paths]
                listing = git(repo.path, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *specs)
                for record in filter(None, listing.split("\0")):
                    meta, _, name = record.partition("\t")
                    expected[name] = meta.split()[2]
            assert {name: entry.object_id for name, entry in objects.files(commit, paths).items()} == expected, paths
    assert [arguments[0] for arguments in calls] == ["ls-tree", "ls-tree"]  # once per commit
    assert set(objects.files(second, ["stacks/web"])) == {"stacks/web/compose.yaml", "stacks/web/conf/nginx.conf"}
    assert objects.object_format() == objects.object_format() == "sha1" and len(calls) == 3
