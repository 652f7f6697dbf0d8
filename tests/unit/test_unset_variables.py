"""Unset variables (issue 9): a stack fails only when a variable without a value reaches the project.

Compose warns about every `${VAR}` without a value in the files, also in a service of an inactive
profile or an `extends` variant that nothing extends. composeflux renders once more with a unique
made-up value (a sentinel, `cfx-unset-<random hex>-NAME`) for each warned name, and fails the
stack only for the names whose sentinel shows up. The first render is what is hashed and deployed.

`docker compose config` is replaced by ScriptedCompose: a function of the environment it is given
that answers as Compose does in each case (as observed with Compose 2.26).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from composeflux.checkout import Checkout
from composeflux.compose import (
    SENTINEL_PREFIX,
    Compose,
    Result,
    numeric_sentinels,
    revealed,
    unset_sentinels,
    unset_variables,
)
from composeflux.render import Renderer, RenderError
from composeflux.stacks import Stack

KEY = b"k" * 32
SENTINEL = re.compile(r"cfx-unset-[0-9a-f]{16}-(\w+)")
MESSAGE = "used without a value or default (define them in stack.yml envs, the secrets provider or the stack's .env)"


def warning(name: str) -> str:
    return f'time="2024-05-01T10:00:00Z" level=warning msg="The \\"{name}\\" variable is not set. Defaulting to a blank string."'


def warnings(env: Mapping[str, str], *names: str) -> str:
    """Compose's warnings for those of `names` that `env` does not set."""
    return "\n".join(warning(name) for name in names if name not in env)


class ScriptedCompose(Compose):
    """`docker compose config` answering with `script(env)`; every call's environment is kept."""

    def __init__(self, script: Callable[[dict[str, str]], Result]) -> None:
        self.base_env = {}
        self.docker = "docker"
        self._version = "2.99.0"
        self.script = script
        self.envs: list[dict[str, str]] = []

    def config(self, project: str, directory: Path, files: tuple[Path, ...], env: Mapping[str, str], timeout: float = 60) -> Result:
        self.envs.append(dict(env))
        return self.script(dict(env))


def service(**extra) -> dict:
    return {"image": "nginx:1.27", "command": ["sleep", "infinity"], "networks": {"default": None}, **extra}


def project(**services) -> dict:
    return {"name": "web", "services": services, "networks": {"default": {"name": "web_default"}}}


def ok(document: dict, stderr: str = "") -> Result:
    return Result(0, json.dumps(document, indent=2), stderr)


@pytest.fixture
def root(tmp_path) -> Path:
    path = (tmp_path / "clone").resolve()
    (path / "stacks" / "web").mkdir(parents=True)
    return path


def renderer(root: Path, compose: Compose, env: Mapping[str, str] | None = None, mask=lambda text: text) -> Renderer:
    checkout = Checkout(root, "c" * 40, "subject", {"stacks/web/compose.yaml": "blob"})
    return Renderer(compose, checkout, KEY, env or {}, mask)


def stack(root: Path) -> Stack:
    directory = root / "stacks" / "web"
    return Stack("web", directory, (directory / "compose.yaml",))


def render(root: Path, script: Callable[[dict[str, str]], Result], env: Mapping[str, str] | None = None):
    compose = ScriptedCompose(script)
    return renderer(root, compose, env).render(stack(root)), compose


def failure(root: Path, script: Callable[[dict[str, str]], Result], env: Mapping[str, str] | None = None):
    compose = ScriptedCompose(script)
    with pytest.raises(RenderError) as caught:
        renderer(root, compose, env).render(stack(root))
    message = str(caught.value)
    assert SENTINEL_PREFIX not in message  # a made-up value is never quoted
    return message, compose


def made_up(env: Mapping[str, str]) -> dict[str, str]:
    """The sentinels in an environment a render was given: name -> value."""
    return {name: value for name, value in env.items() if SENTINEL.fullmatch(value)}


# -- the repros: warned about, but not in what is deployed -------------------------------------


def test_a_variable_of_an_extends_variant_nobody_uses_does_not_fail_the_stack(root):
    """`app: {extends: {file: variants.yml, service: plain}}`; variants.yml also has
    `fancy: {labels: {host: "${HOST}"}}`: Compose warns about HOST, fancy is not in the project."""
    document = project(app=service())
    rendered, compose = render(root, lambda env: ok(document, warnings(env, "HOST")))
    assert rendered.project == document
    assert len(compose.envs) == 2  # the render, then one with a sentinel for HOST
    assert "HOST" not in compose.envs[0]
    assert SENTINEL.fullmatch(compose.envs[1]["HOST"]).group(1) == "HOST"


