"""The plan is a plain value computed from hashes and container labels: no Docker needed."""

import pytest

from composeflux.deployed import SERVICE_HASH, Container, DeployedStack
from composeflux.errors import UnsafePruneError
from composeflux.plan import Action, Plan, StackPlan, make_plan, network_order, schedule
from composeflux.rendered import StackHashes, StackProblem


def rendered(name, **services):
    return StackHashes(name, f"stack-{name}", dict(services))


def deployed(name, state="running", exit_code=None, **services):
    containers = tuple(
        Container(f"id-{name}-{service}", service, {SERVICE_HASH: digest}, state, exit_code)
        for service, digest in services.items()
    )
    return DeployedStack(name, containers)


def plan_for(desired, running, others=None, remove_orphans=True, allow_prune_all=False):
    """desired: (name, hashes or the reason the stack failed) in deploy order."""
    items = [StackProblem(name, value) if isinstance(value, str) else value for name, value in desired]
    return make_plan(items, running, others or {}, remove_orphans, allow_prune_all)


def actions(plan):
    return [(s.name, s.action, s.reason) for s in plan.stacks]


def test_new_changed_unchanged_and_pruned():
    plan = plan_for(
        [("a", rendered("a", app="h1")), ("b", rendered("b", app="h2", db="h3")), ("c", rendered("c", app="h4"))],
        {"b": deployed("b", app="h2", db="old"), "c": deployed("c", app="h4"), "gone": deployed("gone", app="x")},
    )
    assert actions(plan) == [
        ("gone", Action.PRUNE, "deleted from Git"),  # first: a renamed stack may need its port or container name
        ("a", Action.DEPLOY, "new"),
        ("b", Action.DEPLOY, "hash changed (services: db)"),
        ("c", Action.UNCHANGED, ""),
    ]


def test_missing_stopped_and_removed_services():
    plan = plan_for(
        [("a", rendered("a", app="h", extra="e")), ("b", rendered("b", app="h")), ("c", rendered("c", app="h"))],
        {"a": deployed("a", app="h"), "b": deployed("b", state="exited", exit_code=137, app="h"),
         "c": deployed("c", app="h", old="o")},
    )
    assert [s.reason for s in plan.stacks] == [
        "missing from Docker (services: extra)",
        "not running (services: app)",
        "services removed from Git: old",
    ]


def test_finished_one_shot_service_counts_as_up():
    plan = plan_for([("a", rendered("a", init="h"))], {"a": deployed("a", state="exited", exit_code=0, init="h")})
    assert plan.stacks[0].action is Action.UNCHANGED


def test_remove_orphans_false_keeps_deleted_stacks_and_services():
    plan = plan_for([("a", rendered("a", app="h"))], {"a": deployed("a", app="h", old="o"), "gone": deployed("gone", app="x")},
                    remove_orphans=False)
    assert actions(plan) == [("gone", Action.KEEP, "deleted from Git; kept because REMOVE_ORPHANS=false"), ("a", Action.UNCHANGED, "")]


def test_failed_stacks_are_not_pruned():
    plan = plan_for([("a", "docker compose config failed: boom")], {"a": deployed("a", app="h")})
    assert actions(plan) == [("a", Action.FAILED, "docker compose config failed: boom")]


def test_name_taken_by_a_project_composeflux_does_not_own():
    plan = plan_for([("a", rendered("a", app="h"))], {}, others={"a": "not deployed by composeflux"})
    assert plan.stacks[0].action is Action.FAILED and "already exists, not deployed by composeflux" in plan.stacks[0].reason


def test_pruning_everything_needs_explicit_permission():
    running = {"a": deployed("a", app="h"), "b": deployed("b", app="h")}
    with pytest.raises(UnsafePruneError, match=r"no stacks were found in Git, but 2 are deployed \(a, b\)"):
        plan_for([], running)
    plan = plan_for([], running, allow_prune_all=True)
    assert [s.action for s in plan.stacks] == [Action.PRUNE, Action.PRUNE]


