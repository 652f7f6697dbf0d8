"""The health gate against scripted container states and a fake clock: no Docker, no waiting."""

from __future__ import annotations

import dataclasses

import pytest

from composeflux.health import ContainerHealth, gate

WEB = ContainerHealth(
    id="w" * 64, service="web", name="demo-web-1", status="running", health=None, exit_code=None,
    restart_count=0, started_at="2024-01-01T00:00:00Z", restart_policy="unless-stopped", image_id="sha256:web",
)


def container(base: ContainerHealth = WEB, **changes) -> ContainerHealth:
    return dataclasses.replace(base, **changes)


JOB = container(id="j" * 64, service="migrate", name="demo-migrate-1", restart_policy="no", image_id="sha256:job")
DB = container(id="d" * 64, service="db", name="demo-db-1", image_id="sha256:db")


class Clock:
    """Time that passes only in sleep(); records every read and sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.reads: list[float] = []
        self.said: list[str] = []

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the gate must never busy-loop"
        self.sleeps.append(seconds)
        self.now += seconds

    def run(self, script, watch, timeout=10.0, stable=5.0, **kwargs):
        """gate() where `script(t)` is what the engine shows at time t."""

        def read() -> list[ContainerHealth]:
            self.reads.append(self.now)
            return script(self.now)

        return gate(read, watch, timeout, stable, clock=lambda: self.now, sleep=self.sleep, status=self.said.append, **kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_container_that_becomes_healthy_passes_after_the_stability_window(clock):
    def script(t):
        return [container(health="healthy" if t >= 2 else "starting")]

    result = clock.run(script, {WEB.id}, timeout=10, stable=3)
    assert result.ok and result.reason == ""
    assert result.images == {"web": "sha256:web"}
    assert result.waited == pytest.approx(5)  # healthy at 2 s, then 3 s stable
    assert max(clock.sleeps) <= 0.5


def test_never_healthy_fails_at_the_timeout_naming_the_service_and_its_health(clock):
    result = clock.run(lambda t: [container(health="starting")], {WEB.id}, timeout=10, stable=3)
    assert not result.ok
    assert result.reason == "web: not healthy within 10 s (health: starting)"
    assert result.images == {}
    assert result.waited == pytest.approx(10)
    assert clock.reads[-1] >= 10  # the last look was taken at the deadline, not before it


def test_not_running_within_the_timeout_names_the_status(clock):
    def script(t):
        return [container(health="starting"), container(DB, status="created")]

    result = clock.run(script, {WEB.id, DB.id}, timeout=4)
    assert result.reason == "db: not running within 4 s (status: created); web: not healthy within 4 s (health: starting)"


def test_unhealthy_fails_at_once(clock):
    result = clock.run(lambda t: [container(health="unhealthy" if t >= 3 else "starting")], {WEB.id}, timeout=120)
    assert not result.ok
    assert result.reason == "web: unhealthy after 3 s"
    assert result.waited == pytest.approx(3)


def test_a_non_zero_exit_fails_at_once_whatever_the_restart_policy(clock):
    def script(t):
        return [container(status="exited", exit_code=1) if t >= 1 else container(health="starting")]

    result = clock.run(script, {WEB.id}, timeout=120)
    assert (result.ok, result.reason, result.waited) == (False, "web: exited with status 1", pytest.approx(1))


def test_an_exit_out_of_memory_says_so(clock):
    result = clock.run(lambda t: [container(status="exited", exit_code=137, oom_killed=True)], {WEB.id})
    assert result.reason == "web: exited with status 137 (out of memory)"
    assert result.waited == 0


def test_a_dead_container_fails(clock):
    result = clock.run(lambda t: [container(status="dead", exit_code=0)], {WEB.id})
    assert result.reason == "web: exited with status 0 (container dead)"


def test_a_job_still_running_when_the_others_are_ready_is_done_when_it_exits_0_in_the_window(clock):
    def script(t):
        if t < 1:
            job = container(JOB, status="running")
        elif t < 2:
            job = container(JOB, status="exited", exit_code=0)
        else:  # whatever happens to it later is not the gate's business
            job = container(JOB, status="exited", exit_code=0, started_at="later")
        return [WEB, job]

    result = clock.run(script, {WEB.id, JOB.id}, timeout=10, stable=3)
    assert result.ok, result.reason
    assert result.images == {"migrate": "sha256:job", "web": "sha256:web"}
    assert clock.said[0] == "migrate, web: stable for 0/3 s"  # still running: cannot be told from a service yet
    assert clock.said[-1] == "web: stable for 2/3 s"  # done once it exited 0


def test_a_job_done_in_phase_1_is_not_in_the_stability_window(clock):
    def script(t):
        return [container(WEB, health="healthy" if t >= 1 else "starting"), container(JOB, status="exited", exit_code=0)]

    assert clock.run(script, {WEB.id, JOB.id}, stable=2).ok
    assert clock.said == ["web: waiting to be healthy (0/10 s)", "web: stable for 0/2 s", "web: stable for 1/2 s"]


@pytest.mark.parametrize("policy", ["", "no", "on-failure"])
def test_exit_0_is_done_under_a_policy_that_does_not_restart_it(clock, policy):
    result = clock.run(lambda t: [container(JOB, status="exited", exit_code=0, restart_policy=policy)], {JOB.id})
    assert result.ok and result.waited == 0
    assert clock.sleeps == []  # nothing left to watch: no stability window


def test_exit_0_under_restart_always_is_not_done(clock):
    result = clock.run(lambda t: [container(status="exited", exit_code=0, restart_policy="always")], {WEB.id}, timeout=2)
    assert result.reason == "web: not running within 2 s (status: exited with status 0)"


def test_a_restart_in_the_stability_window_fails(clock):
    def script(t):
        if t < 1:
            return [container(health="starting")]
        if t < 4:
            return [container(health="healthy")]
        return [container(status="restarting", health="starting", restart_count=1, exit_code=1)]

    result = clock.run(script, {WEB.id}, timeout=120, stable=10)
    assert not result.ok
    assert result.reason == "web: restarted 1 time(s) within the 10 s stability window (last exit status 1)"
    assert result.waited == pytest.approx(4)


def test_a_restart_by_hand_in_the_stability_window_fails(clock):
    def script(t):
        return [container(started_at="again") if t >= 2 else WEB]

    result = clock.run(script, {WEB.id}, stable=10)
    assert result.reason == "web: restarted 1 time(s) within the 10 s stability window"


@pytest.mark.parametrize(
    ("later", "reason"),
    [
        (container(status="exited", exit_code=2), "web: exited with status 2 within the 5 s stability window"),
        (container(status="paused"), "web: stopped running (status: paused) within the 5 s stability window"),
        (container(health="unhealthy"), "web: became unhealthy within the 5 s stability window"),
        (None, "web: container removed within the 5 s stability window"),
    ],
)
def test_leaving_running_or_health_in_the_stability_window_fails(clock, later, reason):
    def script(t):
        return [later] if t >= 2 and later else [] if t >= 2 else [WEB]

    result = clock.run(script, {WEB.id}, stable=5)
    assert (result.ok, result.reason) == (False, reason)


def test_a_restart_before_it_is_ready_fails_at_once(clock):
    def script(t):
        if t < 2:
            return [container(health="starting")]
        return [container(status="running", health="starting", restart_count=1, started_at="again")]

    result = clock.run(script, {WEB.id}, timeout=120)
    assert (result.ok, result.reason, result.waited) == (False, "web: restarted 1 time(s) before it was ready", pytest.approx(2))


def test_the_restart_count_first_seen_is_the_baseline(clock):
    """A container that restarted before the first look is judged by what it does from then on."""
    def script(t):
        return [container(restart_count=3)]

    assert clock.run(script, {WEB.id}).ok


def test_a_watched_container_removed_fails(clock):
    result = clock.run(lambda t: [container(health="starting")] if t < 1 else [], {WEB.id})
    assert (result.ok, result.reason) == (False, "web: container removed")


def test_a_watched_container_never_listed_is_named_by_its_id(clock):
    result = clock.run(lambda t: [WEB], {WEB.id, "0123456789abcdef"})
    assert result.reason == "container 0123456789ab: container removed"


def test_no_watched_containers_pass_at_once(clock):
    result = clock.run(lambda t: pytest.fail("read() called"), set())
    assert (result.ok, result.reason, result.images, result.waited) == (True, "", {}, 0)


def test_status_says_what_is_waited_for_when_it_changes(clock):
    def script(t):
        return [container(health="healthy" if t >= 1.5 else "starting"), container(DB, status="running" if t >= 1 else "created")]

    assert clock.run(script, {WEB.id, DB.id}, timeout=120, stable=2).ok
    assert clock.said == [
        "db: waiting to be running, web: waiting to be healthy (0/120 s)",
        "web: waiting to be healthy (1/120 s)",
        "db, web: stable for 0/2 s",
        "db, web: stable for 1/2 s",
    ]


def test_stable_0_skips_the_stability_window(clock):
    result = clock.run(lambda t: [container(health="healthy" if t >= 1 else "starting")], {WEB.id}, stable=0)
    assert result.ok and result.waited == pytest.approx(1)
    assert clock.reads[-1] == pytest.approx(1)
    assert not any("stable" in line for line in clock.said)


def test_containers_outside_watch_are_ignored(clock):
    others = [container(DB, status="exited", exit_code=1), container(JOB, status="running", health="unhealthy")]
    result = clock.run(lambda t: [WEB, *others], {WEB.id}, stable=2)
    assert result.ok and result.images == {"web": "sha256:web"}


def test_several_containers_of_one_service_are_named_by_container(clock):
    second = container(id="x" * 64, name="demo-web-2", image_id="sha256:other")
    def script(t):
        return [WEB, container(second, status="exited", exit_code=4) if t >= 1 else container(second, health="starting")]

    result = clock.run(script, {WEB.id, second.id})
    assert result.reason == "web (demo-web-2): exited with status 4"
    passed = Clock().run(lambda t: [WEB, second], {WEB.id, second.id})
    assert passed.images == {"web": "sha256:web"}  # they differ: the first (by container name)


def test_every_failure_of_one_poll_is_named(clock):
    result = clock.run(lambda t: [container(health="unhealthy"), container(DB, status="exited", exit_code=1)], {WEB.id, DB.id})
    assert result.reason == "db: exited with status 1; web: unhealthy after 0 s"


def test_polls_every_interval_and_sleeps_no_further_than_the_deadline(clock):
    result = clock.run(lambda t: [container(health="starting")], {WEB.id}, timeout=1.25, stable=0, interval=0.5)
    assert not result.ok
    assert clock.sleeps == [0.5, 0.5, 0.25]
    assert clock.reads == [0, 0.5, 1.0, 1.25]


def test_read_errors_propagate(clock):
    def script(t):
        raise RuntimeError("engine gone")

    with pytest.raises(RuntimeError, match="engine gone"):
        clock.run(script, {WEB.id})


def test_a_zero_interval_is_refused(clock):
    with pytest.raises(ValueError, match="interval"):
        clock.run(lambda t: [WEB], {WEB.id}, interval=0)
