"""The render cache (composeflux.render_cache): a hit only when every render input is unchanged.

The checkout is a real Git work tree in tmp_path; its object ids come from `git write-tree` and
`git ls-tree` (what composeflux.gitsource reads at HEAD), so editing a tracked file changes its
id and the ids of the directories above it, as a new commit would. No Docker: the cache never
runs Compose, it reads the compose files' include/extends/env_file references itself.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from composeflux.checkout import Checkout
from composeflux.render import Renderer
from composeflux.render_cache import CACHE_FILE, RenderCache
from composeflux.rendered import StackHashes
from composeflux.stacks import Stack
from tests.fakes.compose import FakeCompose

KEY = b"k" * 32
VERSION = "2.29.7"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}

COMPOSE = """\
include:
  - ../shared/included.yaml
  - path: ../shared/second.yaml
    env_file: ../shared/second.env
services:
  app:
    image: nginx:${TAG:-1.27}
    env_file:
      - ../shared/common.env
      - path: ../shared/optional.env
        required: false
    extends:
      file: ../shared/base.yaml
      service: base
    volumes:
      - {type: bind, source: ../shared/x.conf, target: /etc/x.conf, read_only: true}
"""

FILES = {
    "stacks/web/compose.yaml": COMPOSE,
    "stacks/web/.env": "TAG=1.27\n",
    "stacks/shared/included.yaml": "services:\n  side:\n    image: busybox\n    env_file: side.env\n",
    "stacks/shared/side.env": "SIDE=1\n",
    "stacks/shared/second.yaml": "services:\n  second:\n    image: busybox\n",
    "stacks/shared/second.env": "SECOND=1\n",
    "stacks/shared/base.yaml": "services:\n  base:\n    environment: {BASE: '1'}\n",
    "stacks/shared/common.env": "COMMON=1\n",
    "stacks/shared/optional.env": "OPTIONAL=1\n",
    "stacks/shared/x.conf": "x = 1\n",
    "stacks/shared/unused.conf": "nobody uses this\n",
    "stacks/other/compose.yaml": "services:\n  other:\n    image: busybox\n",
    "README.md": "stacks\n",
}

HASHES = StackHashes("web", "s" * 64, {"app": "a" * 64, "side": "b" * 64, "second": "c" * 64}, ("stacks/shared/x.conf",))


class WorkTree:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q")
        self._snapshot: Checkout | None = None  # reused until write/append/remove change the tree

    def git(self, *arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.root), *arguments], check=True, capture_output=True, text=True, timeout=30, env=GIT_ENV
        ).stdout

    def write(self, path: str, text: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
        self._snapshot = None

    def append(self, path: str, text: str = "CHANGED=1\n") -> None:
        with open(self.root / path, "a") as handle:
            handle.write(text)
        self._snapshot = None

    def remove(self, path: str) -> None:
        (self.root / path).unlink()
        self._snapshot = None

    def checkout(self) -> Checkout:
        """What a sync would see if the work tree were committed now."""
        if self._snapshot is None:
            self._snapshot = self._take_snapshot()
        return self._snapshot

    def _take_snapshot(self) -> Checkout:
        self.git("add", "-A")
        tree = self.git("write-tree").strip()
        ids = {}
        for entry in self.git("ls-tree", "-r", "-t", "-z", "--full-tree", tree).split("\0"):
            if entry:
                meta, _, name = entry.partition("\t")
                ids[name] = meta.split()[2]
        ids["."] = tree
        return Checkout(self.root, "0" * 40, "snapshot", ids)

    def stack(self, name: str = "web") -> Stack:
        directory = self.root / "stacks" / name
        return Stack(name, directory, (directory / "compose.yaml",))


@pytest.fixture
def work(tmp_path) -> WorkTree:
    work = WorkTree(tmp_path / "clone")
    for path, text in FILES.items():
        work.write(path, text)
    return work


@pytest.fixture
def state(tmp_path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def cache_for(work: WorkTree, state: Path, env=None, version: str = VERSION, key: bytes = KEY) -> RenderCache:
    renderer = Renderer(FakeCompose(), work.checkout(), key, env or {}, mask=str)
    return RenderCache(state, renderer, version)


def store(work: WorkTree, state: Path, hashes: StackHashes = HASHES, **kwargs) -> None:
    """One sync that rendered the stack: store, save."""
    cache = cache_for(work, state, **kwargs)
    cache.store(work.stack(hashes.name), hashes)
    cache.save()


def lookup(work: WorkTree, state: Path, name: str = "web", **kwargs) -> StackHashes | None:
    """The next sync: a fresh cache read from the state directory."""
    return cache_for(work, state, **kwargs).lookup(work.stack(name))


def saved(state: Path) -> dict:
    return json.loads((state / CACHE_FILE).read_text())


# -- hits -----------------------------------------------------------------------------------------


def test_unchanged_inputs_hit(work, state):
    store(work, state)
    assert lookup(work, state) == HASHES


def test_a_real_render_stored_as_a_sync_does_hits(work, state):
    cache = cache_for(work, state, env={"TAG": "1.28"})
    rendered = cache.renderer.render(work.stack())
    cache.store(work.stack(), rendered.hashes)
    cache.save()
    assert rendered.hashes.dependencies == ("stacks/shared/x.conf",)
    assert lookup(work, state, env={"TAG": "1.28"}) == rendered.hashes


def test_a_hit_stays_cached_across_syncs(work, state):
    store(work, state)
    for _ in range(3):
        cache = cache_for(work, state)
        assert cache.lookup(work.stack()) == HASHES
        cache.save()


def test_changes_elsewhere_in_the_repository_still_hit(work, state):
    store(work, state)
    work.append("README.md", "more\n")
    work.append("stacks/other/compose.yaml", "    command: [sleep, '1']\n")
    work.append("stacks/shared/unused.conf")
    work.write("stacks/new/compose.yaml", "services: {n: {image: busybox}}\n")
    assert lookup(work, state) == HASHES


# -- misses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "stacks/web/compose.yaml",
        "stacks/web/.env",
        "stacks/shared/included.yaml",  # include: (short form)
        "stacks/shared/side.env",  # env_file: of a service in an included file
        "stacks/shared/second.yaml",  # include: (long form) path
        "stacks/shared/second.env",  # include: (long form) env_file
        "stacks/shared/base.yaml",  # extends: {file: ...}
        "stacks/shared/common.env",  # env_file: (string)
        "stacks/shared/optional.env",  # env_file: {path: ..., required: false}
        "stacks/shared/x.conf",  # a dependency: a bind-mounted file outside the stack directory
    ],
)
def test_editing_an_input_misses(work, state, path):
    store(work, state)
    work.append(path, "# edited\n")
    assert lookup(work, state) is None


@pytest.mark.parametrize("path", ["stacks/shared/.env", "stacks/web/compose.override.yaml", "stacks/shared/optional.env"])
def test_an_input_appearing_or_disappearing_misses(work, state, path):
    """The included file's directory .env appearing; an optional env_file going away."""
    store(work, state)
    if (work.root / path).exists():
        work.remove(path)
    else:
        work.write(path, "ADDED=1\n")
    if path.endswith("compose.override.yaml"):
        # An override file is a compose file of the stack: discovery lists it.
        stack = Stack("web", work.root / "stacks/web", (work.root / "stacks/web/compose.yaml", work.root / path))
        assert cache_for(work, state).lookup(stack) is None
    else:
        assert lookup(work, state) is None