def test_plan_lines_for_dry_run():
    plan = plan_for([("web", rendered("web", app="h"))], {})
    assert plan.lines() == ["deploy     web  stack-web     new"]


def test_a_stack_that_creates_a_network_goes_before_the_ones_that_use_it():
    def hashes(name, creates=(), needs=()):
        return StackHashes(name, f"h-{name}", {}, (), tuple(creates), tuple(needs))

    items = [hashes("db"), hashes("app", needs=["proxy"]), hashes("edge", creates=["proxy", "edge_default"]),
             StackProblem("broken", "x"), hashes("zz", needs=["elsewhere"])]
    first = [items[0]]
    ordered = network_order(first + items[1:], ["db"])
    assert [item.name for item in ordered] == ["db", "edge", "app", "broken", "zz"]
    # startup_order still goes first, even before a creator of what it needs
    assert [item.name for item in network_order(items, ["app"])][:1] == ["app"]
    # a cycle keeps the order it had
    loop = [hashes("a", creates=["x"], needs=["y"]), hashes("b", creates=["y"], needs=["x"])]
    assert [item.name for item in network_order(loop, [])] == ["a", "b"]


def test_the_schedule_says_who_waits_for_whom():
    def hashes(name, creates=(), needs=()):
        return StackHashes(name, f"h-{name}", {}, (), tuple(creates), tuple(needs))

    desired = [hashes("db"), hashes("cache"), hashes("edge", creates=["proxy", "volume:certs"]),
               hashes("app", needs=["proxy"]), hashes("certbot", needs=["volume:certs"]), hashes("same", needs=["proxy"]),
               hashes("zz", needs=["elsewhere"])]
    plan = Plan((
        StackPlan("old", Action.PRUNE, "deleted from Git"),
        StackPlan("db", Action.DEPLOY, "new", "h-db"),
        StackPlan("cache", Action.DEPLOY, "new", "h-cache"),
        StackPlan("edge", Action.DEPLOY, "new", "h-edge"),
        StackPlan("app", Action.DEPLOY, "new", "h-app"),
        StackPlan("certbot", Action.ROLLED_BACK, "its last good revision is broken", "h-certbot"),
        StackPlan("same", Action.UNCHANGED, "", "h-same"),
        StackPlan("zz", Action.DEPLOY, "new", "h-zz"),
        StackPlan("broken", Action.FAILED, "x"),
    ))
    waits = schedule(plan, desired, ["db", "cache", "not-changed"])
    assert waits == {
        "old": frozenset(),
        "db": {"old"},  # the first of startup_order, after the prunes
        "cache": {"old", "db"},  # the next one after it
        "edge": {"old", "db", "cache"},
        "app": {"old", "db", "cache", "edge"},  # its network's creator
        "certbot": {"old", "db", "cache", "edge"},  # its volume's creator
        "zz": {"old", "db", "cache"},  # what it needs nobody here creates
    }
    # unchanged and failed stacks are nobody's prerequisite and wait for nothing
    assert "same" not in waits and "broken" not in waits


def test_the_schedule_waits_only_for_changed_creators_that_come_first():
    def hashes(name, creates=(), needs=()):
        return StackHashes(name, f"h-{name}", {}, (), tuple(creates), tuple(needs))

    desired = [hashes("a", creates=["x"], needs=["y"]), hashes("b", creates=["y"], needs=["x"]), hashes("c", needs=["z"]),
               hashes("d", creates=["z"])]
    deploys = [StackPlan(name, Action.DEPLOY, "new", f"h-{name}") for name in ("a", "b", "c")]
    plan = Plan((*deploys, StackPlan("d", Action.UNCHANGED, "", "h-d")))
    # a cycle (a <-> b) is broken by the plan's order; c's creator is running already
    assert schedule(plan, desired, []) == {"a": frozenset(), "b": {"a"}, "c": frozenset()}
    # nothing to do, nothing to wait for
    assert schedule(Plan(()), [], ["a"]) == {}
