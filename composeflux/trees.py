"""Per-stack working trees: each deployed stack runs from files of its own, at its own commit.

    $STATE_DIRECTORY/stacks/<name>/   the stack's tree, laid out like the repository: its own
                                      directory (<STACK_PATH>/<name>) and the tracked files it
                                      uses outside it (../shared/x.conf, a build context)
    $STATE_DIRECTORY/archive/         what composeflux moved out of the way, never deleted:
                                      stacks/<name>-<time>/ a pruned stack's whole tree
                                      displaced-<time>/...  files a tracked file replaced
                                      checkout-<time>/...   what the move from 0.1 set aside

The rules that keep data safe:
- A tree changes only when its stack is deployed (or, later, rolled back): `update()` moves it
  from the commit it holds to the one being deployed. A stack that is unchanged, fails to
  render or is skipped keeps its files, whatever the rest of the repository does.
- Untracked files (data directories, a git-ignored .env) are never touched, and there is no
  `git clean`. Only files Git put there are changed or removed, and only while they still hold
  exactly what Git put there; a file that was changed on the host, or an untracked one in the
  way of a new tracked file, is moved to the archive first, and the log says where.
- A pruned stack's tree is moved to the archive, not deleted; deploying a stack of that name
  again moves the newest archived tree back.

Git is only read here (`ls-tree`, `cat-file --batch` on composeflux's clone): what a tree holds
is decided by this module, not by a Git index.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from composeflux.checkout import TreeRevision
from composeflux.errors import GitSourceError
from composeflux.stacks import LFS_POINTER

log = logging.getLogger(__name__)

TREES_DIR = "stacks"
ARCHIVE_DIR = "archive"
GIT_TIMEOUT = 300
FILE_MODES = {"100644": 0o644, "100755": 0o755}
SYMLINK_MODE = "120000"
GITLINK_MODE = "160000"  # a submodule: its content is not in this repository


def timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


@dataclasses.dataclass(frozen=True)
class Entry:
    mode: str
    object_id: str


@dataclasses.dataclass(frozen=True)
class TreeUpdate:
    revision: TreeRevision
    displaced: tuple[tuple[str, Path], ...]  # (repository path, where the old file went)
    restored_from: Path | None = None  # the archived tree this stack got back


class GitObjects:
    """Reads trees and blobs from composeflux's clone. A commit's file listing is read once (one
    `git ls-tree` of the whole commit) and kept for this object's life: every stack deployed in
    a sync asks about the same two commits (the new one and the one its tree was at). Safe to
    share between the deploy threads."""

    LISTINGS_KEPT = 8  # commits; a sync needs two or three (a rollback's good one)

    def __init__(self, repository: Path, env: dict[str, str] | None = None) -> None:
        self.repository = repository
        self.env = {**os.environ, **(env or {})}
        self._listings: dict[str, dict[str, Entry]] = {}
        self._lock = threading.Lock()
        self._object_format: str | None = None

    def _git(self, *arguments: str, stdin: bytes | None = None) -> bytes:
        try:
            completed = subprocess.run(
                ["git", "-C", str(self.repository), *arguments],
                input=stdin, capture_output=True, env=self.env, timeout=GIT_TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitSourceError(f"cannot read the clone at {self.repository}: {exc}") from None
        if completed.returncode != 0:
            message = completed.stderr.decode(errors="replace").strip().splitlines()
            raise GitSourceError(f"git {arguments[0]} failed in {self.repository}: {'; '.join(message[-3:])}")
        return completed.stdout

    def files(self, commit: str, paths: Iterable[str]) -> dict[str, Entry]:
        """Every tracked file (and symlink, and submodule) under `paths` at `commit` (as
        `git ls-tree -r -- :(literal)PATH...` would list them; "." is everything)."""
        wanted = list(paths)
        if not wanted:
            return {}
        listing = self._listing(commit)
        if "." in wanted:
            return dict(listing)
        exact = set(wanted)
        under = tuple(f"{path}/" for path in wanted)
        return {path: entry for path, entry in listing.items() if path in exact or path.startswith(under)}

    def _listing(self, commit: str) -> dict[str, Entry]:
        with self._lock:
            known = self._listings.get(commit)
        if known is not None:
            return known
        listing = self._git("ls-tree", "-r", "-z", "--full-tree", commit)
        files = {}
        for record in listing.split(b"\0"):
            if record:
                meta, _, name = record.partition(b"\t")
                mode, _kind, object_id = meta.decode().split()
                files[name.decode("utf-8", errors="surrogateescape")] = Entry(mode, object_id)
        with self._lock:
            while len(self._listings) >= self.LISTINGS_KEPT:
                del self._listings[next(iter(self._listings))]  # the oldest
            self._listings[commit] = files
        return files

    def blobs(self, object_ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """(object id, content) for each id, through one `git cat-file --batch`."""
        ids = list(dict.fromkeys(object_ids))
        if not ids:
            return
        output = self._git("cat-file", "--batch", stdin="".join(f"{i}\n" for i in ids).encode())
        position = 0
        for _ in ids:
            header_end = output.index(b"\n", position)
            fields = output[position:header_end].decode().split()
            if len(fields) != 3:  # "<id> missing": the clone lacks an object its own tree names
                raise GitSourceError(f"the clone at {self.repository} is missing object {fields[0]}")
            object_id, _kind, size = fields
            start = header_end + 1
            yield object_id, output[start : start + int(size)]
            position = start + int(size) + 1

    def object_format(self) -> str:
        if self._object_format is None:
            self._object_format = self._git("rev-parse", "--show-object-format").decode().strip() or "sha1"
        return self._object_format


def blob_id(content: bytes, object_format: str = "sha1") -> str:
    """Git's id of a blob with this content (what `git hash-object` prints)."""
    digest = hashlib.new(object_format)
    digest.update(b"blob %d\0" % len(content))
    digest.update(content)
    return digest.hexdigest()


