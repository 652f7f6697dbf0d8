"""The plan: desired state (from Git) against what the engine runs, as a plain value.

No I/O here: the plan is computed from rendered hashes and the engine's container labels, so
it can be tested without Docker, printed by --dry-run, and then applied.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Iterable, Mapping, Sequence

from composeflux.deployed import UNMANAGED, DeployedStack
from composeflux.errors import UnsafePruneError
from composeflux.rendered import StackHashes, StackProblem


# (str, Enum) on purpose, not StrEnum: StrEnum would change what str() and f-strings make of a
# member (the bare value instead of Action.NAME). The code uses .value wherever it wants the word.
class Action(str, enum.Enum):  # noqa: UP042 -- see the comment above
    DEPLOY = "deploy"
    UNCHANGED = "unchanged"
    PRUNE = "prune"
    FAILED = "failed"
    KEEP = "keep"  # deleted from Git, but REMOVE_ORPHANS=false
    SUSPENDED = "suspended"  # `composeflux suspend` or stack.yml: not deployed, healed or pruned
    # Outcomes: deployed, failed its health gate, put back to its last good revision. Planned: a
    # rolled-back stack whose containers broke, rolled back again (healing).
    ROLLED_BACK = "rollback"
    SKIPPED = "skipped"  # outcomes only: planned, but the sync stopped before reaching it


# The reason a stack is deployed again at the revision it runs to take new images
# (`composeflux update`, IMAGE_UPDATES=apply); the state clears the stack's pending updates then.
IMAGE_UPDATE = "image update"


@dataclasses.dataclass(frozen=True)
class StackPlan:
    name: str
    action: Action
    reason: str = ""
    stack_hash: str | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    stacks: tuple[StackPlan, ...]

    def with_action(self, action: Action) -> list[StackPlan]:
        return [stack for stack in self.stacks if stack.action is action]

    def lines(self) -> list[str]:
        width = max((len(stack.name) for stack in self.stacks), default=0)
        lines = []
        for stack in self.stacks:
            digest = (stack.stack_hash or "")[:12]
            lines.append(f"{stack.action.value:<9}  {stack.name:<{width}}  {digest:<12}  {stack.reason}".rstrip())
        return lines

    def summary(self) -> str:
        """What applying it would do, e.g. "2 to deploy, 3 unchanged, 1 to prune"."""
        words = {
            Action.DEPLOY: "to deploy",
            Action.UNCHANGED: "unchanged",
            Action.PRUNE: "to prune",
            Action.KEEP: "to keep",
            Action.SUSPENDED: "suspended",
            Action.ROLLED_BACK: "to roll back again",
            Action.FAILED: "failed",
        }
        counts = {action: len(self.with_action(action)) for action in words}
        return ", ".join(f"{n} {words[a]}" for a, n in counts.items() if n or a not in (Action.KEEP, Action.SUSPENDED, Action.ROLLED_BACK))


def network_order(items: list[StackHashes | StackProblem], first: Sequence[str]) -> list[StackHashes | StackProblem]:
    """`items` (startup_order first, then by name) with every stack that needs an external
    network after the stack that creates it; startup_order still goes first, as given."""
    pinned = set(first)
    head = [item for item in items if item.name in pinned]
    rest = [item for item in items if item.name not in pinned]
    creators = {network: item.name for item in rest if isinstance(item, StackHashes) for network in item.creates}
    after: dict[str, set[str]] = {item.name: set() for item in rest}
    for item in rest:
        if isinstance(item, StackHashes):
            after[item.name] = {creators[n] for n in item.needs if n in creators and creators[n] != item.name}
    ordered: list[StackHashes | StackProblem] = []
    placed: set[str] = set()
    pending = list(rest)
    while pending:
        ready = next((item for item in pending if after[item.name] <= placed), pending[0])  # a cycle: as they were
        ordered.append(ready)
        placed.add(ready.name)
        pending.remove(ready)
    return head + ordered


# What applying a plan changes on the engine; every other action is only reported.
CHANGES = (Action.DEPLOY, Action.PRUNE, Action.ROLLED_BACK)


def schedule(plan: Plan, desired: Iterable[StackHashes | StackProblem], first: Sequence[str]) -> dict[str, frozenset[str]]:
    """Who waits for whom when the plan's changes run side by side (DEPLOY_JOBS): for each stack
    the plan changes, the changed stacks that must be finished before it starts.

      - prunes wait for nothing, and everything else waits for every prune (a renamed stack's
        old self frees its ports and container names first);
      - the changed startup_order stacks go one after the other, in that order, before every
        other changed stack;
      - a stack that needs an external network or volume (`needs`) waits for the changed stack
        that creates it (`creates`), when that one comes earlier in the plan; the plan's order
        (network_order) already broke any cycle, so this is never one.

    Stacks the plan leaves alone are running already (or failed before any change): nobody
    waits for them. Pure: `desired` gives the networks and volumes, as rendered."""
    changing = [stack for stack in plan.stacks if stack.action in CHANGES]
    position = {stack.name: index for index, stack in enumerate(changing)}
    prunes = frozenset(stack.name for stack in changing if stack.action is Action.PRUNE)
    pinned = [name for name in dict.fromkeys(first) if name in position and name not in prunes]
    hashes = {item.name: item for item in desired if isinstance(item, StackHashes) and item.name in position}
    creators = {resource: name for name, item in hashes.items() for resource in item.creates}
    waits: dict[str, frozenset[str]] = {}
    for stack in changing:
        name = stack.name
        if name in prunes:
            waits[name] = frozenset()
            continue
        wait = set(prunes)
        if name in pinned:
            wait |= set(pinned[max(pinned.index(name) - 1, 0):pinned.index(name)])
        else:
            wait |= set(pinned)
            needs = hashes[name].needs if name in hashes else ()
            wait |= {creators[n] for n in needs if n in creators and position[creators[n]] < position[name]}
        waits[name] = frozenset(wait)
    return waits


def make_plan(
    desired: Iterable[StackHashes | StackProblem],
    deployed: dict[str, DeployedStack],
    others: dict[str, str],
    remove_orphans: bool,
    allow_prune_all: bool,
    held: Mapping[str, tuple[str, str]] | None = None,
    adopt: Collection[str] = (),
    suspended: Mapping[str, str] | None = None,
) -> Plan:
    """desired: every stack directory found in Git, in deploy order: its hashes, or why it
    cannot be deployed (a failed stack is still in Git: it is never pruned). The plan lists
    the stacks deleted from Git first, then `desired` in its order.
    others: Compose projects on the engine that this instance did not deploy -> owner.
    held: name -> (stack hash, why): a stack whose deploy failed with exactly this hash is not
    tried again yet (failure backoff); it stays failed.
    adopt: names of Compose projects deployed by something else (not another composeflux
    instance) that this sync takes over, as asked (`sync --adopt NAME`).
    held also carries revisions that failed their health gate (rolled back): not deployed again
    while their hash is what Git wants.
    suspended: name -> why: such a stack is left exactly as it is (not deployed, not pruned, even
    when deleted from Git)."""
    suspended = suspended or {}
    stacks = []
    in_git = set()
    for item in desired:
        name = item.name
        in_git.add(name)
        if name in suspended:
            digest = item.stack_hash if isinstance(item, StackHashes) else None
            stacks.append(StackPlan(name, Action.SUSPENDED, suspended[name], digest))
        elif isinstance(item, StackProblem):
            stacks.append(StackPlan(name, Action.FAILED, item.reason))
        elif name in others and name in (adopt or ()) and others[name] == UNMANAGED:
            stacks.append(StackPlan(name, Action.DEPLOY, f"adopting the Compose project {name}, {UNMANAGED}", item.stack_hash))
        elif name in others:
            reason = (
                f"a Compose project {name!r} already exists, {others[name]}; remove it, rename the stack directory, "
                f"or take it over once with `composeflux sync --adopt {name}`"
            )
            if others[name] != UNMANAGED:  # another composeflux instance's: never taken over
                reason = f"a Compose project {name!r} already exists, {others[name]}; remove it or rename the stack directory"
            stacks.append(StackPlan(name, Action.FAILED, reason, item.stack_hash))
        else:
            reason = compare(item, deployed.get(name), remove_orphans)
            waiting = (held or {}).get(name)
            if reason and waiting is not None and waiting[0] == item.stack_hash:
                stacks.append(StackPlan(name, Action.FAILED, waiting[1], item.stack_hash))
            else:
                stacks.append(StackPlan(name, Action.DEPLOY if reason else Action.UNCHANGED, reason, item.stack_hash))

    stacks += [StackPlan(name, Action.SUSPENDED, suspended[name]) for name in sorted(set(deployed) & set(suspended) - in_git)]
    gone = sorted(set(deployed) - in_git - set(suspended))
    if gone and not in_git and not allow_prune_all:
        raise UnsafePruneError(
            f"no stacks were found in Git, but {len(gone)} are deployed ({', '.join(gone)}); refusing to remove them all. "
            "If that is really intended, run `composeflux sync --allow-prune-all` (or set ALLOW_PRUNE_ALL=true once)"
        )
    # Stacks deleted from Git go first: a renamed stack that publishes a host port or keeps a
    # container_name can only come up once its old self is gone.
    removed = [
        StackPlan(name, Action.PRUNE, "deleted from Git")
        if remove_orphans
        else StackPlan(name, Action.KEEP, "deleted from Git; kept because REMOVE_ORPHANS=false")
        for name in gone
    ]
    return Plan(tuple(removed + stacks))


def compare(hashes: StackHashes, deployed: DeployedStack | None, remove_orphans: bool) -> str:
    """Why the stack must be deployed, or "" when the engine already runs exactly this."""
    if deployed is None:
        return "new"
    running = deployed.services()
    changed = sorted(
        service
        for service, digest in hashes.service_hashes.items()
        if service in running and any(c.service_hash != digest for c in running[service])
    )
    if changed:
        return f"hash changed (services: {', '.join(changed)})"
    missing = sorted(set(hashes.service_hashes) - set(running))
    if missing:
        return f"missing from Docker (services: {', '.join(missing)})"
    down = sorted(s for s in hashes.service_hashes if not all(c.is_up for c in running[s]))
    if down:
        return f"not running (services: {', '.join(down)})"
    # Docker says unhealthy only after the healthcheck failed `retries` times in a row.
    unhealthy = sorted(s for s in hashes.service_hashes if any(c.health == "unhealthy" for c in running[s]))
    if unhealthy:
        return f"unhealthy (services: {', '.join(unhealthy)})"
    removed = sorted(set(running) - set(hashes.service_hashes))
    if removed and remove_orphans:
        return f"services removed from Git: {', '.join(removed)}"
    return ""
