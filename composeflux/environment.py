"""What a stack's `${VAR}` interpolation sees, layer by layer, lowest first:

    1. stack.yml `envs`                  shared by every stack
    2. the stack's own `.env`            what the stack's authors committed, decrypted when it is
                                         SOPS-encrypted (or `.env.sops`), then the host's own
                                         LOCAL_ENV_DIR/<stack>.env over it
    3. stack.yml `stacks.<name>.envs`    this host's choice for this one stack
    4. the secrets provider              its global secrets
    5. the stack's scoped secrets        `<stack>/NAME` in the provider: this stack only, always wins

Compose itself lets its process environment win over `.env`. So composeflux hands Compose the
layers that must win over `.env` (3 to 5), the part of layer 2 Compose cannot read itself (the
decrypted and host-local values), and of layer 1 only what layer 2 does not set: a global `TZ`
or `POSTGRES_PASSWORD` never silently overrides the one a stack committed.
Whenever a higher layer shadows a lower one the sync says so, naming variables only.

No Compose semantics here beyond which names `.env` sets: Compose reads the file itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from composeflux.private import PrivateFileError, read_private

# A `.env` line that sets a variable, as Compose's dotenv reader accepts it (export allowed).
DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a `.env` file sets, with simple quoting removed; {} when there is none.
    Enough to know which names it sets and to read COMPOSE_FILE; Compose reads the real thing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # none, or not readable: Compose will say so if it matters
        return {}
    return parse_dotenv(text)


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=value lines as a `.env` holds them: simple quoting removed, values taken literally."""
    values = {}
    for line in text.splitlines():
        match = DOTENV_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            value = match.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            values[match.group(1)] = value
    return values


DEFAULT_LOCAL_ENV_DIR = Path("/etc/composeflux/stacks")


class LocalEnvError(Exception):
    """A host-local env file that must not be used; the message names the file, not a value."""


def read_local_env(directory: Path, stack: str) -> dict[str, str]:
    """The variables of `directory/<stack>.env`, the host's own .env for a stack (values kept
    out of Git and the secrets manager on purpose); {} when there is none. Refused when group or
    others may read it, or it is not a regular file: it stands where a .env with secrets would."""
    path = directory / f"{stack}.env"
    try:
        text = read_private(path, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except PrivateFileError as exc:
        raise LocalEnvError(str(exc)) from None
    except OSError as exc:
        if os.path.islink(path):
            raise LocalEnvError(f"{path} is a symlink; put the file itself there") from None
        raise LocalEnvError(f"cannot read {path}: {exc.strerror}") from None
    return parse_dotenv(text.decode("utf-8", errors="replace"))


@dataclasses.dataclass(frozen=True)
class StackEnvironment:
    env: dict[str, str]  # what Compose gets in its environment
    shadowed: tuple[str, ...]  # one line per shadowing, names only, for the log


def stack_environment(
    global_envs: Mapping[str, str],
    dotenv: Mapping[str, str],
    stack_envs: Mapping[str, str],
    secrets: Mapping[str, str],
    scoped: Mapping[str, str] | None = None,
    provided: Mapping[str, str] | None = None,
) -> StackEnvironment:
    """`dotenv`: what the stack's `.env` sets as Compose reads it; `provided`: the .env layer's
    values Compose cannot read itself (a decrypted SOPS .env, LOCAL_ENV_DIR/<stack>.env), which
    win over `dotenv`; `scoped`: the stack's own secrets."""
    scoped = scoped or {}
    provided = provided or {}
    env = {name: value for name, value in global_envs.items() if name not in dotenv and name not in provided}
    env.update(provided)
    env.update(stack_envs)
    env.update(secrets)
    env.update(scoped)
    layers = (
        ("the shared envs of stack.yml", set(global_envs)),
        ("its .env", set(dotenv) | set(provided)),
        ("its envs under stacks: in stack.yml", set(stack_envs)),
        ("the secrets provider", set(secrets)),
        ("its own scoped secrets", set(scoped)),
    )
    shadowed = []
    for position, (winner, names) in enumerate(layers[1:], start=1):
        for loser, lower in layers[:position]:
            clash = sorted(names & lower)
            if clash:
                shadowed.append(f"{', '.join(clash)}: {winner} wins over {loser}")
    return StackEnvironment(env, tuple(shadowed))
