"""Remember each stack's hashes between syncs, so an unchanged stack is not re-rendered.

`docker compose config` costs ~0.1 s per stack; a no-op sync of 50 stacks must not pay that.
A cached entry is reused only when everything the render read is provably the same: the
stack directory's Git tree, every file the compose files pull in (include, extends, env_file,
.env), every local file the hash covers, the interpolation environment, and the versions of
Compose and composeflux. The cache holds only keyed hashes, never the rendered project (it
contains secret values): a stack that has to be deployed is always rendered afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from composeflux import __version__
from composeflux.inputs import UnknownInputs, render_inputs
from composeflux.render import Renderer
from composeflux.rendered import JSON, StackHashes
from composeflux.stacks import Stack

log = logging.getLogger(__name__)

CACHE_FILE = "render-cache.json"
# Of an entry's meaning: 2 since `creates` and `needs` also hold volumes. Entries of another
# format never match (their stacks are rendered again once, and their hashes are the same).
FORMAT = 2


class RenderCache:
    def __init__(self, state_dir: Path, renderer: Renderer, compose_version: str) -> None:
        self.path = state_dir / CACHE_FILE
        self.renderer = renderer
        self.compose_version = compose_version
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}  # a cache is only a cache: anything unreadable means "render again"
        self.entries: dict[str, JSON] = entries if isinstance(entries, dict) else {}
        self.fresh: dict[str, dict[str, JSON]] = {}

    def lookup(self, stack: Stack, renderer: Renderer | None = None) -> StackHashes | None:
        """The stack's hashes from an earlier render whose inputs are all unchanged, or None.
        `renderer`: the one that renders this stack (its interpolation environment is per stack)."""
        renderer = renderer or self.renderer
        entry = _well_formed(self.entries.get(stack.name))
        if entry is None:
            return None  # no entry, or one of another shape: render again
        key = self._key(stack, entry["dependencies"], renderer)
        if key is None or key != entry["key"]:
            return None
        self.fresh[stack.name] = entry
        return StackHashes(
            stack.name, entry["stack_hash"], dict(entry["service_hashes"]), tuple(entry["dependencies"]),
            tuple(entry["creates"]), tuple(entry["needs"]),
        )

    def key(self, stack: Stack, renderer: Renderer | None = None) -> str:
        """A fingerprint of what this stack's render reads, for failure backoff: every input
        where they can be listed, else (a compose file that does not even parse) the Git tree
        of its directory and its variables."""
        renderer = renderer or self.renderer
        exact = self._key(stack, [], renderer)
        if exact is not None:
            return exact
        directory = renderer.relative_path(stack.directory)
        return renderer.hmac(
            "render-fallback",
            {
                "composeflux": __version__,
                "compose": self.compose_version,
                "stack": stack.name,
                "tree": renderer.checkout.object_ids.get(directory) if directory is not None else None,
                "env": renderer.env,
            },
        )

    def store(self, stack: Stack, hashes: StackHashes, renderer: Renderer | None = None) -> None:
        key = self._key(stack, list(hashes.dependencies), renderer or self.renderer)
        if key is not None:
            self.fresh[stack.name] = {
                "key": key,
                "stack_hash": hashes.stack_hash,
                "service_hashes": hashes.service_hashes,
                "dependencies": list(hashes.dependencies),
                "creates": list(hashes.creates),
                "needs": list(hashes.needs),
            }

    def save(self) -> None:
        """Keep the entries seen in this sync (stacks deleted from Git drop out). A cache that
        cannot be written only costs renders next time: a warning, not a failed sync."""
        temporary = self.path.with_suffix(".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(self.fresh, handle, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.warning("Cannot write the render cache %s (%s); the next sync renders every stack", self.path, exc.strerror)

    def _key(self, stack: Stack, dependencies: list[str], renderer: Renderer) -> str | None:
        try:
            inputs = render_inputs(stack)
        except UnknownInputs as why:
            log.debug("%s: not cached: %s", stack.name, why)
            return None
        checkout = renderer.checkout
        directory = renderer.relative_path(stack.directory)
        # Keyed by checkout-relative paths and the deploy directory, not by where the checkout is:
        # a dry run, which renders in a scratch copy, shares the cache with the real sync.
        digests = {renderer.relative_path(path) or str(path): self._digest(path, renderer) for path in inputs}
        digests.update({path: checkout.object_ids.get(path, "untracked") for path in dependencies})
        return renderer.hmac(
            "render-cache",
            {
                "format": FORMAT,
                "composeflux": __version__,
                "compose": self.compose_version,
                "stack": stack.name,
                "directory": str(renderer.deploy_directory(stack)),
                "tree": checkout.object_ids.get(directory) if directory is not None else None,
                "env": renderer.env,
                "inputs": digests,
            },
        )

    def _digest(self, path: Path, renderer: Renderer) -> str:
        relative = renderer.relative_path(path)
        if relative is not None and relative in renderer.checkout.object_ids:
            return renderer.checkout.object_ids[relative]
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise UnknownInputs(f"cannot read {path}: {exc}") from None


def _well_formed(entry: JSON) -> dict[str, JSON] | None:
    """The entry if it is as store() writes it, else None: checked, not converted (a wrong
    shape must not hit)."""
    def strings(value: JSON) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    well_formed = (
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("stack_hash"), str)
        and isinstance(entry.get("service_hashes"), dict)
        and strings(list(entry["service_hashes"]))
        and strings(list(entry["service_hashes"].values()))
        and strings(entry.get("dependencies"))
        and strings(entry.get("creates"))
        and strings(entry.get("needs"))
    )
    return entry if well_formed else None