def test_a_variable_of_an_inactive_profile_does_not_fail_the_stack(root):
    """`debug: {profiles: [debug], environment: {TOKEN: "${DEBUG_TOKEN}"}}` next to `app`."""
    document = project(app=service())
    rendered, compose = render(root, lambda env: ok(document, warnings(env, "DEBUG_TOKEN")))
    assert set(rendered.project["services"]) == {"app"}
    assert set(made_up(compose.envs[1])) == {"DEBUG_TOKEN"}


def test_what_is_hashed_and_deployed_is_the_first_render(root):
    """Blank values in parts that are not deployed do not matter; the render with sentinels is
    never what comes out, even where it differs in bytes (here: its layout)."""
    document = project(app=service(environment={"A": "1"}))

    def script(env):
        if "HOST" in env:
            return Result(0, json.dumps(document, separators=(",", ":")), "")
        return ok(document, warning("HOST"))

    rendered, _ = render(root, script)
    clean, _ = render(root, lambda env: ok(document))  # the same project, nothing warned
    assert rendered.project == document
    assert rendered.hashes == clean.hashes
    assert SENTINEL_PREFIX not in json.dumps(rendered.project)


def test_a_variable_used_by_a_deployed_service_fails_naming_it(root):
    """`environment: {X: "${NOT_SET}"}` in an active service."""

    def script(env):
        return ok(project(app=service(environment={"X": env.get("NOT_SET", "")})), warnings(env, "NOT_SET"))

    message, compose = failure(root, script)
    assert message == f"variable(s) NOT_SET {MESSAGE}"  # the wording of before
    assert len(compose.envs) == 2


def test_a_defaulted_variable_needs_no_second_render(root):
    """`${X:-d}`: Compose interpolates the default and warns about nothing."""
    document = project(app=service(environment={"X": "d"}))
    rendered, compose = render(root, lambda env: ok(document))
    assert rendered.project == document
    assert len(compose.envs) == 1  # the cost of the check is paid only when Compose warned


def test_only_the_used_ones_are_named_sorted(root):
    def script(env):
        environment = {"Z": env.get("ZED", ""), "A": env.get("ALPHA", "")}
        return ok(project(app=service(environment=environment)), warnings(env, "ZED", "HOST", "ALPHA", "DEBUG_TOKEN"))

    message, compose = failure(root, script)
    assert message.startswith("variable(s) ALPHA, ZED used without a value or default")
    assert set(made_up(compose.envs[1])) == {"ALPHA", "DEBUG_TOKEN", "HOST", "ZED"}


@pytest.mark.parametrize(
    "where",
    [
        lambda value: {"image": f"registry.example/{value}/app:1"},  # part of a longer string
        lambda value: {"labels": {"host": value.upper()}},  # whatever Compose does to the case
        lambda value: {"volumes": [{"type": "bind", "source": f"/srv/{value}", "target": "/data"}]},
        lambda value: {"environment": {value: "1"}},  # a key
    ],
)
def test_a_sentinel_is_found_anywhere_in_the_project(root, where):
    def script(env):
        extra = where(env["SOMEWHERE"]) if "SOMEWHERE" in env else {}
        document = project(app=service(**extra))
        document["x-ignored"] = {"note": "even in an extension field"}
        return ok(document, warnings(env, "SOMEWHERE"))

    message, _ = failure(root, script)
    assert message.startswith("variable(s) SOMEWHERE used")


def test_a_top_level_resource_counts_too(root):
    def script(env):
        document = project(app=service())
        document["volumes"] = {"data": {"name": env.get("VOLUME_NAME", "")}}
        return ok(document, warnings(env, "VOLUME_NAME"))

    message, _ = failure(root, script)
    assert "VOLUME_NAME" in message


# -- when the sentinels cannot tell: it fails, as before -----------------------------------------


def test_a_variable_that_changes_the_shape_of_the_project_fails(root):
    """`profiles: ["${PROF}"]`: a blank profile is active, a sentinel one is not; no sentinel
    shows, but the project differs, so PROF is not known to be unused."""

    def script(env):
        services = {"app": service()}
        if "PROF" not in env:
            services["dbg"] = service(profiles=[""])
        return ok(project(**services), warnings(env, "PROF", "HOST"))

    message, _ = failure(root, script)
    assert message.startswith("variable(s) HOST, PROF used without a value or default")


