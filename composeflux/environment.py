"""What a stack's `${VAR}` interpolation sees, layer by layer, lowest first:

    1. stack.yml `envs`                  shared by every stack
    2. the stack's own `.env`            what the stack's authors committed (or the host keeps)
    3. stack.yml `stacks.<name>.envs`    this host's choice for this one stack
    4. the secrets provider              always wins

Compose itself lets its process environment win over `.env`. So composeflux hands Compose the
layers that must win over `.env` (3 and 4), and of layer 1 only what `.env` does not set: a
global `TZ` or `POSTGRES_PASSWORD` never silently overrides the one a stack committed.
Whenever a higher layer shadows a lower one the sync says so, naming variables only.

No Compose semantics here beyond which names `.env` sets: Compose reads the file itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

# A `.env` line that sets a variable, as Compose's dotenv reader accepts it (export allowed).
DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a `.env` file sets, with simple quoting removed; {} when there is none.
    Enough to know which names it sets and to read COMPOSE_FILE; Compose reads the real thing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # none, or not readable: Compose will say so if it matters
        return {}
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


@dataclasses.dataclass(frozen=True)
class StackEnvironment:
    env: dict[str, str]  # what Compose gets in its environment
    shadowed: tuple[str, ...]  # one line per shadowing, names only, for the log


def stack_environment(
    global_envs: Mapping[str, str], dotenv: Mapping[str, str], stack_envs: Mapping[str, str], secrets: Mapping[str, str]
) -> StackEnvironment:
    env = {name: value for name, value in global_envs.items() if name not in dotenv}
    env.update(stack_envs)
    env.update(secrets)
    layers = (
        ("the shared envs of stack.yml", set(global_envs)),
        ("its .env", set(dotenv)),
        ("its envs under stacks: in stack.yml", set(stack_envs)),
        ("the secrets provider", set(secrets)),
    )
    shadowed = []
    for position, (winner, names) in enumerate(layers[1:], start=1):
        for loser, lower in layers[:position]:
            clash = sorted(names & lower)
            if clash:
                shadowed.append(f"{', '.join(clash)}: {winner} wins over {loser}")
    return StackEnvironment(env, tuple(shadowed))
