"""The value a Git source hands on: what is checked out where. No I/O, no git import."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Checkout:
    path: Path
    commit: str
    subject: str
    object_ids: dict[str, str]  # repository-relative path -> Git blob/tree id at HEAD
    submodules: frozenset[str] = frozenset()  # repository-relative paths of Git submodules (gitlinks)
    signer: str | None = None  # VERIFY_SIGNATURES: who signed it (signatures.Verified.signer)
    ref: str | None = None  # VERIFY_SIGNATURES=tag: the tag deployed (refs/tags/...)

    @property
    def short_commit(self) -> str:
        return self.commit[:12]


@dataclasses.dataclass(frozen=True)
class TreeRevision:
    """What a stack's own tree holds (trees.py): the tracked files under `paths` at `commit`."""

    commit: str
    paths: tuple[str, ...]
