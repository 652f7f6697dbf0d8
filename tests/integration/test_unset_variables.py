"""Unset variables (issue 9) against the real engine and Compose: a stack fails only when a
variable without a value reaches what is deployed, and then the message names it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TEST_IMAGE, container_ids, containers, service_yaml

pytestmark = pytest.mark.docker

SENTINEL = "cfx-unset-"


def no_sentinel_anywhere(cfx, result) -> None:
    """Neither the output, the state file nor a container carries a made-up value."""
    assert SENTINEL not in result.stdout + result.stderr
    assert SENTINEL not in (cfx.state / "state.json").read_text()


def service(name: str, *lines: str) -> str:
    return "\n".join(
        [f"  {name}:", f"    image: {TEST_IMAGE}", '    command: ["sleep", "infinity"]', "    init: true", "    stop_grace_period: 1s"]
        + [f"    {line}" for line in lines]
    ) + "\n"


def test_an_unused_extends_variant_and_an_inactive_profile_deploy(cfx, repo, prefix):
    """HOST is only in an `extends` variant nothing extends, DEBUG_TOKEN and DEBUG_PORT only in a
    service of an inactive profile (Compose 2.26 warns about all three, and validates the port)."""
    repo.write(
        f"{prefix}-web/compose.yaml",
        "services:\n"
        + service("app", "extends: {file: variants.yml, service: plain}")
        + service("debug", "profiles: [debug]", 'environment: {TOKEN: "${DEBUG_TOKEN}"}', 'ports: ["${DEBUG_PORT}:9229"]'),
    )
    repo.write(
        f"{prefix}-web/variants.yml",
        "services:\n" + service("plain", "environment: {FLAVOUR: plain}") + service("fancy", 'labels: {host: "${HOST}"}'),
    )
    repo.commit()
    result = cfx.sync()
    assert "1 deployed, 0 unchanged, 0 pruned, 0 failed" in result.stderr
    assert "used without a value" not in result.stderr
    found = containers(f"{prefix}-web")
    assert set(found) == {"app"}  # the debug service is not deployed
    assert "FLAVOUR=plain" in found["app"].env
    assert "host" not in found["app"].labels
    no_sentinel_anywhere(cfx, result)
    for info in found.values():
        assert SENTINEL not in json.dumps([info.labels, info.env])

    again = cfx.sync()  # the hash is the first render's, every time
    assert "0 deployed, 1 unchanged" in again.stderr


def test_a_blank_volume_source_fails_naming_the_variable(cfx, repo, prefix):
    repo.write(f"{prefix}-data/compose.yaml", "services:\n" + service("app", 'volumes: ["${DATA_DIR}:/data"]'))
    repo.add_stack(f"{prefix}-fine")
    repo.commit()
    result = cfx.sync(expect=1)
    assert (
        f"{prefix}-data: variable(s) DATA_DIR used without a value or default (define them in stack.yml envs, "
        "the secrets provider or the stack's .env); docker compose config failed: invalid spec: :/data: empty section between colons"
    ) in result.stderr
    assert container_ids(f"{prefix}-data") == {}
    assert container_ids(f"{prefix}-fine")
    assert "DATA_DIR used without a value" in cfx.last_state()["stacks"][f"{prefix}-data"]["error"]
    no_sentinel_anywhere(cfx, result)


def test_a_used_unset_variable_fails_and_a_defaulted_one_deploys(cfx, repo, prefix):
    repo.write(
        f"{prefix}-used/compose.yaml",
        "services:\n"
        + service("app", 'environment: {X: "${NOT_SET}"}')
        + service("debug", "profiles: [debug]", 'labels: {l: "${DEBUG_ONLY}"}'),
    )
    repo.add_stack(f"{prefix}-defaulted", environment={"X": "${X:-d}"})
    repo.commit()
    result = cfx.sync(expect=1)
    assert f"{prefix}-used: variable(s) NOT_SET used without a value or default" in result.stderr  # DEBUG_ONLY is not named
    assert "DEBUG_ONLY" not in result.stderr
    assert container_ids(f"{prefix}-used") == {}
    assert "X=d" in containers(f"{prefix}-defaulted")["app"].env
    no_sentinel_anywhere(cfx, result)


def test_a_deployed_port_without_a_value_fails(cfx, repo, prefix):
    """`"${PORT}:80"` with PORT unset is a random host port to Compose: composeflux fails it."""
    repo.write(f"{prefix}-port/compose.yaml", service_yaml() + '    ports: ["${PORT}:80"]\n')
    repo.commit()
    result = cfx.sync(expect=1)
    assert f"{prefix}-port: variable(s) PORT used without a value or default" in result.stderr
    assert container_ids(f"{prefix}-port") == {}
    no_sentinel_anywhere(cfx, result)