def test_editing_an_untracked_env_file_misses(work, state):
    """A .env kept out of Git (gitignored, survives `git clean -ffd`) is hashed by its content."""
    work.write(".gitignore", "stacks/web/.env\nstacks/shared/common.env\n")
    checkout = work.checkout()
    assert "stacks/web/.env" not in checkout.object_ids and "stacks/shared/common.env" not in checkout.object_ids
    store(work, state)
    assert lookup(work, state) == HASHES
    work.append("stacks/web/.env")
    assert lookup(work, state) is None
    store(work, state)
    work.append("stacks/shared/common.env")
    assert lookup(work, state) is None


def test_a_changed_interpolation_environment_misses(work, state):
    store(work, state, env={"TAG": "1.27", "PASSWORD": "hunter2-secret"})
    assert lookup(work, state, env={"TAG": "1.27", "PASSWORD": "hunter2-secret"}) == HASHES
    assert lookup(work, state, env={"TAG": "1.27", "PASSWORD": "another-secret"}) is None
    assert lookup(work, state, env={"TAG": "1.27"}) is None
    assert lookup(work, state, env={"TAG": "1.27", "PASSWORD": "hunter2-secret", "NEW": "x"}) is None
    assert "hunter2-secret" not in (state / CACHE_FILE).read_text()  # only keyed hashes are stored


