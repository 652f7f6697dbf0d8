"""Rendering and keyed hashing (composeflux.render, composeflux.rendered), without Docker.

`docker compose config` is replaced by ProjectCompose, which hands back a given JSON project
(as the real command prints it: bind-mount sources, build contexts and configs/secrets files are
absolute paths) and a given stderr and exit status. The Checkout is built by hand: its
object_ids are what the hashes see of the files' content.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from composeflux.checkout import Checkout
from composeflux.compose import Compose, Result
from composeflux.render import HASH_KEY_FILE, Renderer, RenderError, load_hash_key
from composeflux.rendered import RenderedStack, StackHashes
from composeflux.stacks import Stack
from tests.fakes.compose import FakeCompose

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


class ProjectCompose(Compose):
    """`docker compose config` that prints a given project (or raw stdout) and stderr."""

    def __init__(self, project=None, stderr: str = "", returncode: int = 0, stdout: str | None = None) -> None:
        self.base_env = {}
        self.docker = "docker"
        self._version = "2.99.0"
        self.stdout = json.dumps(project) if stdout is None else stdout
        self.stderr = stderr
        self.returncode = returncode
        self.calls: list[tuple[str, Path, tuple[Path, ...], dict[str, str]]] = []

    def config(self, project: str, directory: Path, files: tuple[Path, ...], env: Mapping[str, str]) -> Result:
        self.calls.append((project, directory, files, dict(env)))
        return Result(self.returncode, self.stdout, self.stderr)


@pytest.fixture
def root(tmp_path) -> Path:
    """The checkout (stacks/web is the stack; stacks/shared holds files several stacks use)."""
    path = (tmp_path / "clone").resolve()
    (path / "stacks" / "web").mkdir(parents=True)
    (path / "stacks" / "shared").mkdir(parents=True)
    return path


def stack_in(root: Path, name: str = "web") -> Stack:
    directory = root / "stacks" / name
    return Stack(name, directory, (directory / "compose.yaml",))


def base_ids() -> dict[str, str]:
    return {
        ".": "tree-root",
        "stacks": "tree-stacks",
        "stacks/web": "tree-web",
        "stacks/web/compose.yaml": "blob-compose",
        "stacks/web/nginx.conf": "blob-nginx-1",
        "stacks/web/app.ini": "blob-ini-1",
        "stacks/web/src": "tree-src-1",
        "stacks/web/src/Dockerfile": "blob-dockerfile-1",
        "stacks/shared": "tree-shared",
        "stacks/shared/x.conf": "blob-x-1",
        "stacks/shared/token.txt": "blob-token-1",
        "stacks/web-extra": "tree-web-extra",
        "stacks/web-extra/y.conf": "blob-y-1",
    }


def bind(source: Path | str, target: str = "/etc/mounted") -> dict:
    return {"type": "bind", "source": str(source), "target": target, "bind": {"create_host_path": True}}


def service(image: str = "nginx:1.27", **extra) -> dict:
    return {"image": image, "command": ["sleep", "infinity"], "networks": {"default": None}, **extra}


def project(**services) -> dict:
    return {"name": "web", "services": services, "networks": {"default": {"name": "web_default"}}}


def render(root: Path, document: dict, object_ids: dict | None = None, key: bytes = KEY, env=None, stack=None) -> RenderedStack:
    checkout = Checkout(root, "c" * 40, "subject", base_ids() if object_ids is None else object_ids)
    renderer = Renderer(ProjectCompose(document), checkout, key, env or {}, mask=lambda text: text)
    return renderer.render(stack or stack_in(root))


# -- the hash is keyed and deterministic -----------------------------------------------------------


def test_hash_depends_on_the_key(root):
    document = project(app=service(), db=service("postgres:16"))
    first, again, other = (render(root, document, key=k).hashes for k in (KEY, KEY, OTHER_KEY))
    assert first == again
    assert len(first.stack_hash) == 64 and int(first.stack_hash, 16) >= 0
    assert set(first.service_hashes) == {"app", "db"}
    assert other.stack_hash != first.stack_hash
    for name in ("app", "db"):
        assert other.service_hashes[name] != first.service_hashes[name]


def test_hash_does_not_depend_on_dict_order(root):
    document = project(
        app=service(environment={"A": "1", "B": "2"}, labels={"x": "1", "y": "2"}),
        db=service("postgres:16"),
    )
    reordered = json.loads(json.dumps(document), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert list(reordered["services"]) == ["db", "app"]  # really another order
    assert list(reordered) != list(document)
    assert render(root, document).hashes == render(root, reordered).hashes


def test_a_changed_service_changes_its_hash_and_the_stack_hash_only(root):
    before = render(root, project(app=service(), db=service("postgres:16"))).hashes
    after = render(root, project(app=service("nginx:1.28"), db=service("postgres:16"))).hashes
    assert after.service_hashes["app"] != before.service_hashes["app"]
    assert after.service_hashes["db"] == before.service_hashes["db"]
    assert after.stack_hash != before.stack_hash


def test_a_service_with_the_same_definition_in_another_project_keeps_its_hash(root):
    """The service hash covers what the service uses, not its neighbours."""
    alone = render(root, project(app=service())).hashes
    with_neighbour = render(root, project(app=service(), db=service("postgres:16"))).hashes
    assert with_neighbour.service_hashes["app"] == alone.service_hashes["app"]
    assert with_neighbour.stack_hash != alone.stack_hash


def test_a_used_top_level_resource_is_part_of_the_service_hash(root):
    def with_network(driver):
        document = project(app=service(networks={"back": None}), db=service("postgres:16"))
        document["networks"]["back"] = {"name": "web_back", "driver": driver}
        return render(root, document).hashes

    bridge, overlay = with_network("bridge"), with_network("macvlan")
    assert bridge.service_hashes["app"] != overlay.service_hashes["app"]
    assert bridge.service_hashes["db"] == overlay.service_hashes["db"]  # db does not use it


def test_a_secret_taken_from_a_variable_is_hashed_by_its_value_keyed(root):
    """The project holds only the variable's name; a new value must redeploy (and, with Swarm,
    be a new secret), without the value or a plain hash of it in the project."""
    def with_token(value):
        document = project(app=service(secrets=[{"source": "token", "target": "/run/secrets/token"}]), db=service("postgres:16"))
        document["secrets"] = {"token": {"name": "web_token", "environment": "TOKEN"}}
        return render(root, document, env={"TOKEN": value})

    first, again, other = with_token("value-one"), with_token("value-one"), with_token("value-two")
    assert first.hashes == again.hashes
    assert other.hashes.service_hashes["app"] != first.hashes.service_hashes["app"]
    assert other.hashes.service_hashes["db"] == first.hashes.service_hashes["db"]  # db does not use it
    assert "value-one" not in json.dumps(first.project)


def test_the_networks_and_volumes_a_stack_creates_and_needs_are_named(root):
    """What plan.network_order and plan.schedule order stacks by: volumes as volume:NAME."""
    document = project(app=service(networks={"back": None, "proxy": None}))
    document["networks"].update(back={"name": "web_back"}, proxy={"name": "proxy", "external": True})
    document["volumes"] = {"data": {"name": "web_data"}, "certs": {"name": "certs", "external": True}}
    hashes = render(root, document).hashes
    assert hashes.creates == ("volume:web_data", "web_back", "web_default")
    assert hashes.needs == ("proxy", "volume:certs")


# -- local files: bind mounts, configs/secrets files, build contexts -------------------------------


def test_a_tracked_bind_mounted_file_is_hashed_by_its_object_id(root):
    document = project(
        app=service(volumes=[bind(root / "stacks/web/nginx.conf", "/etc/nginx/nginx.conf")]),
        db=service("postgres:16"),
    )
    before = render(root, document).hashes
    ids = {**base_ids(), "stacks/web/nginx.conf": "blob-nginx-2"}
    after = render(root, document, ids).hashes
    assert after.service_hashes["app"] != before.service_hashes["app"]
    assert after.service_hashes["db"] == before.service_hashes["db"]
    assert after.stack_hash != before.stack_hash


def test_a_mounted_directory_is_hashed_by_its_tree_id(root):
    document = project(app=service(volumes=[bind(root / "stacks/web/src", "/src")]), db=service("postgres:16"))
    before = render(root, document).hashes
    after = render(root, document, {**base_ids(), "stacks/web/src": "tree-src-2"}).hashes
    assert after.service_hashes["app"] != before.service_hashes["app"]
    assert after.service_hashes["db"] == before.service_hashes["db"]


def test_an_untracked_mounted_path_is_not_hashed(root):
    """Runtime data a container writes into the checkout must not redeploy it on every sync."""
    data = root / "stacks/web/data"
    data.mkdir()
    (data / "db.sqlite").write_text("version 1")
    shared_runtime = root / "stacks/shared/runtime"
    document = project(app=service(volumes=[bind(data, "/data"), bind(shared_runtime, "/run/shared"), bind("/var/log", "/logs")]))
    before = render(root, document)
    (data / "db.sqlite").write_text("version 2, much later")
    shared_runtime.mkdir()
    after = render(root, document, {**base_ids(), "stacks/other/unrelated.txt": "blob-unrelated"})
    assert after.hashes == before.hashes
    assert before.hashes.dependencies == ()


def test_only_the_services_that_use_a_file_change(root):
    shared = root / "stacks/shared/x.conf"
    document = project(
        app=service(volumes=[bind(shared, "/etc/x.conf")]),
        worker=service("busybox", volumes=[bind(shared, "/x.conf")]),
        db=service("postgres:16", volumes=[bind(root / "stacks/web/nginx.conf")]),
    )
    before = render(root, document).hashes
    after = render(root, document, {**base_ids(), "stacks/shared/x.conf": "blob-x-2"}).hashes
    assert after.service_hashes["app"] != before.service_hashes["app"]
    assert after.service_hashes["worker"] != before.service_hashes["worker"]
    assert after.service_hashes["db"] == before.service_hashes["db"]
    assert after.stack_hash != before.stack_hash


def test_dependencies_are_the_tracked_files_used_from_outside_the_stack_directory(root):
    document = project(
        app=service(
            volumes=[
                bind(root / "stacks/web/nginx.conf"),  # inside: covered by the stack's own tree
                bind(root / "stacks/web/../shared/x.conf"),  # as Compose may print "../shared/x.conf"
                bind(root / "stacks/web-extra/y.conf"),  # a sibling whose name starts like ours
                bind(root / "stacks/shared/not-tracked.conf"),
                bind("/etc/hostname"),  # outside the checkout
            ]
        )
    )
    hashes = render(root, document).hashes
    assert hashes.dependencies == ("stacks/shared/x.conf", "stacks/web-extra/y.conf")


def test_dependencies_of_a_stack_at_the_top_of_the_repository(root):
    """STACK_PATH=. : the stack is web/ at the top; shared/x.conf beside it is a dependency."""
    (root / "web").mkdir()
    stack = Stack("web", root / "web", (root / "web" / "compose.yaml",))
    ids = {".": "tree-root", "web": "tree-web", "web/nginx.conf": "blob-nginx", "shared/x.conf": "blob-x", "top.conf": "blob-top"}
    document = project(app=service(volumes=[bind(root / "shared/x.conf"), bind(root / "web/nginx.conf"), bind(root / "top.conf")]))
    assert render(root, document, ids, stack=stack).hashes.dependencies == ("shared/x.conf", "top.conf")


def _configs(root, kind, path, short_form=False):
    reference = "item" if short_form else {"source": "item", "target": "/run/item"}
    document = project(app=service(**{kind: [reference]}), db=service("postgres:16"))
    document[kind] = {"item": {"name": "web_item", "file": str(root / path)}}
    return document


@pytest.mark.parametrize(
    ("make", "path", "inside"),
    [
        (lambda root: _configs(root, "configs", "stacks/web/app.ini"), "stacks/web/app.ini", True),
        (lambda root: _configs(root, "configs", "stacks/shared/x.conf", short_form=True), "stacks/shared/x.conf", False),
        (lambda root: _configs(root, "secrets", "stacks/shared/token.txt"), "stacks/shared/token.txt", False),
        (lambda root: _configs(root, "secrets", "stacks/web/app.ini", short_form=True), "stacks/web/app.ini", True),
        (
            lambda root: project(
                app=service(build={"context": str(root / "stacks/web/src"), "dockerfile": "Dockerfile"}), db=service("postgres:16")
            ),
            "stacks/web/src",
            True,
        ),
        (
            lambda root: project(app=service(build={"context": str(root / "stacks/shared")}), db=service("postgres:16")),
            "stacks/shared",
            False,
        ),
    ],
    ids=["config-file", "config-short-form", "secret-file", "secret-short-form", "build-context", "build-context-outside"],
)
def test_configs_secrets_and_build_contexts_are_hashed_like_bind_mounts(root, make, path, inside):
    document = make(root)
    before = render(root, document).hashes
    after = render(root, document, {**base_ids(), path: "changed-object"}).hashes
    assert after.service_hashes["app"] != before.service_hashes["app"]
    assert after.service_hashes["db"] == before.service_hashes["db"]
    assert after.stack_hash != before.stack_hash
    assert before.dependencies == (() if inside else (path,))


# -- scaled to zero -------------------------------------------------------------------------------


def test_a_service_scaled_to_zero_gets_no_service_hash(root):
    document = project(
        web=service(),
        off=service(scale=0),
        disabled=service(deploy={"replicas": 0}),
        two=service(deploy={"replicas": 2}),
        one=service(scale=1),
    )
    hashes = render(root, document).hashes
    assert set(hashes.service_hashes) == {"web", "two", "one"}
    # Still part of the stack: scaling a service down to zero is a change of the stack.
    document["services"]["off"]["scale"] = 1
    assert render(root, document).hashes.stack_hash != hashes.stack_hash


# -- what a render yields ---------------------------------------------------------------------------


def test_the_rendered_project_is_kept_but_never_shown(root):
    document = project(app=service(environment={"PASSWORD": "hunter2-secret"}))
    rendered = render(root, document)
    assert rendered.name == "web" and rendered.hashes.name == "web"
    assert rendered.project == document
    assert "hunter2-secret" not in repr(rendered)
    assert isinstance(rendered.hashes, StackHashes)


def test_compose_is_asked_with_the_stack_and_the_interpolation_environment(root):
    compose = ProjectCompose(project(app=service()))
    checkout = Checkout(root, "c" * 40, "subject", base_ids())
    stack = stack_in(root)
    Renderer(compose, checkout, KEY, {"TAG": "1.2"}, mask=str).render(stack)
    assert compose.calls == [("web", stack.directory, stack.compose_files, {"TAG": "1.2"})]


def test_with_the_fake_compose_a_relative_mount_and_interpolation(root):
    """End to end through FakeCompose: a relative bind source is made absolute and hashed."""
    directory = root / "stacks" / "web"
    (directory / "compose.yaml").write_text(
        "services:\n"
        "  app:\n"
        "    image: nginx:${TAG:-1.27}\n"
        "    volumes:\n"
        "      - {type: bind, source: ./nginx.conf, target: /etc/nginx/nginx.conf}\n"
        "  db:\n"
        "    image: postgres:16\n"
    )
    stack = stack_in(root)

    def hashes(env, ids=None):
        checkout = Checkout(root, "c" * 40, "subject", ids or base_ids())
        return Renderer(FakeCompose(), checkout, KEY, env, mask=str).render(stack).hashes

    base = hashes({})
    assert hashes({"TAG": "1.28"}).service_hashes["app"] != base.service_hashes["app"]
    assert hashes({"TAG": "1.28"}).service_hashes["db"] == base.service_hashes["db"]
    changed = hashes({}, {**base_ids(), "stacks/web/nginx.conf": "blob-nginx-2"})
    assert changed.service_hashes["app"] != base.service_hashes["app"]
    assert changed.service_hashes["db"] == base.service_hashes["db"]

    (directory / "compose.yaml").write_text("services:\n  app:\n    image: 'nginx:${TAG}'\n    environment: {K: '${API_KEY}'}\n")
    with pytest.raises(RenderError, match="API_KEY, TAG"):
        hashes({})


# -- render errors ------------------------------------------------------------------------------


def renderer_for(root, compose, mask=lambda text: text):
    return Renderer(compose, Checkout(root, "c" * 40, "s", base_ids()), KEY, {}, mask)


def test_a_failing_compose_config_is_a_masked_render_error(root):
    secret = "s3cr3t-Value"
    stderr = (
        'time="x" level=warning msg="The attribute `version` is obsolete"\n'
        f"services.app.environment.TOKEN: invalid value {secret!r}\n"
        f"validating compose.yaml: additional property {secret} not allowed\n"
    )
    renderer = renderer_for(root, ProjectCompose(stderr=stderr, returncode=15, stdout=""), mask=lambda t: t.replace(secret, "***"))
    with pytest.raises(RenderError) as caught:
        renderer.render(stack_in(root))
    message = str(caught.value)
    assert secret not in message
    assert message.startswith("docker compose config failed: ")
    assert "additional property *** not allowed" in message
    assert "obsolete" not in message  # warnings are not the error


def test_a_failing_compose_config_without_a_message(root):
    with pytest.raises(RenderError, match="no error message"):
        renderer_for(root, ProjectCompose(stderr="\n  \n", returncode=1, stdout="")).render(stack_in(root))


def test_unset_variables_are_a_render_error_naming_them(root):
    stderr = (
        'level=warning msg="The \\"ZED\\" variable is not set. Defaulting to a blank string."\n'
        'The "ALPHA" variable is not set. Defaulting to a blank string.\n'
    )
    compose = ProjectCompose(project(app=service()), stderr=stderr)
    with pytest.raises(RenderError) as caught:
        renderer_for(root, compose).render(stack_in(root))
    assert "ALPHA, ZED" in str(caught.value)


@pytest.mark.parametrize("stdout", ["", "services:\n  app:\n    image: nginx\n", '{"name": "web", "services": {', "not json"])
def test_output_that_is_not_json_is_a_render_error(root, stdout):
    with pytest.raises(RenderError, match="JSON"):
        renderer_for(root, ProjectCompose(stdout=stdout)).render(stack_in(root))


# -- the hash key ---------------------------------------------------------------------------------


def test_the_hash_key_is_created_once_mode_0600(tmp_path):
    state = tmp_path / "state" / "composeflux"  # does not exist yet
    key = load_hash_key(state)
    path = state / HASH_KEY_FILE
    assert isinstance(key, bytes) and len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert bytes.fromhex(path.read_text().strip()) == key
    assert load_hash_key(state) == key
    assert load_hash_key(state) == key
    assert [p.name for p in state.iterdir()] == [HASH_KEY_FILE]  # no temporary file left


def test_each_host_gets_its_own_random_key(tmp_path):
    keys = {load_hash_key(tmp_path / str(n)) for n in range(5)}
    assert len(keys) == 5
    assert b"\0" * 32 not in keys


def test_the_hash_key_is_really_used(tmp_path, root):
    """Renderers built from two hosts' keys disagree; from the same host's key they agree."""
    document = project(app=service())
    first = render(root, document, key=load_hash_key(tmp_path / "a")).hashes
    assert render(root, document, key=load_hash_key(tmp_path / "a")).hashes == first
    assert render(root, document, key=load_hash_key(tmp_path / "b")).hashes != first

