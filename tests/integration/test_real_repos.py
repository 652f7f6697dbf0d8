"""Layouts and habits of real home-server repositories, against the real engine: per-stack
envs and their precedence over a stack's own .env, and COMPOSE_FILE / COMPOSE_PROFILES in .env."""

from __future__ import annotations

import pytest

from tests.conftest import containers, free_port, run, service_yaml

pytestmark = pytest.mark.docker


def env_of(project: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in containers(project)["app"].env)


def test_a_stacks_own_env_beats_shared_envs_and_its_stack_settings_beat_both(cfx, repo, prefix):
    plain, committed, pinned = f"{prefix}-plain", f"{prefix}-committed", f"{prefix}-pinned"
    repo.write("stack.yml", f"envs: {{TZ: UTC, MODE: shared}}\nstacks:\n  {pinned}:\n    envs: {{MODE: pinned}}\n")
    for name in (plain, committed, pinned):
        repo.write(f"{name}/compose.yaml", service_yaml(environment={"TZ": "${TZ}", "MODE": "${MODE}"}))
    repo.write(f"{committed}/.env", "TZ=Europe/Berlin\nMODE=committed\n")
    repo.write(f"{pinned}/.env", "MODE=committed\n")
    repo.commit()
    result = cfx.sync()
    assert {k: env_of(plain)[k] for k in ("TZ", "MODE")} == {"TZ": "UTC", "MODE": "shared"}
    assert {k: env_of(committed)[k] for k in ("TZ", "MODE")} == {"TZ": "Europe/Berlin", "MODE": "committed"}
    assert {k: env_of(pinned)[k] for k in ("TZ", "MODE")} == {"TZ": "UTC", "MODE": "pinned"}
    assert f"{committed}: Variables MODE, TZ: its .env wins over the shared envs of stack.yml" in result.stderr


def test_compose_file_and_compose_profiles_in_env_are_honoured(cfx, repo, prefix):
    name = f"{prefix}-layered"
    repo.write(f"{name}/compose.base.yml", service_yaml(services=("app", "extra")).replace(
        "  extra:\n", "  extra:\n    profiles: [extras]\n"))
    repo.write(f"{name}/compose.host.yml", "services:\n  app:\n    environment:\n      LAYER: host\n")
    repo.write(f"{name}/.env", "COMPOSE_FILE=compose.base.yml:compose.host.yml\nCOMPOSE_PROFILES=extras\n")
    repo.commit()
    cfx.sync()
    running = containers(name)
    assert set(running) == {"app", "extra"}  # the profile from .env is active
    assert env_of(name)["LAYER"] == "host"  # the host override listed in COMPOSE_FILE applies


def test_errors_show_paths_relative_to_the_repository(cfx, repo, prefix):
    name = f"{prefix}-broken"
    repo.write(f"{name}/compose.yaml", "services:\n  app:\n    image: [not, a, string]\n")
    repo.add_stack(f"{prefix}-fine")
    repo.commit()
    result = cfx.sync(expect=1)
    error = next(line for line in result.stderr.splitlines() if line.startswith(f"error: {name}:"))
    assert str(cfx.state) not in error
    assert result.stderr.count(f"error: {name}:") == 1  # each failure once
    summary = result.stderr.strip().splitlines()[-1]
    assert summary == f"1 deployed, 0 unchanged, 0 pruned, 1 failed ({name})"


def test_a_project_started_by_hand_is_adopted_once_when_asked(cfx, repo, prefix, tmp_path):
    name = f"{prefix}-legacy"
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    (by_hand / "compose.yaml").write_text(service_yaml())
    run("docker", "compose", "-p", name, "up", "-d", cwd=by_hand)
    repo.add_stack(name)
    repo.commit()
    refused = cfx.sync(expect=1)
    assert f"composeflux sync --adopt {name}" in refused.stderr
    assert "compose.stack.managed-by" not in containers(name)["app"].labels

    cfx.sync("--adopt", name)
    assert containers(name)["app"].labels["compose.stack.managed-by"] == "composeflux"
    assert "0 deployed, 1 unchanged" in cfx.sync().stderr  # ours from now on


