"""The health gate's consequences in one sync, in-process (fake Compose, real Git): rollback to
the last good revision, no redeploy of a rejected revision, healing with its limit, suspend and
resume, an interrupted deploy checked by the next sync. tests/integration/test_rollback.py runs
them against the real engine with real healthchecks."""

from __future__ import annotations

from composeflux import state
from composeflux.errors import ExitStatus
from composeflux.plan import Action


def broken_when_mode_is_broken(project, service, definition):
    return "unhealthy" if (definition.get("environment") or {}).get("MODE") == "broken" else None


def deployed_mode(cfx, stack: str) -> str:
    return cfx.compose.projects[stack]["services"]["app"]["environment"]["MODE"]


def good_then_broken(cfx, repo):
    repo.add_stack("web", environment={"MODE": "good"})
    repo.add_stack("db", environment={"MODE": "good"})
    good = repo.commit("good")
    cfx.compose.health_of = broken_when_mode_is_broken
    assert cfx() is ExitStatus.OK
    repo.add_stack("web", environment={"MODE": "broken"})
    bad = repo.commit("broken")
    return good, bad


def test_a_revision_that_fails_its_gate_is_rolled_back_and_not_redeployed(cfx, repo):
    good, bad = good_then_broken(cfx, repo)
    assert cfx() is ExitStatus.STACKS_FAILED
    assert deployed_mode(cfx, "web") == "good"
    record = cfx.state().stacks["web"]
    assert record.last_action == Action.ROLLED_BACK.value
    assert record.deployed.commit == good and record.good.commit == good
    assert record.rejected.commit == bad and "unhealthy" in record.rejected_reason
    assert "rolled back" in cfx.state().last_sync.summary
    # The image it ran then is pinned: a moved tag cannot change what comes back.
    image = cfx.compose.projects["web"]["services"]["app"]["image"]
    assert image == record.good.images["app"] and image.startswith("sha256:")

    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []
    assert f"rolled back from {bad[:12]}" in cfx.state().stacks["web"].last_reason or \
        f"rolled back from {bad[:12]}" in (cfx.state().last_sync.stacks["web"]["reason"] or "")
    assert cfx(dry_run=True) is ExitStatus.STACKS_FAILED
    assert "waiting for a new revision" in cfx.out

    repo.add_stack("web", environment={"MODE": "fixed"})
    repo.commit("fixed")
    assert cfx() is ExitStatus.OK
    assert deployed_mode(cfx, "web") == "fixed"
    assert cfx.state().stacks["web"].rejected is None


def test_retry_tries_a_rejected_revision_again(cfx, repo):
    good_then_broken(cfx, repo)
    cfx()
    cfx.compose.health_of = None  # whatever broke it is fixed outside Git
    cfx.compose.calls.clear()
    assert cfx(retry=frozenset({"web"})) is ExitStatus.OK
    assert cfx.compose.called("up") == ["web"]
    assert deployed_mode(cfx, "web") == "broken"


def test_without_rollback_the_revision_is_left_reported_and_remembered(cfx, repo):
    good_then_broken(cfx, repo)
    assert cfx(ROLLBACK="false") is ExitStatus.STACKS_FAILED
    assert deployed_mode(cfx, "web") == "broken"
    assert "failed its health gate" in cfx.state().stacks["web"].last_error
    cfx.compose.calls.clear()
    assert cfx(ROLLBACK="false") is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []


def test_rollback_per_stack_in_stack_yml(cfx, repo):
    good_then_broken(cfx, repo)
    repo.write("stack.yml", "stacks:\n  web:\n    rollback: false\n")
    repo.commit("no rollback for web")
    assert cfx() is ExitStatus.STACKS_FAILED
    assert deployed_mode(cfx, "web") == "broken"


def test_a_first_deploy_that_fails_its_gate_has_nothing_to_go_back_to(cfx, repo):
    repo.add_stack("web", environment={"MODE": "broken"})
    repo.commit()
    cfx.compose.health_of = broken_when_mode_is_broken
    assert cfx() is ExitStatus.STACKS_FAILED
    assert "failed its health gate" in cfx.state().stacks["web"].last_error
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []


def test_a_broken_container_is_healed_at_most_heal_max_attempts_times(cfx, repo):
    repo.add_stack("web")
    repo.commit()
    assert cfx(HEAL_MAX_ATTEMPTS="2") is ExitStatus.OK
    for attempt in (1, 2):
        cfx.compose.stopped.add(("web", "app"))
        cfx.compose.calls.clear()
        assert cfx(HEAL_MAX_ATTEMPTS="2") is ExitStatus.OK
        assert cfx.compose.called("up") == ["web"]
        assert cfx.state().stacks["web"].heal_attempts == attempt
    cfx.compose.stopped.add(("web", "app"))
    cfx.compose.calls.clear()
    assert cfx(HEAL_MAX_ATTEMPTS="2") is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []
    assert "HEAL_MAX_ATTEMPTS" in cfx.state().last_sync.stacks["web"]["reason"]


