"""The health gate: after `up`, wait until the containers it created or recreated are ready, then
make sure they stay up for a while, and say which one failed and why.

    phase 1 (at most `timeout` s): every watched container running, and healthy if it has a
            healthcheck; a one-shot job that exited 0 and is not restarted counts as done
    phase 2 (`stable` s, 0 skips it): no watched container that is not done restarts, stops
            running or becomes unhealthy (a job still running when phase 1 ended may finish:
            exiting 0 makes it done, not a failure)

No I/O and no Docker SDK here: the caller passes `read` (`engine.inspect_project` for the stack's
project), and the clock and sleep (tests pass fakes, so the gate is tested without waiting).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Collection

# Restart policies under which Docker never restarts a container that exited 0: such a container
# is a finished job (an init or migration step), not a service that went down.
NOT_RESTARTED_AFTER_SUCCESS = frozenset({"", "no", "on-failure"})


@dataclasses.dataclass(frozen=True)
class ContainerHealth:
    """One container as `docker inspect` shows it, reduced to what the gate looks at."""

    id: str
    service: str
    name: str
    status: str  # State.Status: running, exited, restarting, created, paused, dead
    health: str | None  # State.Health.Status: "starting", "healthy", "unhealthy"; None without a healthcheck
    exit_code: int | None  # State.ExitCode when not running (exited, dead, restarting: the last run's)
    restart_count: int  # RestartCount: restarts by the engine's restart policy
    started_at: str  # State.StartedAt: changes with every start, restarts by hand included
    restart_policy: str  # HostConfig.RestartPolicy.Name ("" counts as "no")
    image_id: str  # Image (sha256:...)
    oom_killed: bool = False  # State.OOMKilled


@dataclasses.dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str  # "" when ok; else why, naming the service(s) or container(s)
    images: dict[str, str]  # service -> image ID of its watched containers when ok; {} when not
    waited: float  # seconds, from the call to its return


def gate(
    read: Callable[[], list[ContainerHealth]],
    watch: Collection[str],
    timeout: float,
    stable: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    status: Callable[[str], None] = lambda text: None,
    interval: float = 0.5,
) -> GateResult:
    """Wait for the containers whose IDs are in `watch` to be ready within `timeout` seconds,
    then to stay up for `stable` seconds; other containers that `read` returns are ignored.

    Ready: running, and healthy if the container has a healthcheck. Done (ready, and no longer
    watched in the stability window): exited with status 0 under a restart policy that does not
    restart it then ("no", "" or "on-failure"), in either phase: a one-shot job may still be
    running when the others are ready, and cannot be told from a service until it exits. Fails at once, without waiting for the timeout, on
    a watched container that exited (or is dead) with a non-zero status, became unhealthy, was
    restarted by the engine (its restart count rose above the first value seen) or is no longer
    listed by `read`; else, at the timeout, naming what each container not ready waited for. In
    the stability window, a changed restart count or start time, leaving `running` or becoming
    unhealthy fails the gate. An empty `watch` passes at once.

    `read` is called once per poll, every `interval` seconds (through `sleep`); its exceptions
    propagate. `status` gets a line for `systemctl status` whenever that line changes.
    """
    if interval <= 0 or timeout < 0 or stable < 0:
        raise ValueError(f"gate: interval must be > 0 and timeout, stable >= 0 (got {interval}, {timeout}, {stable})")
    start = clock()
    if not watch:
        return GateResult(True, "", {}, 0.0)
    run = _Gate(frozenset(watch), status)

    while True:  # phase 1: until every watched container is ready or done
        elapsed = clock() - start  # before the read: a snapshot past the deadline is one taken after it
        current = run.observe(read())
        failures: list[str] = []
        waiting: list[tuple[str, str, str]] = []  # (label, what it waits to be, what it is now)
        for label, container_id in run.ordered(run.watched - run.done):
            failure = run.phase1(container_id, current.get(container_id), elapsed, label, waiting)
            if failure:
                failures.append(f"{label}: {failure}")
        if failures:
            return GateResult(False, "; ".join(failures), {}, clock() - start)
        if not waiting:
            break
        if elapsed >= timeout:
            reason = "; ".join(f"{label}: not {what} within {timeout:g} s ({now})" for label, what, now in waiting)
            return GateResult(False, reason, {}, clock() - start)
        run.say(", ".join(f"{label}: waiting to be {what}" for label, what, _ in waiting) + f" ({int(elapsed)}/{timeout:g} s)")
        sleep(min(interval, timeout - elapsed))

    steady = run.watched - run.done
    if stable > 0 and steady:  # phase 2: the stability window
        baseline = {container_id: (current[container_id].restart_count, current[container_id].started_at) for container_id in steady}
        window = clock()
        within = 0.0
        while steady - run.done:
            run.say(", ".join(label for label, _ in run.ordered(steady - run.done)) + f": stable for {int(within)}/{stable:g} s")
            sleep(min(interval, stable - within))
            within = clock() - window  # before the read, as above
            current = run.observe(read())
            failures = []
            for label, container_id in run.ordered(steady - run.done):
                if container_id in current and _finished(current[container_id]):
                    run.done.add(container_id)  # a job that was still running when phase 1 ended
                    continue
                failure = _unstable(current.get(container_id), baseline[container_id], f"within the {stable:g} s stability window")
                if failure:
                    failures.append(f"{label}: {failure}")
            if failures:
                return GateResult(False, "; ".join(failures), {}, clock() - start)
            if within >= stable:
                break

    images: dict[str, str] = {}
    for _, container_id in run.ordered(run.watched):
        if container_id in run.seen:
            container = run.seen[container_id]
            images.setdefault(container.service, container.image_id)
    return GateResult(True, "", images, clock() - start)


class _Gate:
    """What one gate has seen so far: the last state of each watched container, the restart
    count it first had, and which ones are done."""

    def __init__(self, watched: frozenset[str], status: Callable[[str], None]) -> None:
        self.watched = watched
        self.seen: dict[str, ContainerHealth] = {}
        self.first_restart_count: dict[str, int] = {}
        self.done: set[str] = set()
        self.status = status
        self.said: str | None = None

    def observe(self, containers: list[ContainerHealth]) -> dict[str, ContainerHealth]:
        """The watched containers of this read, by ID (remembered for naming them later)."""
        current = {container.id: container for container in containers if container.id in self.watched}
        self.seen.update(current)
        return current

    def ordered(self, ids: Collection[str]) -> list[tuple[str, str]]:
        """(label, ID) sorted by label. The label is the service; with the container's name too
        when the service has several watched containers; a short ID for one never seen."""
        per_service = collections.Counter(container.service for container in self.seen.values())
        labelled = []
        for container_id in ids:
            container = self.seen.get(container_id)
            if container is None:
                label = f"container {container_id[:12]}"
            elif per_service[container.service] > 1 or not container.service:
                label = f"{container.service or '?'} ({container.name})"
            else:
                label = container.service
            labelled.append((label, container_id))
        return sorted(labelled)

    def phase1(self, container_id: str, container: ContainerHealth | None, elapsed: float, label: str,
               waiting: list[tuple[str, str, str]]) -> str | None:
        """Why this container fails the gate now, or None; marks it done, or adds what it waits for."""
        if container is None:
            return "container removed"
        first = self.first_restart_count.setdefault(container_id, container.restart_count)
        if container.restart_count > first:
            return f"restarted {container.restart_count - first} time(s) before it was ready{_last_exit(container)}"
        if container.status in ("exited", "dead"):
            if _finished(container):
                self.done.add(container_id)
                return None
            if container.exit_code == 0 and container.status == "exited":
                # restart: always/unless-stopped: the engine starts it again, and the restart count tells.
                waiting.append((label, "running", "status: exited with status 0"))
                return None
            return f"exited with {_exit_status(container)}" + (" (container dead)" if container.status == "dead" else "")
        if container.health == "unhealthy":
            return f"unhealthy after {elapsed:.0f} s"
        if container.status != "running":
            waiting.append((label, "running", f"status: {container.status}"))
        elif container.health not in (None, "healthy"):
            waiting.append((label, "healthy", f"health: {container.health}"))
        return None

    def say(self, text: str) -> None:
        if text != self.said:
            self.said = text
            self.status(text)


def _unstable(container: ContainerHealth | None, baseline: tuple[int, str], window: str) -> str | None:
    """What went wrong with a container that was ready when the stability window began, or None."""
    if container is None:
        return f"container removed {window}"
    restart_count, started_at = baseline
    if container.restart_count != restart_count or container.started_at != started_at:
        restarts = container.restart_count - restart_count  # 0: restarted by hand (`docker restart`)
        return f"restarted {restarts if restarts > 0 else 1} time(s) {window}{_last_exit(container)}"
    if container.status in ("exited", "dead"):
        return f"exited with {_exit_status(container)} {window}"
    if container.status != "running":
        return f"stopped running (status: {container.status}) {window}"
    if container.health == "unhealthy":
        return f"became unhealthy {window}"
    return None


def _finished(container: ContainerHealth) -> bool:
    """A job that is over: exited 0 under a restart policy that does not start it again."""
    return container.status == "exited" and container.exit_code == 0 and container.restart_policy in NOT_RESTARTED_AFTER_SUCCESS


def _exit_status(container: ContainerHealth) -> str:
    code = "?" if container.exit_code is None else container.exit_code
    return f"status {code}" + (" (out of memory)" if container.oom_killed else "")


def _last_exit(container: ContainerHealth) -> str:
    """ (last exit status N), when the engine told it (a restarting container's last run)."""
    if container.exit_code is None or container.status == "running":
        return ""
    return f" (last exit {_exit_status(container)})"