def on_disk(path: Path) -> tuple[str, bytes] | None:
    """(git mode, content) of what is at `path` now, for a regular file or symlink; else None."""
    try:
        info = path.lstat()
    except (FileNotFoundError, NotADirectoryError):  # a parent is missing, or is a file
        return None
    if stat.S_ISLNK(info.st_mode):
        return SYMLINK_MODE, os.readlink(path).encode("utf-8", errors="surrogateescape")
    if stat.S_ISREG(info.st_mode):
        return ("100755" if info.st_mode & 0o111 else "100644"), path.read_bytes()
    return None


class StackTrees:
    def __init__(self, state_dir: Path, objects: GitObjects) -> None:
        self.root = state_dir / TREES_DIR
        self.archive_root = state_dir / ARCHIVE_DIR
        self.pruned_root = self.archive_root / TREES_DIR  # apart from displaced-*, checkout-*
        self.objects = objects
        self._format: str | None = None

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).is_dir()

    def update(self, name: str, target: TreeRevision, previous: TreeRevision | None) -> TreeUpdate:
        """Bring the stack's tree from `previous` (what it holds, None: unknown) to `target`."""
        tree = self.path(name)
        wanted = self.objects.files(target.commit, target.paths)
        submodules = sorted(path for path, entry in wanted.items() if entry.mode == GITLINK_MODE)
        if submodules:
            raise GitSourceError(
                f"{', '.join(submodules)}: a Git submodule, which composeflux cannot deploy (its files are not in this repository)"
            )
        had = self.objects.files(previous.commit, previous.paths) if previous else {}
        restored = None
        if not tree.exists():
            restored = self._restore_archived(name)
        tree.mkdir(parents=True, exist_ok=True)
        stamp = timestamp()
        displaced: list[tuple[str, Path]] = []

        # Files already there byte for byte are left alone (their mtime too).
        needed = sorted(path for path, entry in wanted.items() if not self._matches(on_disk(tree / path), entry))
        blobs = dict(self.objects.blobs(wanted[path].object_id for path in needed))
        pointers = sorted(path for path in needed if blobs[wanted[path].object_id].startswith(LFS_POINTER))
        if pointers:
            raise GitSourceError(f"{', '.join(pointers)}: a Git LFS pointer, not the file; composeflux does not fetch LFS content")
        # Files Git put there that the target no longer has: removed while unmodified.
        for path in sorted(set(had) - set(wanted), reverse=True):
            current = on_disk(tree / path)
            if current is None or self._blocking_parent(tree, path) is not None:
                continue  # gone already, or behind a link or file the host put there: not ours
            if self._matches(current, had[path]):
                (tree / path).unlink()
            else:
                displaced.append((path, self._displace(tree, path, stamp)))
            self._remove_empty_parents(tree, path)

        for path in needed:
            entry = wanted[path]
            target_path = tree / path
            blocked = self._blocking_parent(tree, path)
            if blocked is not None:
                displaced.append((blocked, self._displace(tree, blocked, stamp)))
            if os.path.lexists(target_path):
                if target_path.is_dir() and not target_path.is_symlink():
                    displaced.append((path, self._displace(tree, path, stamp)))
                elif not (path in had and self._matches(on_disk(target_path), had[path])):
                    # Untracked, or changed on this host since Git put it there: keep it.
                    displaced.append((path, self._displace(tree, path, stamp)))
            self._write(target_path, entry, blobs[entry.object_id])
        for path, where in displaced:
            log.warning("%s: %s was in the way of the file from Git; moved to %s", name, path, where)
        return TreeUpdate(target, tuple(displaced), restored)

    def archive(self, name: str) -> Path | None:
        """Move a pruned stack's tree to the archive; returns where it went."""
        tree = self.path(name)
        if not tree.exists():
            return None
        self.pruned_root.mkdir(parents=True, exist_ok=True)
        destination = self.pruned_root / f"{name}-{timestamp()}"
        os.rename(tree, destination)
        return destination

    def _restore_archived(self, name: str) -> Path | None:
        try:
            # <name>-<time>, and not another stack whose name starts with <name>- (web-2, ...).
            candidates = sorted(
                p for p in self.pruned_root.iterdir()
                if p.is_dir() and p.name.startswith(f"{name}-") and _is_timestamp(p.name[len(name) + 1 :])
            )
        except FileNotFoundError:
            return None
        if not candidates:
            return None
        newest = candidates[-1]
        self.root.mkdir(parents=True, exist_ok=True)
        os.rename(newest, self.path(name))
        log.warning("%s: restored its earlier files (data next to the compose file) from %s", name, newest)
        return newest

    def _matches(self, current: tuple[str, bytes] | None, entry: Entry) -> bool:
        if current is None:
            return False
        mode, content = current
        if (mode == SYMLINK_MODE) != (entry.mode == SYMLINK_MODE):
            return False
        if mode != SYMLINK_MODE and mode != entry.mode:
            return False  # only the executable bit differs: rewrite it (content is the same)
        if self._format is None:
            self._format = self.objects.object_format()
        return blob_id(content, self._format) == entry.object_id

    def _displace(self, tree: Path, path: str, stamp: str) -> Path:
        destination = self.archive_root / f"displaced-{stamp}" / tree.name / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        _move(tree / path, destination)
        return destination

    @staticmethod
    def _blocking_parent(tree: Path, path: str) -> str | None:
        """A parent of `path` that exists as something other than a directory (a file, a link)."""
        parts = PurePosixPath(path).parts[:-1]
        for depth in range(1, len(parts) + 1):
            candidate = tree.joinpath(*parts[:depth])
            if os.path.lexists(candidate) and (candidate.is_symlink() or not candidate.is_dir()):
                return "/".join(parts[:depth])
        return None

    @staticmethod
    def _write(target: Path, entry: Entry, content: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.composeflux-new")
        if os.path.lexists(temporary):
            temporary.unlink()
        if entry.mode == SYMLINK_MODE:
            os.symlink(content.decode("utf-8", errors="surrogateescape"), temporary)
        else:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODES.get(entry.mode, 0o644))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.chmod(temporary, FILE_MODES.get(entry.mode, 0o644))
        os.replace(temporary, target)

    @staticmethod
    def _remove_empty_parents(tree: Path, path: str) -> None:
        parent = (tree / path).parent
        while parent != tree:
            try:
                parent.rmdir()  # only if empty: anything else in it stays
            except OSError:
                return
            parent = parent.parent