def test_a_changed_compose_version_misses(work, state):
    store(work, state, version="2.29.7")
    assert lookup(work, state, version="2.29.7") == HASHES
    assert lookup(work, state, version="2.30.0") is None


def test_a_changed_hash_key_misses(work, state):
    store(work, state, key=KEY)
    assert lookup(work, state, key=b"o" * 32) is None


def test_a_changed_object_id_of_a_dependency_misses(work, state):
    """Dependencies are found by the render (bind mounts...), not in the YAML: only their id counts."""
    hashes = StackHashes("web", "s" * 64, {"app": "a" * 64}, ("stacks/shared/unused.conf",))
    store(work, state, hashes)
    assert lookup(work, state) == hashes
    work.append("stacks/shared/x.conf")  # not a dependency of this entry, not read by the render
    assert lookup(work, state) == hashes
    work.append("stacks/shared/unused.conf")
    assert lookup(work, state) is None


def test_another_stack_is_cached_on_its_own(work, state):
    other = StackHashes("other", "o" * 64, {"other": "d" * 64})
    cache = cache_for(work, state)
    cache.store(work.stack(), HASHES)
    cache.store(work.stack("other"), other)
    cache.save()
    work.append("stacks/shared/common.env")
    cache = cache_for(work, state)
    assert cache.lookup(work.stack()) is None
    assert cache.lookup(work.stack("other")) == other


# -- uncacheable ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "    env_file: ${X}.env\n",
        "    env_file:\n      - path: $ENVDIR/app.env\n",
        "    extends:\n      file: ${BASE:-../shared/base.yaml}\n      service: base\n",
    ],
)
def test_a_reference_built_from_a_variable_is_uncacheable(work, state, reference):
    store(work, state)
    assert lookup(work, state) == HASHES
    work.write("stacks/web/compose.yaml", "services:\n  app:\n    image: nginx\n" + reference)
    assert lookup(work, state) is None
    store(work, state)
    assert "web" not in saved(state)
    assert lookup(work, state) is None


@pytest.mark.parametrize("include", ["include:\n  - ${SHARED}/inc.yaml\n", "include:\n  - https://example.org/inc.yaml\n"])
def test_an_include_that_cannot_be_followed_is_uncacheable(work, state, include):
    work.write("stacks/web/compose.yaml", include + "services:\n  app:\n    image: nginx\n")
    cache = cache_for(work, state)
    cache.store(work.stack(), HASHES)
    assert cache.fresh == {}
    cache.save()
    assert saved(state) == {}
    assert lookup(work, state) is None


def test_a_compose_file_that_is_not_yaml_is_uncacheable(work, state):
    store(work, state)
    work.write("stacks/web/compose.yaml", "services: [unclosed\n")
    assert lookup(work, state) is None
    work.write("stacks/web/compose.yaml", "- just\n- a list\n")
    assert lookup(work, state) is None


