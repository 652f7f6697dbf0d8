"""What rendering yields: a stack's keyed hashes, and (when it was really rendered) its project.

Two types, so that "came from the render cache" is a type and not a `None` to remember:
StackHashes is enough to plan; only a RenderedStack, which holds the project, can be deployed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# A value of a JSON document: a rendered Compose project, a state or cache file, an engine or API
# answer. Any, because its shape is only known once the code reading it has checked it.
JSON = Any


@dataclasses.dataclass(frozen=True)
class StackHashes:
    name: str
    stack_hash: str
    service_hashes: dict[str, str]
    # Paths whose content the render and hash depend on, beyond the stack's own directory.
    dependencies: tuple[str, ...] = ()
    # Networks it creates, and external ones it needs: who must be deployed before whom.
    creates: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RenderedStack:
    hashes: StackHashes
    # The rendered project holds secret values: kept in memory only, never logged or written.
    project: dict[str, JSON] = dataclasses.field(repr=False)
    # Variables `docker compose up` needs besides the render's (SOPS secrets, see sopsfiles.py).
    environment: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.hashes.name


@dataclasses.dataclass(frozen=True)
class StackProblem:
    """A stack that cannot be deployed this time (bad directory, render failure); the reason is
    safe to show (masked)."""

    name: str
    reason: str