def _is_timestamp(text: str) -> bool:
    return len(text) == len(timestamp()) and text[:8].isdigit() and text[8:9] == "T" and text.endswith("Z")


def _move(source: Path, destination: Path) -> None:
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(str(source), str(destination))  # another file system: copied, then removed


def overlay(tree: Path, render_root: Path, directory: str) -> int:
    """Make the stack's untracked files visible to the render: for every entry of
    tree/<directory> that the render checkout does not have, a symlink to it in
    render_root/<directory> (a git-ignored .env, an env_file kept on the host). Descends only
    into directories both have, so a data directory is linked, never walked. Returns the count."""
    source, target = tree / directory, render_root / directory
    if not source.is_dir() or not target.is_dir() or source.is_symlink():
        return 0
    linked = 0
    for entry in os.scandir(source):
        destination = target / entry.name
        if os.path.lexists(destination):
            if entry.is_dir(follow_symlinks=False) and destination.is_dir() and not destination.is_symlink():
                linked += overlay(tree, render_root, f"{directory}/{entry.name}")
            continue
        os.symlink(entry.path, destination)
        linked += 1
    return linked


def export(objects: GitObjects, commit: str, destination: Path) -> None:
    """Write every tracked file of `commit` into the empty directory `destination` (a dry run
    renders there, leaving composeflux's clone and every stack's tree as they are)."""
    files = {path: entry for path, entry in objects.files(commit, ["."]).items() if entry.mode != GITLINK_MODE}
    blobs = dict(objects.blobs(entry.object_id for entry in files.values()))
    for path, entry in files.items():
        StackTrees._write(destination / path, entry, blobs[entry.object_id])


