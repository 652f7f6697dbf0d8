"""What a sync did, as plain values: one StackOutcome per stack and one SyncOutcome per run.

The summary line, the exit status, `composeflux status` and the state file are all derived
from these; nothing else keeps its own record of what happened.
"""

from __future__ import annotations

import dataclasses

from composeflux.checkout import TreeRevision
from composeflux.errors import ExitStatus
from composeflux.plan import Action, Plan

PAST_TENSE = {
    Action.DEPLOY: "deployed",
    Action.UNCHANGED: "unchanged",
    Action.PRUNE: "pruned",
    Action.KEEP: "kept",
    Action.FAILED: "failed",
    Action.ROLLED_BACK: "rolled back",
    Action.SUSPENDED: "suspended",
    Action.SKIPPED: "not attempted",
}
# Outcomes that leave the stack not running what Git says: they make the sync exit 1.
FAILURES = (Action.FAILED, Action.ROLLED_BACK)
SUMMARY_NAMES = 10  # failed stacks named in the summary line
# Always counted in the summary line, even when zero (the others only when they happened).
ALWAYS_COUNTED = (Action.DEPLOY, Action.UNCHANGED, Action.PRUNE, Action.FAILED)


@dataclasses.dataclass(frozen=True)
class StackOutcome:
    name: str
    action: Action  # what happened (DEPLOY: deployed, PRUNE: pruned, ...)
    reason: str = ""  # why it was planned so ("new", "hash changed ...", "deleted from Git")
    stack_hash: str | None = None
    service_hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    commit: str | None = None  # the commit its containers now run, when it was deployed or unchanged
    error: str | None = None  # FAILED only: what went wrong (masked)
    tree: TreeRevision | None = None  # what the stack's own tree holds now, when this sync changed it
    # FAILED only: what failed ("render:<cache key>" or "deploy:<stack hash>"), so that the same
    # inputs are not retried on every run; and whether it was not even tried (backoff).
    inputs: str | None = None
    held: bool = False
    # DEPLOY, ROLLED_BACK: the image ID each service's containers run, once they passed the gate.
    images: dict[str, str] = dataclasses.field(default_factory=dict)
    # The revision that failed its health gate (ROLLED_BACK, or FAILED when nothing could be put
    # back): not deployed again until Git wants something else. (commit, stack hash, why)
    rejected: tuple[str | None, str, str] | None = None
    healed: bool = False  # DEPLOY: a redeploy of the same revision, because it was broken
    # An image update that failed its gate: service -> the digest not to apply again.
    bad_images: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def changed_something(self) -> bool:
        return self.action in (Action.DEPLOY, Action.PRUNE, Action.ROLLED_BACK)


@dataclasses.dataclass(frozen=True)
class SyncOutcome:
    status: ExitStatus
    stacks: tuple[StackOutcome, ...] = ()
    commit: str | None = None
    subject: str | None = None
    error: str | None = None  # the failure that ended the sync as a whole (masked)
    plan: Plan | None = None
    dry_run: bool = False
    signer: str | None = None  # VERIFY_SIGNATURES: who signed the commit deployed

    @property
    def failed(self) -> dict[str, str]:
        return {s.name: s.error or s.reason for s in self.stacks if s.action in FAILURES}

    @property
    def result(self) -> str:
        """ok (converged), failed (some stacks failed), error (the sync as a whole failed)."""
        if self.error is not None:
            return "error"
        return "failed" if self.failed else "ok"

    def counts(self) -> dict[Action, int]:
        counts = dict.fromkeys(PAST_TENSE, 0)
        for stack in self.stacks:
            counts[stack.action] += 1
        return counts

    def done(self) -> str:
        """What was changed before the sync ended, e.g. "deployed a, b; pruned c", or ""."""
        parts = []
        for action in (Action.DEPLOY, Action.PRUNE, Action.ROLLED_BACK):
            names = [s.name for s in self.stacks if s.action is action]
            if names:
                parts.append(f"{PAST_TENSE[action]} {', '.join(names)}")
        return "; ".join(parts)

    def summary(self) -> str:
        if self.dry_run and self.plan is not None and self.error is None:
            return "dry run: " + self.plan.summary()
        if self.error is not None:
            done = self.done()
            if done:
                return f"sync stopped: {self.error} (already done: {done}; the other stacks were not changed)"
            return f"sync failed, nothing was changed: {self.error}"
        counts = self.counts()
        text = ", ".join(f"{n} {PAST_TENSE[a]}" for a, n in counts.items() if n or a in ALWAYS_COUNTED)
        if self.failed:
            # One short line (journald keeps lines of up to 48 KiB, people read far less): the
            # names; each failure's reason is in its own log line and in `composeflux status`.
            names = list(self.failed)
            shown = ", ".join(names[:SUMMARY_NAMES])
            if len(names) > SUMMARY_NAMES:
                shown += f" and {len(names) - SUMMARY_NAMES} more"
            text += f" ({shown})"
        return text