def test_services_that_are_not_a_mapping_miss_instead_of_raising(work, state):
    """A stack that had been cached gets an invalid compose file (Compose: "services must be a
    mapping"). The sync must fail that stack only; an exception from lookup() ends the whole sync."""
    store(work, state)
    work.write("stacks/web/compose.yaml", "services:\n  - app\n")
    assert lookup(work, state) is None


# -- a broken cache file is a miss ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all {",
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        b'{"web": "entry"}',
        b'{"web": null}',
        b'{"web": ["key", "stack_hash"]}',
        b'{"web": {}}',
        b'{"web": {"key": "k"}}',
        b'{"web": {"key": "k", "stack_hash": "s", "service_hashes": {}, "dependencies": 7}}',
        b'{"web": {"key": 1, "stack_hash": null, "service_hashes": "x", "dependencies": null}}',
    ],
)
def test_a_junk_cache_file_misses_and_is_replaced(work, state, content):
    (state / CACHE_FILE).write_bytes(content)
    cache = cache_for(work, state)
    assert cache.lookup(work.stack()) is None
    cache.store(work.stack(), HASHES)
    cache.save()
    assert lookup(work, state) == HASHES


def tampered(work, state, **fields) -> None:
    """A stored entry with the right key, some of its other fields replaced."""
    store(work, state)
    entries = saved(state)
    entries["web"].update(fields)
    (state / CACHE_FILE).write_text(json.dumps(entries))


@pytest.mark.parametrize(
    "fields",
    [{"service_hashes": "abc"}, {"service_hashes": 5}, {"service_hashes": None}, {"service_hashes": ["x"]}, {"dependencies": "abc"}],
    ids=["hashes-string", "hashes-int", "hashes-null", "hashes-list", "dependencies-string"],
)
def test_an_entry_of_the_wrong_shape_misses(work, state, fields):
    tampered(work, state, **fields)
    assert lookup(work, state) is None


@pytest.mark.parametrize(
    "fields",
    [{"stack_hash": None}, {"stack_hash": 5}, {"service_hashes": {"app": 5}}, {"service_hashes": ["ab", "cd"]}],
    ids=["stack-hash-null", "stack-hash-int", "hash-value-int", "hashes-pairs"],
)
def test_an_entry_of_the_wrong_shape_with_the_right_key_misses(work, state, fields):
    tampered(work, state, **fields)
    assert lookup(work, state) is None


# -- save -----------------------------------------------------------------------------------------


def test_save_keeps_only_the_entries_seen_in_this_run(work, state):
    work.write("stacks/gone/compose.yaml", "services: {g: {image: busybox}}\n")
    cache = cache_for(work, state)
    for name in ("web", "other", "gone"):
        cache.store(work.stack(name), StackHashes(name, name * 8, {}))
    cache.save()
    assert set(saved(state)) == {"web", "other", "gone"}

    work.append("stacks/other/compose.yaml", "    init: true\n")
    cache = cache_for(work, state)
    assert cache.lookup(work.stack("web")) is not None  # hit: kept
    assert cache.lookup(work.stack("other")) is None  # miss, not stored again: dropped
    cache.save()  # "gone" was neither looked up nor stored: dropped
    assert set(saved(state)) == {"web"}

    cache = cache_for(work, state)
    cache.save()
    assert saved(state) == {}


def test_save_writes_mode_0600(work, state):
    (state / CACHE_FILE).write_text("{}")
    os.chmod(state / CACHE_FILE, 0o644)
    cache = cache_for(work, state)
    cache.store(work.stack(), HASHES)
    cache.save()
    assert stat.S_IMODE(os.stat(state / CACHE_FILE).st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == [CACHE_FILE]  # no temporary file left
    entry = saved(state)["web"]
    assert entry["stack_hash"] == HASHES.stack_hash and entry["service_hashes"] == HASHES.service_hashes
