"""The `docker compose` boundary: Compose's unset-variable warning in the forms it prints it,
timeouts that end the whole process group, an engine that is gone."""

import json
import sys
import time
from pathlib import Path

import pytest

from composeflux.compose import RENDER_MEMORY, Compose, Result, engine_unreachable, unset_variables
from composeflux.errors import EngineError

PLAIN = 'The "{}" variable is not set. Defaulting to a blank string.'
LOGFMT = 'time="2024-05-01T10:00:00Z" level=warning msg="The \\"{}\\" variable is not set. Defaulting to a blank string."'


def test_plain_form():
    assert unset_variables(PLAIN.format("DB_PASSWORD")) == ["DB_PASSWORD"]
    assert unset_variables("WARN[0000] " + PLAIN.format("TAG")) == ["TAG"]


def test_logfmt_escaped_form():
    line = LOGFMT.format("API_KEY")
    assert '\\"API_KEY\\"' in line  # really the escaped form
    assert unset_variables(line) == ["API_KEY"]


def test_several_variables_sorted_each_once():
    stderr = "\n".join(
        [
            LOGFMT.format("ZETA"),
            PLAIN.format("ALPHA"),
            LOGFMT.format("ALPHA"),
            PLAIN.format("MID_1"),
            PLAIN.format("ZETA"),
        ]
    )
    assert unset_variables(stderr) == ["ALPHA", "MID_1", "ZETA"]


def test_nothing_from_unrelated_lines():
    stderr = "\n".join(
        [
            "",
            'level=warning msg="/srv/stacks/web/compose.yaml: the attribute `version` is obsolete"',
            "service \"web\" refers to undefined network front: invalid compose project",
            'The variable "X" is used here',
            "The X variable is not set",  # no quotes: not Compose's message
            'level=warning msg="Found orphan containers ([old-1]) for this project."',
        ]
    )
    assert unset_variables(stderr) == []
    assert unset_variables("") == []


