"""Stack discovery and stack.yml validation, on plain directories."""

import os

import pytest

from composeflux.errors import ConfigError
from composeflux.stacks import discover, load_stack_config

SERVICE = "services:\n  app:\n    image: x\n"


def make(root, files: dict):
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def test_discovery_rules(tmp_path):
    make(tmp_path, {
        "stacks/web/compose.yaml": SERVICE,
        "stacks/web/compose.override.yaml": SERVICE,
        "stacks/db/docker-compose.yml": SERVICE,
        "stacks/db/compose.override.yaml": SERVICE,  # not the override of docker-compose.yml
        "stacks/shared/common.env": "A=1\n",  # no compose file: not a stack
        "stacks/.hidden/compose.yaml": SERVICE,
        "stacks/Bad.Name/compose.yaml": SERVICE,
        "stacks/README.md": "hi",
    })
    found = discover(tmp_path, "stacks", "stack.yml")
    assert {s.name: [f.name for f in s.compose_files] for s in found.stacks} == {
        "badname": ["compose.yaml"],  # the name Compose gives the directory Bad.Name
        "db": ["docker-compose.yml"],
        "web": ["compose.yaml", "compose.override.yaml"],
    }
    assert found.problems == []


def test_directory_names_become_compose_project_names_and_clashes_fail_both(tmp_path, caplog):
    make(tmp_path, {
        "stacks/transfer.sh/compose.yaml": SERVICE,
        "stacks/Web.App/compose.yaml": SERVICE,
        "stacks/webapp/compose.yaml": SERVICE,
        "stacks/__/compose.yaml": SERVICE,
    })
    found = discover(tmp_path, "stacks", "stack.yml")
    assert [s.name for s in found.stacks] == ["transfersh"]
    assert "Directory transfer.sh is deployed as the Compose project transfersh" in caplog.text
    assert sorted((p.name, p.reason) for p in found.problems) == [
        ("__", "directory name '__' gives no valid Compose project name "
               "(lowercase letters, digits, '-' and '_', starting with a letter or digit)"),
        ("webapp", "directories Web.App, webapp are all the Compose project webapp"),
    ]


def test_symlink_out_of_the_checkout_is_an_error_for_that_stack_only(tmp_path):
    outside = tmp_path / "outside"
    make(outside, {"compose.yaml": SERVICE})
    make(tmp_path / "checkout", {"stacks/ok/compose.yaml": SERVICE})
    os.symlink(outside, tmp_path / "checkout" / "stacks" / "escape")
    found = discover(tmp_path / "checkout", "stacks", "stack.yml")
    assert [s.name for s in found.stacks] == ["ok"]
    assert found.problems[0].name == "escape" and "outside the checkout" in found.problems[0].reason


def test_startup_order_then_names(tmp_path, caplog):
    make(tmp_path, {f"s/{n}/compose.yaml": SERVICE for n in ("a", "b", "c", "d")})
    make(tmp_path, {"s/stack.yml": "startup_order: [c, ghost, a]\n"})
    found = discover(tmp_path, "s", "stack.yml")
    assert [s.name for s in found.ordered()] == ["c", "a", "b", "d"]
    assert "startup_order names 'ghost'" in caplog.text


def test_stack_yml_envs_are_strings(tmp_path):
    make(tmp_path, {"stack.yml": "envs:\n  PORT: 8080\n  DEBUG: true\n  EMPTY:\n  NAME: web\n"})
    assert load_stack_config(tmp_path / "stack.yml").envs == {"PORT": "8080", "DEBUG": "true", "EMPTY": "", "NAME": "web"}


def test_stack_yml_envs_keep_the_text_as_written(tmp_path):
    text = "envs:\n  VERSION: 1.10\n  MODE: 0755\n  FLAG: NO\n  WHEN: 2026-12-01\n  BIG: 1e3\n  NONE: ~\n  Q: '007'\n"
    make(tmp_path, {"stack.yml": text})
    assert load_stack_config(tmp_path / "stack.yml").envs == {
        "VERSION": "1.10", "MODE": "0755", "FLAG": "NO", "WHEN": "2026-12-01", "BIG": "1e3", "NONE": "", "Q": "007",
    }


def test_a_long_startup_order_is_cheap(tmp_path):
    names = [f"s{i}" for i in range(40_000)]
    make(tmp_path, {"stack.yml": "startup_order: [" + ", ".join(names) + "]\n"})
    assert len(load_stack_config(tmp_path / "stack.yml").startup_order) == 40_000