def migrate_checkout(clone: Path, stack_paths: str | list[str], trees: StackTrees, env: dict[str, str]) -> list[str]:
    """Move the untracked files of a composeflux 0.1 checkout (the one shared clone that every
    stack ran from) to where they belong now, before that clone becomes a pristine render
    checkout: what lies in a stack's directory moves into that stack's tree, anything else to
    the archive; files Git tracks but that were changed on this host are copied to the archive.
    Nothing is deleted. Returns what was done, one line each, for the log."""
    status = subprocess.run(
        ["git", "-C", str(clone), "status", "--porcelain=v1", "-z", "--ignored", "--untracked-files=normal"],
        capture_output=True, env={**os.environ, **env}, timeout=GIT_TIMEOUT, check=False,
    )
    if status.returncode != 0:
        raise GitSourceError(f"cannot list the untracked files of {clone}: {status.stderr.decode(errors='replace').strip()}")
    paths = [stack_paths] if isinstance(stack_paths, str) else stack_paths
    prefixes = ["" if path in ("", ".") else path.strip("/") + "/" for path in paths]
    stamp = timestamp()
    done = []
    for record in status.stdout.split(b"\0"):
        if len(record) < 4:
            continue
        code, path = record[:2].decode(), record[3:].decode("utf-8", errors="surrogateescape").rstrip("/")
        source = clone / path
        if code in ("??", "!!"):
            prefix = next((p for p in prefixes if path.startswith(p)), None)
            inside = path[len(prefix):].split("/", 1) if prefix is not None else []
            if len(inside) == 2 or (len(inside) == 1 and source.is_dir() and not source.is_symlink()):
                destination = trees.path(inside[0]) / path
            else:
                destination = trees.archive_root / f"checkout-{stamp}" / path
            if os.path.lexists(destination):
                destination = trees.archive_root / f"checkout-{stamp}" / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            _move(source, destination)
            done.append(f"moved {path} to {destination}")
        elif os.path.lexists(source) and not source.is_dir():
            destination = trees.archive_root / f"checkout-{stamp}" / "changed-tracked-files" / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination, follow_symlinks=False)  # a changed symlink as a symlink
            done.append(f"copied {path} (changed on this host) to {destination}")
    return done