def test_a_compose_that_still_warns_with_the_sentinels_fails_them(root):
    """If Compose did not see the values, nothing is proven."""
    message, _ = failure(root, lambda env: ok(project(app=service()), warning("HOST") + "\n" + warning("OTHER")))
    assert message.startswith("variable(s) HOST, OTHER used")


def test_the_clis_own_variables_get_no_sentinel_and_count_as_used(root):
    """DOCKER_*, COMPOSE_*, HOME...: a made-up value would change how the docker CLI works."""
    names = ("COMPOSE_PROFILES", "DOCKER_HOST", "HOME", "HOST")
    message, compose = failure(root, lambda env: ok(project(app=service()), warnings(env, *names)))
    assert message.startswith("variable(s) COMPOSE_PROFILES, DOCKER_HOST, HOME used")
    assert set(made_up(compose.envs[1])) == {"HOST"}
    assert not {"COMPOSE_PROFILES", "DOCKER_HOST", "HOME"} & set(compose.envs[1])


def test_a_render_with_sentinels_that_fails_without_naming_one_fails_all(root):
    def script(env):
        if "HOST" in env:
            return Result(15, "", "validating compose.yaml: services.app.something must be a number")
        return ok(project(app=service()), warnings(env, "HOST", "OTHER"))

    message, compose = failure(root, script)
    assert message.startswith("variable(s) HOST, OTHER used")
    assert "must be a number" not in message  # the sentinel render's error is never quoted
    assert len(compose.envs) == 2


def test_a_port_of_an_inactive_service_is_tried_with_a_number(root):
    """Compose validates `ports: ["${DEBUG_PORT}:9229"]` even in an inactive profile: a text
    sentinel is rejected (`Invalid hostPort: ...`), a number is not, and does not show."""
    document = project(app=service())

    def script(env):
        port = env.get("DEBUG_PORT", "")
        if port and not port.isdigit():
            return Result(15, "", warnings(env, "HOST") + f"\nInvalid hostPort: {port}")
        return ok(document, warnings(env, "DEBUG_PORT", "HOST"))

    rendered, compose = render(root, script)
    assert rendered.project == document
    assert len(compose.envs) == 3
    assert SENTINEL.fullmatch(compose.envs[1]["DEBUG_PORT"])
    assert 10000 <= int(compose.envs[2]["DEBUG_PORT"]) <= 65535
    assert compose.envs[2]["HOST"] == compose.envs[1]["HOST"]


def test_a_port_that_is_deployed_fails_naming_it(root):
    def script(env):
        port = env.get("PORT", "")
        if port and not port.isdigit():
            return Result(15, "", f"Invalid hostPort: {port}")
        published = {"published": port} if port else {}
        return ok(project(app=service(ports=[{"mode": "ingress", "target": 80, **published, "protocol": "tcp"}])), warnings(env, "PORT"))

    message, compose = failure(root, script)
    assert message.startswith("variable(s) PORT used")
    assert compose.envs[2]["PORT"] not in message


def test_a_number_compose_rejects_too_fails_naming_it(root):
    """`stop_grace_period: ${GRACE}` where the blank passes: neither text nor number does."""

    def script(env):
        if "GRACE" in env:
            return Result(15, "", f'time: invalid duration "{env["GRACE"]}"')
        return ok(project(app=service()), warnings(env, "GRACE"))

    message, compose = failure(root, script)
    assert message.startswith("variable(s) GRACE used")
    assert len(compose.envs) == 3


# -- a render that fails because of a blank --------------------------------------------------------


def data_dir_script(secret: str = "") -> Callable[[dict[str, str]], Result]:
    """`volumes: ["${DATA_DIR}:/data"]` as Compose 2.26 answers it, plus an unused DEBUG_TOKEN."""

    def script(env):
        stderr = warnings(env, "DATA_DIR", "DEBUG_TOKEN")
        if "DATA_DIR" not in env:
            return Result(15, "", f"{stderr}\ninvalid spec: :/data: empty section between colons{secret}")
        return Result(15, "", f'{stderr}\nservice "app" refers to undefined volume {env["DATA_DIR"]}: invalid compose project')

    return script


def test_a_render_that_fails_on_a_blank_names_the_variable(root):
    message, compose = failure(root, data_dir_script())
    assert message == (
        f"variable(s) DATA_DIR {MESSAGE}; docker compose config failed: invalid spec: :/data: empty section between colons"
    )
    assert len(compose.envs) == 2


