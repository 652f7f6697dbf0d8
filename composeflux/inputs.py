"""Which files `docker compose config` reads for a stack, found without Compose: the compose
files and what their include, extends and env_file entries name, and each project's .env.

Paths only, no semantics (Compose decides those): used to key the render cache, and to refuse
a stack that would read a file from outside the repository before Compose reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from composeflux.rendered import JSON
from composeflux.stacks import Stack

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnknownInputs(Exception):
    """The inputs cannot be listed with certainty (e.g. a path built from a variable)."""


def render_inputs(stack: Stack) -> list[Path]:
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
            raise UnknownInputs(f"{file.name}: {exc}") from None
        if not isinstance(document, dict):
            raise UnknownInputs(f"{file.name}: not a mapping")
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
            raise UnknownInputs(f"{file.name}: services is not a mapping")
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


def _as_list(value: JSON) -> list[JSON]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _resolve(base: Path, path: JSON) -> Path:
    if not isinstance(path, str) or "$" in path or "://" in path:
        raise UnknownInputs(f"reference {path!r} cannot be followed without Compose")
    return Path(os.path.normpath(base / os.path.expanduser(path)))
