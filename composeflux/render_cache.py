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

import yaml

from composeflux import __version__
from composeflux.render import Renderer
from composeflux.rendered import JSON, StackHashes
from composeflux.stacks import Stack

log = logging.getLogger(__name__)

CACHE_FILE = "render-cache.json"
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Uncacheable(Exception):
    """The render inputs cannot be listed with certainty (e.g. a path built from a variable)."""


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

    def lookup(self, stack: Stack) -> StackHashes | None:
        """The stack's hashes from an earlier render whose inputs are all unchanged, or None."""
        entry = _well_formed(self.entries.get(stack.name))
        if entry is None:
            return None  # no entry, or one of another shape: render again
        key = self._key(stack, entry["dependencies"])
        if key is None or key != entry["key"]:
            return None
        self.fresh[stack.name] = entry
        return StackHashes(stack.name, entry["stack_hash"], dict(entry["service_hashes"]), tuple(entry["dependencies"]))

    def store(self, stack: Stack, hashes: StackHashes) -> None:
        key = self._key(stack, list(hashes.dependencies))
        if key is not None:
            self.fresh[stack.name] = {
                "key": key,
                "stack_hash": hashes.stack_hash,
                "service_hashes": hashes.service_hashes,
                "dependencies": list(hashes.dependencies),
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

    def _key(self, stack: Stack, dependencies: list[str]) -> str | None:
        try:
            inputs = _render_inputs(stack)
        except Uncacheable as why:
            log.debug("%s: not cached: %s", stack.name, why)
            return None
        checkout = self.renderer.checkout
        directory = self.renderer.relative_path(stack.directory)
        # Keyed by checkout-relative paths and the deploy directory, not by where the checkout is:
        # a dry run, which renders in a scratch copy, shares the cache with the real sync.
        digests = {self.renderer.relative_path(path) or str(path): self._digest(path) for path in inputs}
        digests.update({path: checkout.object_ids.get(path, "untracked") for path in dependencies})
        return self.renderer.hmac(
            "render-cache",
            {
                "composeflux": __version__,
                "compose": self.compose_version,
                "stack": stack.name,
                "directory": str(self.renderer.deploy_directory(stack)),
                "tree": checkout.object_ids.get(directory) if directory is not None else None,
                "env": self.renderer.env,
                "inputs": digests,
            },
        )

    def _digest(self, path: Path) -> str:
        relative = self.renderer.relative_path(path)
        if relative is not None and relative in self.renderer.checkout.object_ids:
            return self.renderer.checkout.object_ids[relative]
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise Uncacheable(f"cannot read {path}: {exc}") from None


def _render_inputs(stack: Stack) -> list[Path]:
    """Every file `docker compose config` reads for this stack, found by following the
    compose files' include, extends and env_file references (paths only, no semantics)."""
    inputs: list[Path] = [stack.directory / ".env"]
    pending = list(stack.compose_files)
    seen: set[Path] = set()
    while pending:
        file = pending.pop()
        if file in seen:
            continue
        seen.add(file)
        inputs.append(file)
        try:
            document = yaml.load(file.read_text(encoding="utf-8"), Loader=SafeLoader) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise Uncacheable(f"{file.name}: {exc}") from None
        if not isinstance(document, dict):
            raise Uncacheable(f"{file.name}: not a mapping")
        base = file.parent
        for entry in _as_list(document.get("include")):
            paths = entry if isinstance(entry, str) else entry.get("path") if isinstance(entry, dict) else None
            for path in _as_list(paths):
                included = _resolve(base, path)
                pending.append(included)
                inputs.append(included.parent / ".env")
            if isinstance(entry, dict):
                inputs += [_resolve(base, p) for p in _as_list(entry.get("env_file"))]
        services = document.get("services") or {}
        if not isinstance(services, dict):
            raise Uncacheable(f"{file.name}: services is not a mapping")
        for service in services.values():
            if not isinstance(service, dict):
                continue
            extends = service.get("extends")
            if isinstance(extends, dict) and extends.get("file"):
                pending.append(_resolve(base, extends["file"]))
            for env_file in _as_list(service.get("env_file")):
                path = env_file.get("path") if isinstance(env_file, dict) else env_file
                inputs.append(_resolve(base, path))
    return inputs


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
    )
    return entry if well_formed else None


def _as_list(value: JSON) -> list[JSON]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _resolve(base: Path, path: JSON) -> Path:
    if not isinstance(path, str) or "$" in path or "://" in path:
        raise Uncacheable(f"reference {path!r} cannot be followed without Compose")
    return Path(os.path.normpath(base / os.path.expanduser(path)))
