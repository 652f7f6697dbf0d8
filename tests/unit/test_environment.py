"""Per-stack interpolation: global envs < the stack's .env < its stack.yml envs < secrets."""

from __future__ import annotations

import pytest

from composeflux.environment import read_dotenv, stack_environment
from composeflux.errors import ConfigError, ExitStatus
from composeflux.stacks import discover, load_stack_config
from tests.conftest import service_yaml


def test_layers_from_lowest_to_highest_and_what_shadows_what():
    result = stack_environment(
        global_envs={"TZ": "UTC", "DOMAIN": "home.example", "DB": "global"},
        dotenv={"TZ": "Europe/Berlin", "DB": "dotenv"},
        stack_envs={"DB": "stack", "PORT": "8080"},
        secrets={"PORT": "9090", "TOKEN": "s3cr3t-token"},
    )
    # TZ from .env reaches Compose by Compose reading .env: it is not handed over at all.
    assert result.env == {"DOMAIN": "home.example", "DB": "stack", "PORT": "9090", "TOKEN": "s3cr3t-token"}
    assert result.shadowed == (
        "DB, TZ: its .env wins over the shared envs of stack.yml",
        "DB: its envs under stacks: in stack.yml wins over the shared envs of stack.yml",
        "DB: its envs under stacks: in stack.yml wins over its .env",
        "PORT: the secrets provider wins over its envs under stacks: in stack.yml",
    )
    assert "s3cr3t" not in " ".join(result.shadowed) and "Berlin" not in " ".join(result.shadowed)


def test_read_dotenv_knows_the_names_and_simple_values(tmp_path):
    (tmp_path / ".env").write_text(
        "# comment\nexport A=1\nB = 'two words'\nC=\"x\"\nD=plain # trailing comment\nnot a line\n=nothing\n"
    )
    assert read_dotenv(tmp_path / ".env") == {"A": "1", "B": "two words", "C": "x", "D": "plain"}
    assert read_dotenv(tmp_path / "missing") == {}


def test_stacks_settings_are_validated_strictly(tmp_path):
    cases = {
        "stacks: [web]\n": "stack.yml: stacks: expected a mapping of stack name to its settings",
        "stacks:\n  web: [envs]\n": "stack.yml: stacks.web: expected a mapping of settings",
        "stacks:\n  web:\n    env: {A: b}\n": "stack.yml: stacks.web: unknown key(s) env (allowed: envs, health_timeout, health_stable",
        "stacks:\n  web:\n    health_timeout: 0\n": "stack.yml: stacks.web.health_timeout: expected a number of seconds, more than 0",
        "stacks:\n  web:\n    health_stable: '10 parsecs'\n": "stack.yml: stacks.web.health_stable: expected a number of seconds",
        "stacks:\n  web:\n    health_stable: true\n": "stack.yml: stacks.web.health_stable: expected a number of seconds",
        "stacks:\n  web:\n    rollback: 'no'\n": "stack.yml: stacks.web.rollback: expected true or false",
        "stacks:\n  web:\n    suspended: 1\n": "stack.yml: stacks.web.suspended: expected true or false",
        "stacks:\n  web:\n    image_updates: sometimes\n": "stack.yml: stacks.web.image_updates: expected one of off, notify, apply",
        "stacks:\n  web:\n    envs: {1A: b}\n": "stack.yml: stacks.web.envs: '1A' is not a valid variable name",
        "stacks:\n  web:\n    envs: {A: [b]}\n": "stack.yml: stacks.web.envs.A: expected a string or number",
    }
    for text, message in cases.items():
        (tmp_path / "stack.yml").write_text(text)
        with pytest.raises(ConfigError) as error:
            load_stack_config(tmp_path / "stack.yml")
        assert str(error.value).startswith(message), text
    (tmp_path / "stack.yml").write_text("stacks:\n  web:\n    envs: {PORT: 08080}\n  db:\n")
    config = load_stack_config(tmp_path / "stack.yml")
    assert config.settings("web").envs == {"PORT": "08080"} and config.settings("db").envs == {}
    assert config.settings("unknown").envs == {}
    (tmp_path / "stack.yml").write_text("stacks:\n  web:\n    health_timeout: 2min\n    health_stable: 15s\n")
    config = load_stack_config(tmp_path / "stack.yml")  # units as in composeflux.conf
    assert (config.settings("web").health_timeout, config.settings("web").health_stable) == (120, 15)


def test_compose_file_in_the_stack_env_chooses_its_files(tmp_path):
    stack = tmp_path / "stacks" / "app"
    stack.mkdir(parents=True)
    (stack / "compose.base.yml").write_text(service_yaml())
    (stack / "compose.host.yml").write_text("services: {}\n")
    (stack / ".env").write_text("COMPOSE_FILE=compose.base.yml:compose.host.yml\n")
    broken = tmp_path / "stacks" / "broken"
    broken.mkdir()
    (broken / ".env").write_text("COMPOSE_FILE=compose.yaml:missing.yml\n")
    (broken / "compose.yaml").write_text(service_yaml())
    found = discover(tmp_path, "stacks", "stack.yml")
    assert [f.name for f in found.stacks[0].compose_files] == ["compose.base.yml", "compose.host.yml"]
    assert [(p.name, p.reason) for p in found.problems] == [("broken", "COMPOSE_FILE in its .env names missing.yml, which is not there")]


def test_a_stack_env_wins_over_global_envs_and_loses_to_its_own_settings(cfx, repo, caplog):
    repo.write("stack.yml", "envs: {TZ: UTC, MODE: global}\nstacks:\n  pinned:\n    envs: {MODE: pinned}\n")
    environment = {"TZ": "${TZ}", "MODE": "${MODE}"}
    for name in ("plain", "committed", "pinned"):
        repo.write(f"{name}/compose.yaml", service_yaml(environment=environment))
    repo.write("committed/.env", "TZ=Europe/Berlin\nMODE=dotenv\n")
    repo.write("pinned/.env", "MODE=dotenv\n")
    repo.commit()
    assert cfx() is ExitStatus.OK
    seen = {name: cfx.compose.projects[name]["services"]["app"]["environment"] for name in ("plain", "committed", "pinned")}
    assert seen == {
        "plain": {"TZ": "UTC", "MODE": "global"},
        "committed": {"TZ": "Europe/Berlin", "MODE": "dotenv"},
        "pinned": {"TZ": "UTC", "MODE": "pinned"},
    }
    assert "Variables MODE, TZ: its .env wins over the shared envs of stack.yml" in caplog.text
    assert "Variables MODE: its envs under stacks: in stack.yml wins over its .env" in caplog.text