def test_a_suspended_stack_is_not_deployed_healed_or_pruned_until_resumed(cfx, repo):
    repo.add_stack("web", environment={"MODE": "one"})
    repo.add_stack("db")
    repo.commit()
    assert cfx() is ExitStatus.OK
    state.set_suspended(cfx.state_dir, "web", "maintenance")
    state.set_suspended(cfx.state_dir, "db", "")
    repo.add_stack("web", environment={"MODE": "two"})
    repo.remove("db")
    repo.commit()
    cfx.compose.stopped.add(("web", "app"))
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == [] and cfx.compose.called("down") == []
    last = cfx.state().last_sync
    assert last.stacks["web"]["action"] == "suspended" and "maintenance" in last.stacks["web"]["reason"]
    assert last.stacks["db"]["action"] == "suspended"
    assert cfx(dry_run=True) is ExitStatus.OK and "suspended" in cfx.out

    state.set_suspended(cfx.state_dir, "web", None)
    state.set_suspended(cfx.state_dir, "db", None)
    assert cfx() is ExitStatus.OK
    assert deployed_mode(cfx, "web") == "two"
    assert "db" not in cfx.compose.projects


def test_a_stack_suspended_in_stack_yml(cfx, repo):
    repo.add_stack("web", environment={"MODE": "one"})
    repo.commit()
    cfx()
    repo.add_stack("web", environment={"MODE": "two"})
    repo.write("stack.yml", "stacks:\n  web:\n    suspended: true\n")
    repo.commit()
    assert cfx() is ExitStatus.OK
    assert deployed_mode(cfx, "web") == "one"
    assert cfx.state().last_sync.stacks["web"]["reason"] == "suspended in stack.yml"


def test_a_deploy_an_interrupted_sync_left_unchecked_is_gated_by_the_next_one(cfx, repo):
    good_then_broken(cfx, repo)
    # As if a sync had run `up` of the broken revision and been killed before its gate ended:
    # the containers carry the hash Git wants, and the state says it was pending.
    cfx.compose.health_of = None
    assert cfx(HEALTH_TIMEOUT="1") is ExitStatus.OK  # deployed, and (here) passed
    record = cfx.state().stacks["web"]
    state.mark_pending(cfx.state_dir, "web", record.deployed.commit, record.deployed.hash)
    cfx.compose.health_of = broken_when_mode_is_broken
    assert cfx() is ExitStatus.STACKS_FAILED  # checked now: it fails its gate, and has no other good revision
    assert "failed its health gate" in cfx.state().stacks["web"].last_error
    assert cfx.state().stacks["web"].pending is None


def test_a_rolled_back_stack_whose_container_dies_is_rolled_back_again_at_most_heal_max_attempts(cfx, repo):
    good, bad = good_then_broken(cfx, repo)
    assert cfx(HEAL_MAX_ATTEMPTS="1") is ExitStatus.STACKS_FAILED  # rolled back
    cfx.compose.stopped.add(("web", "app"))  # the good revision's container dies
    cfx.compose.calls.clear()
    assert cfx(HEAL_MAX_ATTEMPTS="1") is ExitStatus.STACKS_FAILED  # Git still wants the rejected revision
    assert cfx.compose.called("up") == ["web"]
    assert deployed_mode(cfx, "web") == "good" and ("web", "app") not in cfx.compose.stopped
    record = cfx.state().stacks["web"]
    assert record.last_action == Action.ROLLED_BACK.value and record.heal_attempts == 1
    assert record.rejected.commit == bad and record.deployed.commit == good

    cfx.compose.stopped.add(("web", "app"))
    cfx.compose.calls.clear()
    assert cfx(HEAL_MAX_ATTEMPTS="1") is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []  # healed once already: left alone, and said so
    assert "HEAL_MAX_ATTEMPTS" in cfx.state().last_sync.stacks["web"]["reason"]


def test_an_image_update_is_pulled_for_its_services_only_and_rolled_back_to_the_old_image_when_it_fails(cfx, repo):
    repo.add_stack("web", services=("app", "side"))
    repo.commit()
    assert cfx() is ExitStatus.OK
    labels = {s: dict(d["labels"]) for s, d in cfx.compose.projects["web"]["services"].items()}
    old_image = cfx.state().stacks["web"].good.images["app"]

    cfx.compose.calls.clear()
    assert cfx(pull={"web": {"app": "sha256:" + "2" * 64}}) is ExitStatus.OK
    assert cfx.compose.called("up") == ["web"]
    services = cfx.compose.projects["web"]["services"]
    assert services["app"]["pull_policy"] == "always" and "pull_policy" not in services["side"]
    assert {s: dict(d["labels"]) for s, d in services.items()} == labels  # the hashes stay: only the image changes

    # A new image that does not come up: back to the old image ID; the digest is remembered, the revision is not rejected.
    cfx.compose.health_of = lambda project, service, definition: "unhealthy" if definition.get("pull_policy") == "always" else None
    assert cfx(pull={"web": {"app": "sha256:" + "3" * 64}}) is ExitStatus.STACKS_FAILED
    record = cfx.state().stacks["web"]
    assert record.last_action == Action.ROLLED_BACK.value
    assert cfx.compose.projects["web"]["services"]["app"]["image"] == old_image
    assert record.bad_images == {"app": "sha256:" + "3" * 64} and record.rejected is None
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.OK  # the revision itself is fine: nothing to hold back