def test_a_dry_run_predicts_what_up_would_refuse_and_the_sync_fails_only_those(cfx, repo, prefix, tmp_path):
    port = free_port()
    other = f"{prefix}-squatter"
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    (by_hand / "compose.yaml").write_text(service_yaml() + f'    ports: ["127.0.0.1:{port}:8080"]\n')
    run("docker", "compose", "-p", other, "up", "-d", cwd=by_hand)
    repo.write(f"{prefix}-port/compose.yaml", service_yaml() + f'    ports: ["127.0.0.1:{port}:8080"]\n')
    repo.write(f"{prefix}-net/compose.yaml", service_yaml() + "    networks: [proxy]\n"
               + f"networks:\n  proxy:\n    name: {prefix}-proxy\n    external: true\n")
    repo.add_stack(f"{prefix}-fine")
    repo.commit()
    planned = cfx.sync("--dry-run", expect=1)
    assert f"host port {port}/tcp of service app is published by the project {other}" in planned.stdout
    assert f"external network {prefix}-proxy does not exist" in planned.stdout
    result = cfx.sync(expect=1)
    assert f"1 deployed, 0 unchanged, 0 pruned, 2 failed ({prefix}-net, {prefix}-port)" in result.stderr
    assert containers(f"{prefix}-port") == {} and containers(f"{prefix}-net") == {}
    run("docker", "network", "create", f"{prefix}-proxy")
    assert "1 deployed, 1 unchanged" in cfx.sync(expect=1).stderr  # the network is there now


def test_the_stack_that_creates_a_network_is_deployed_before_those_that_use_it(cfx, repo, prefix):
    network = f"{prefix}-proxy"
    # "a-app" comes first by name, but needs the network that "z-edge" creates.
    repo.write(f"{prefix}-a-app/compose.yaml", service_yaml() + "    networks: [proxy]\n"
               + f"networks:\n  proxy:\n    name: {network}\n    external: true\n")
    repo.write(f"{prefix}-z-edge/compose.yaml", service_yaml() + "    networks: [proxy]\n" + f"networks:\n  proxy:\n    name: {network}\n")
    repo.commit()
    result = cfx.sync()
    order = [line.split(":")[0] for line in result.stderr.splitlines() if ": Deploying:" in line]
    assert order == [f"{prefix}-z-edge", f"{prefix}-a-app"]
    assert containers(f"{prefix}-a-app")["app"].state == "running"


def test_a_top_level_name_is_the_project_name_as_compose_up_would_use(cfx, repo, prefix):
    repo.write("media/compose.yaml", f"name: {prefix}-jellyfin\n" + service_yaml())
    repo.commit()
    cfx.sync()
    assert containers(f"{prefix}-jellyfin")["app"].state == "running"
    assert "0 deployed, 1 unchanged" in cfx.sync().stderr


def test_stacks_from_several_directories_and_a_vanished_one_prunes_nothing(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-web")
    repo.write(f"../apps/{prefix}-media/compose.yaml", service_yaml())
    repo.commit()
    cfx.settings(STACK_PATH="stacks, apps")
    cfx.sync()
    assert containers(f"{prefix}-web") and containers(f"{prefix}-media")
    assert (cfx.state / "stacks" / f"{prefix}-media" / "apps" / f"{prefix}-media" / "compose.yaml").exists()
    repo.git("rm", "-rq", "apps")
    repo.commit("apps moved away")
    result = cfx.sync(expect=6)
    assert "STACK_PATH apps does not exist" in result.stderr
    assert containers(f"{prefix}-media")["app"].state == "running"


def test_a_stack_whose_image_cannot_be_pulled_names_it_and_is_not_retried_every_run(cfx, repo, prefix):
    name = f"{prefix}-nopull"
    repo.write(f"{name}/compose.yaml", service_yaml().replace("composeflux-test/busybox:latest", "composeflux-test/nosuch:1"))
    repo.add_stack(f"{prefix}-fine")
    repo.commit()
    first = cfx.sync(expect=1, timeout=600)
    assert "(pulling composeflux-test/nosuch:1)" in first.stderr
    again = cfx.sync(expect=1)
    assert f"{name}: Not retried yet:" in again.stderr and "Deploying" not in again.stderr
    assert f"1 failed ({name})" in again.stderr
    assert "Deploying" in cfx.sync("--retry-failed", expect=1, timeout=600).stderr


def test_no_stack_found_says_where_the_compose_files_are(cfx, repo, prefix):
    repo.write(f"group/{prefix}-deep/compose.yaml", service_yaml())
    repo.commit()
    result = cfx.sync()
    assert f"compose files lie deeper (stacks/group/{prefix}-deep); STACK_PATH=stacks/group would find them" in result.stderr