def test_missing_or_empty_stack_yml_is_fine(tmp_path):
    assert load_stack_config(tmp_path / "stack.yml").startup_order == ()
    make(tmp_path, {"stack.yml": ""})
    assert load_stack_config(tmp_path / "stack.yml").envs == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("startup_order: web\n", "stack.yml: startup_order: expected a list of stack names"),
        ("startup_order: [a, a]\n", "stack.yml: startup_order: a listed more than once"),
        ("envs: [A=1]\n", "stack.yml: envs: expected a mapping"),
        ("envs:\n  1BAD: x\n", "stack.yml: envs: '1BAD' is not a valid variable name"),
        ("envs:\n  A: {nested: map}\n", "stack.yml: envs.A: expected a string or number"),
        ("startup-order: [a]\n", "stack.yml: unknown key(s) startup-order"),
        ("- a\n- b\n", "stack.yml: expected a mapping"),
        ("envs: [unclosed\n", "stack.yml: not valid YAML"),
        ("envs:\n  A: 1\n  B: 2\n  A: 3\n", "stack.yml: A appears more than once (line 4)"),
        ("startup_order: [a]\nstartup_order: [b]\n", "stack.yml: startup_order appears more than once (line 2)"),
    ],
)
def test_invalid_stack_yml_names_file_and_key(tmp_path, text, message):
    make(tmp_path, {"stack.yml": text})
    with pytest.raises(ConfigError) as error:
        load_stack_config(tmp_path / "stack.yml")
    assert str(error.value).startswith(message)


def test_no_stack_found_is_never_silent(tmp_path, caplog):
    make(tmp_path, {
        "stacks/apps/web/compose.yaml": SERVICE,
        "stacks/apps/db/docker-compose.yml": SERVICE,
        "stacks/only-override/compose.override.yaml": SERVICE,
    })
    found = discover(tmp_path, "stacks", "stack.yml")
    assert found.stacks == [] and found.problems == []
    assert "only-override holds only a Compose override file, no compose.yaml: not a stack" in caplog.text
    assert "compose files lie deeper (stacks/apps/db, stacks/apps/web); STACK_PATH=stacks/apps would find them" in caplog.text
    caplog.clear()
    make(tmp_path / "empty", {"stacks/notes/README.md": "hi"})
    discover(tmp_path / "empty", "stacks", "stack.yml")
    assert "No stack found: no directory under STACK_PATH stacks holds a compose file" in caplog.text


def test_a_top_level_name_in_the_compose_file_is_the_project_name(tmp_path, caplog):
    make(tmp_path, {
        "stacks/media-server/compose.yaml": "name: jellyfin\n" + SERVICE,
        "stacks/other/compose.yaml": "name: jellyfin\n" + SERVICE,  # collides with the first
        "stacks/vars/compose.yaml": "name: ${PROJECT}\n" + SERVICE,
        "stacks/bad/compose.yaml": "name: Not Valid\n" + SERVICE,
        "stacks/over/compose.yaml": "name: base\n" + SERVICE,
        "stacks/over/compose.override.yaml": "name: overridden\n",
    })
    found = discover(tmp_path, "stacks", "stack.yml")
    assert sorted(s.name for s in found.stacks) == ["bad", "overridden", "vars"]
    clash = "directories media-server, other are all the Compose project jellyfin"
    assert [(p.name, p.reason) for p in found.problems] == [("jellyfin", clash)]
    assert "comes from a variable; the directory name is used" in caplog.text


def test_several_stack_paths_add_up_and_a_name_in_two_fails_both(tmp_path):
    make(tmp_path, {
        "stacks/web/compose.yaml": SERVICE,
        "stacks/db/compose.yaml": SERVICE,
        "stacks/stack.yml": "startup_order: [db]\nenvs: {A: '1'}\n",
        "apps/web/compose.yaml": SERVICE,
        "apps/media/compose.yaml": SERVICE,
        "apps/stack.yml": "envs: {B: '2'}\nstacks:\n  media:\n    envs: {C: '3'}\n",
    })
    found = discover(tmp_path, ["stacks", "apps"], "stack.yml")
    assert sorted(s.name for s in found.stacks) == ["db", "media"]
    assert [(p.name, p.reason) for p in found.problems] == [("web", "directories apps/web, stacks/web are all the Compose project web")]
    assert found.stack_config.startup_order == ("db",) and found.stack_config.envs == {"A": "1", "B": "2"}
    assert found.stack_config.settings("media").envs == {"C": "3"}
    (tmp_path / "apps" / "stack.yml").write_text("envs: {A: '9'}\n")
    with pytest.raises(ConfigError, match=r"apps/stack.yml: envs: A is given in stacks/stack.yml too"):
        discover(tmp_path, ["stacks", "apps"], "stack.yml")