def test_a_timed_out_compose_is_killed_with_its_children(tmp_path):
    """The docker front-end runs the compose plugin as a child: a timeout must end both."""
    children = tmp_path / "children"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {children}\nwait\n")
    fake.chmod(0o755)
    compose = Compose(environ={"PATH": f"{fake.parent}:/usr/bin:/bin"}, plugin_dirs=())
    result = compose._run(["-p", "web", "up", "--detach"], env={}, cwd=tmp_path, timeout=0.5, stdin="{}")
    assert result.returncode == 124 and "docker compose up did not finish within 0.5 s (killed)" in result.stderr
    child = int(children.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child), "the compose plugin outlived its timeout"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def test_an_unreachable_engine_is_recognised():
    gone = Result(1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
    assert engine_unreachable(gone)
    assert not engine_unreachable(Result(1, "", "Error response from daemon: port is already allocated"))
    assert not engine_unreachable(Result(0, "", "Cannot connect to the Docker daemon"))


def fake_docker(tmp_path: Path, script: str) -> Compose:
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(script)
    fake.chmod(0o755)
    return Compose(environ={"PATH": f"{fake.parent}:/usr/bin:/bin"}, plugin_dirs=())


def test_a_render_that_takes_too_long_is_killed(tmp_path):
    compose = fake_docker(tmp_path, "#!/bin/sh\nsleep 30\n")
    started = time.monotonic()
    result = compose.config("web", tmp_path, (tmp_path / "compose.yaml",), {}, timeout=0.5)
    assert result.returncode == 124 and "docker compose config did not finish within 0.5 s (killed)" in result.stderr
    assert time.monotonic() - started < 10


def test_a_render_runs_with_its_memory_limited(tmp_path):
    """A YAML bomb or a huge file: the render gets RENDER_MEMORY of address space, no more."""
    compose = fake_docker(tmp_path, f"#!{sys.executable}\nimport resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])\n")
    assert compose.config("web", tmp_path, (tmp_path / "compose.yaml",), {}).stdout.strip() == str(RENDER_MEMORY)


def test_a_program_over_its_memory_limit_fails_instead_of_growing(tmp_path):
    compose = fake_docker(tmp_path, f"#!{sys.executable}\nbuffer = bytearray(192 << 20)\nprint('allocated')\n")
    limited = compose._run(["config"], env={}, cwd=tmp_path, timeout=30, memory=128 << 20)
    assert limited.returncode != 0 and "MemoryError" in limited.stderr
    assert compose._run(["config"], env={}, cwd=tmp_path, timeout=30).stdout.strip() == "allocated"


def counting_docker(tmp_path: Path, version: str = "2.26.1") -> tuple[Compose, Path]:
    calls = tmp_path / "calls"
    return fake_docker(tmp_path, f"#!/bin/sh\necho \"$@\" >> {calls}\necho {version}\n"), calls


def test_the_compose_version_is_asked_once_while_compose_is_the_same(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    compose, calls = counting_docker(tmp_path)
    assert compose.version(cache=state) == "2.26.1"
    again = Compose(environ={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}, plugin_dirs=())
    assert again.version(cache=state) == "2.26.1"
    assert calls.read_text().splitlines() == ["compose version --short"]  # the second sync read the cache


def test_another_docker_or_compose_asks_again(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    counting_docker(tmp_path)[0].version(cache=state)
    compose, calls = counting_docker(tmp_path, "2.40.0")  # an upgraded file: its size or time changes
    assert compose.version(cache=state) == "2.40.0"
    assert len(calls.read_text().splitlines()) == 2


def test_a_damaged_or_unwritable_version_cache_is_only_not_used(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "compose-version.json").write_text("{not json")
    compose, calls = counting_docker(tmp_path)
    assert compose.version(cache=state) == "2.26.1"
    missing = tmp_path / "no-such-directory"
    assert counting_docker(tmp_path)[0].version(cache=missing) == "2.26.1"
    assert not missing.exists()
    assert len(calls.read_text().splitlines()) == 2


def test_compose_v1_is_refused_and_not_cached(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    compose, _ = counting_docker(tmp_path, "1.29.2")
    with pytest.raises(EngineError, match=r"Docker Compose v2 or newer is required, found 1\.29\.2"):
        compose.version(cache=state)
    assert not (state / "compose-version.json").exists()


def plugin(directory: Path, calls: Path) -> Path:
    path = directory / "docker-compose"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho \"$0 $@\" >> {calls}\necho 2.30.0\n")
    path.chmod(0o755)
    return path


def test_the_compose_plugin_is_run_directly_where_the_docker_cli_would_find_it(tmp_path):
    """Not through the docker front-end, which only looks it up and starts it."""
    calls = tmp_path / "calls"
    fake_docker(tmp_path, f"#!/bin/sh\necho \"docker $@\" >> {calls}\n")
    config = tmp_path / "docker-config"
    extra = plugin(tmp_path / "extra", calls)
    (config).mkdir()
    (config / "config.json").write_text(json.dumps({"cliPluginsExtraDirs": [str(tmp_path / "extra")]}))
    environ = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "DOCKER_CONFIG": str(config)}
    compose = Compose(environ=environ)
    assert compose.plugin_dirs[:2] == [str(config / "cli-plugins"), str(tmp_path / "extra")]
    assert compose.command == [str(extra)]  # no plugin in the config directory: the extra directory's
    assert compose.version() == "2.30.0"
    own = plugin(config / "cli-plugins", calls)  # the config directory's goes first, as for the CLI
    assert Compose(environ=environ).command == [str(own)]
    Compose(environ=environ).config("web", tmp_path, (tmp_path / "compose.yaml",), {})
    assert calls.read_text().splitlines() == [
        f"{extra} version --short",
        f"{own} -p web --project-directory {tmp_path} -f {tmp_path / 'compose.yaml'} config --format json",
    ]


def test_without_a_plugin_it_goes_through_the_docker_cli(tmp_path):
    calls = tmp_path / "calls"
    fake_docker(tmp_path, f"#!/bin/sh\necho \"docker $@\" >> {calls}\necho 2.30.0\n")
    not_executable = tmp_path / "plugins" / "docker-compose"
    not_executable.parent.mkdir()
    not_executable.write_text("#!/bin/sh\n")
    compose = Compose(environ={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}, plugin_dirs=[str(tmp_path / "plugins")])
    assert compose.plugin is None and compose.command == [str(tmp_path / "bin" / "docker"), "compose"]
    assert compose.version() == "2.30.0"
    assert calls.read_text().splitlines() == ["docker compose version --short"]


def test_the_version_fingerprint_covers_the_plugin(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    calls = tmp_path / "calls"
    fake_docker(tmp_path, "#!/bin/sh\n")
    environ = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    found = plugin(tmp_path / "plugins", calls)
    Compose(environ=environ, plugin_dirs=[str(tmp_path / "plugins")]).version(cache=state)
    Compose(environ=environ, plugin_dirs=[str(tmp_path / "plugins")]).version(cache=state)
    found.write_text(found.read_text() + "# a new build\n")
    Compose(environ=environ, plugin_dirs=[str(tmp_path / "plugins")]).version(cache=state)
    assert len(calls.read_text().splitlines()) == 2
