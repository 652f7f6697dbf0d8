"""BACKEND=swarm in-process: who syncs (only the swarm's leader), and that a follower changes
nothing. Deploying to a real multi-node swarm is tests/swarm."""

from __future__ import annotations

import dataclasses

import pytest

from composeflux import sync
from composeflux.errors import ExitStatus


def unused(*args, **kwargs):
    raise AssertionError("a follower or worker must not get this far")


def swarm_tools(cfx, role):
    return dataclasses.replace(
        cfx.compose.tools(),
        swarm=sync.SwarmTools(
            stack=unused, read_stack=unused, create_objects=unused, remove_unused_objects=unused, rollback=unused,
            engine_time=unused, hash_key=unused, role=lambda: role,
        ),
    )


def run(cfx, role, dry_run=False, monkeypatch=None):
    tools = swarm_tools(cfx, role)
    monkeypatch.setattr(cfx.compose, "tools", lambda: tools)
    return cfx(BACKEND="swarm", dry_run=dry_run)


def test_a_manager_that_is_not_the_leader_leaves_the_sync_to_it(cfx, repo, monkeypatch, caplog):
    caplog.set_level("INFO")
    repo.add_stack("web")
    repo.commit()
    assert run(cfx, ("manager", "node2"), monkeypatch=monkeypatch) is ExitStatus.OK
    assert "Not the leader of the swarm (the leader is node2)" in caplog.text
    assert cfx.compose.calls == []
    assert not (cfx.state_dir / "state.json").exists()  # nothing recorded: the leader's sync is the one


@pytest.mark.parametrize(("role", "said"), [("worker", "a swarm worker"), ("inactive", "not part of a swarm")])
def test_a_worker_or_an_engine_in_no_swarm_cannot_sync(cfx, repo, monkeypatch, caplog, role, said):
    repo.add_stack("web")
    repo.commit()
    assert run(cfx, (role, ""), monkeypatch=monkeypatch) is ExitStatus.ENGINE
    assert f"this Docker engine is {said}" in caplog.text
    assert cfx.compose.calls == []


def test_the_compose_backend_asks_nobody(cfx, repo, monkeypatch):
    from composeflux import engine

    monkeypatch.setattr(engine, "swarm_role", unused)
    repo.add_stack("web")
    repo.commit()
    assert cfx() is ExitStatus.OK  # BACKEND=compose (the default): nobody is asked about a swarm
    assert cfx.compose.called("up") == ["web"]


def test_image_updates_say_they_are_not_for_swarm(cfx, repo, caplog):
    from composeflux import config as configuration, updates

    config = configuration.load(cfx.conf, environ={**cfx.settings, "BACKEND": "swarm"})
    assert updates.run(config) is ExitStatus.CONFIG
    assert "not available with BACKEND=swarm" in caplog.text
    assert not (cfx.state_dir / "state.json").exists()