def test_compose_s_error_after_the_names_is_still_masked(root):
    secret = " s3cr3t-Value"
    compose = ScriptedCompose(data_dir_script(secret))
    with pytest.raises(RenderError) as caught:
        renderer(root, compose, mask=lambda text: text.replace(secret, " ***")).render(stack(root))
    assert str(caught.value).endswith("docker compose config failed: invalid spec: :/data: empty section between colons ***")
    assert "s3cr3t" not in str(caught.value)


def test_a_failure_that_is_not_the_blanks_doing_names_no_variable(root):
    """A syntax error in a file that also has `${DEBUG_TOKEN}` in an inactive profile: the render
    with sentinels fails the same way, so the message is Compose's alone, as before."""

    def script(env):
        return Result(15, "", warnings(env, "DEBUG_TOKEN") + "\nyaml: line 3: did not find expected key")

    message, compose = failure(root, script)
    assert message == "docker compose config failed: yaml: line 3: did not find expected key"
    assert len(compose.envs) == 2


def test_a_failure_that_values_cure_names_all_warned(root):
    def script(env):
        if "A" in env and "B" in env:
            return ok(project(app=service()))
        return Result(15, "", warnings(env, "A", "B") + "\ninvalid spec: empty")

    message, _ = failure(root, script)
    assert message.startswith("variable(s) A, B used without a value or default")
    assert message.endswith("; docker compose config failed: invalid spec: empty")


def test_a_failure_without_warnings_is_rendered_once(root):
    message, compose = failure(root, lambda env: Result(15, "", "yaml: line 3: did not find expected key"))
    assert message == "docker compose config failed: yaml: line 3: did not find expected key"
    assert len(compose.envs) == 1


# -- sentinels: unique, never deployed, never logged -----------------------------------------------


def test_sentinels_are_unique_per_name_and_per_render(root):
    document = project(app=service())
    _, compose = render(root, lambda env: ok(document, warnings(env, "HOST", "host")))
    _, again = render(root, lambda env: ok(document, warnings(env, "HOST", "host")))
    first, second = made_up(compose.envs[1]), made_up(again.envs[1])
    assert set(first) == {"HOST", "host"}
    assert first["HOST"].lower() != first["host"].lower()  # found regardless of case, still apart
    assert not set(first.values()) & set(second.values())


def test_the_interpolation_environment_is_kept_in_the_second_render(root):
    document = project(app=service())
    _, compose = render(root, lambda env: ok(document, warnings(env, "HOST")), env={"TOKEN": "value-1"})
    assert compose.envs[0] == {"TOKEN": "value-1"}
    assert compose.envs[1]["TOKEN"] == "value-1"


def test_no_sentinel_is_logged(root, caplog):
    caplog.set_level(logging.DEBUG)
    document = project(app=service())
    render(root, lambda env: ok(document, warnings(env, "HOST")))
    failure(root, data_dir_script())
    failure(root, lambda env: ok(project(app=service(environment={"X": env.get("X", "")})), warnings(env, "X")))
    assert "HOST" in caplog.text  # said at debug level, by name
    assert SENTINEL_PREFIX not in caplog.text


# -- compose.py's helpers ------------------------------------------------------------------------


def test_unset_sentinels():
    values = unset_sentinels(["HOST", "DOCKER_TAG", "COMPOSE_FILE", "HOME", "XDG_CONFIG_HOME", "BUILDKIT_PROGRESS", "MY_HOME"])
    assert set(values) == {"HOST", "MY_HOME"}
    assert SENTINEL.fullmatch(values["HOST"]).group(1) == "HOST"


def test_numeric_sentinels_are_distinct_ports():
    values = numeric_sentinels({f"V{n}" for n in range(50)})
    assert len(set(values.values())) == 50
    assert all(10000 <= int(value) <= 65535 for value in values.values())


def test_revealed():
    sentinels = {"A": "cfx-unset-0123456789abcdef-A", "P": "43817"}
    assert revealed('{"x": "CFX-UNSET-0123456789ABCDEF-A/y"}', sentinels) == {"A"}
    assert revealed('{"published": "43817"}', sentinels) == {"P"}
    assert revealed('{"published": 43817}', sentinels) == {"P"}
    assert revealed('{"size": "438170", "n": 143817}', sentinels) == set()
    assert revealed("", sentinels) == set()


def test_the_warning_is_still_read_as_before():
    assert unset_variables(warning("B") + "\n" + warning("A") + "\n" + warning("B")) == ["A", "B"]
