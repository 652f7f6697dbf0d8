"""Applying a plan (composeflux.apply): the labels on every service, and errors from Compose."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from composeflux.apply import Applier, ApplyError, labelled_project
from composeflux.compose import Compose, Result
from composeflux.deployed import (
    COMMIT,
    INSTANCE,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    SERVICE_HASH,
    STACK_HASH,
    Container,
    DeployedStack,
)
from composeflux.masking import MASK, Masker
from composeflux.rendered import RenderedStack, StackHashes
from composeflux.stacks import Stack
from tests.fakes.compose import FakeCompose

INSTANCE_ID = "0123456789abcdef"
COMMIT_NEW = "b" * 40
COMMIT_OLD = "a" * 40
OURS = (MANAGED_BY, INSTANCE, SERVICE_HASH, STACK_HASH, COMMIT)


def rendered_stack(services: dict[str, dict], service_hashes: dict[str, str], stack_hash: str = "stack-new") -> RenderedStack:
    project = {"name": "web", "services": services, "networks": {"default": {"name": "web_default"}}}
    return RenderedStack(StackHashes("web", stack_hash, service_hashes), project)


def container(service: str, service_hash: str, stack_hash: str = "stack-old", commit: str = COMMIT_OLD, n: int = 1) -> Container:
    labels = {MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: INSTANCE_ID, SERVICE_HASH: service_hash, STACK_HASH: stack_hash, COMMIT: commit}
    return Container(f"web-{service}-{n}", service, labels, "running", None)


def labels_of(project: dict[str, Any], service: str) -> dict[str, str]:
    return project["services"][service]["labels"]


# -- labelled_project ----------------------------------------------------------------------------


def test_every_service_gets_the_five_labels():
    rendered = rendered_stack(
        {"app": {"image": "nginx", "labels": {"traefik.enable": "true"}}, "db": {"image": "postgres"}},
        {"app": "hash-app", "db": "hash-db"},
    )
    project = labelled_project(rendered, None, COMMIT_NEW, INSTANCE_ID)
    assert labels_of(project, "app") == {
        "traefik.enable": "true",
        MANAGED_BY: "composeflux",
        INSTANCE: INSTANCE_ID,
        SERVICE_HASH: "hash-app",
        STACK_HASH: "stack-new",
        COMMIT: COMMIT_NEW,
    }
    assert labels_of(project, "db") == {
        MANAGED_BY: "composeflux",
        INSTANCE: INSTANCE_ID,
        SERVICE_HASH: "hash-db",
        STACK_HASH: "stack-new",
        COMMIT: COMMIT_NEW,
    }
    assert project["networks"] == rendered.project["networks"] and project["name"] == "web"
    assert project["services"]["app"]["image"] == "nginx"


def test_a_service_scaled_to_zero_is_labelled_too():
    rendered = rendered_stack({"app": {"image": "nginx"}, "off": {"image": "busybox", "scale": 0}}, {"app": "hash-app"})
    labels = labels_of(labelled_project(rendered, None, COMMIT_NEW, INSTANCE_ID), "off")
    assert set(OURS) <= set(labels)
    assert labels[MANAGED_BY] == "composeflux" and labels[INSTANCE] == INSTANCE_ID and labels[COMMIT] == COMMIT_NEW


def test_our_labels_win_over_the_projects_own():
    rendered = rendered_stack(
        {"app": {"image": "nginx", "labels": {COMMIT: "forged", INSTANCE: "someone-else", MANAGED_BY: "me"}}}, {"app": "hash-app"}
    )
    labels = labels_of(labelled_project(rendered, None, COMMIT_NEW, INSTANCE_ID), "app")
    assert (labels[COMMIT], labels[INSTANCE], labels[MANAGED_BY]) == (COMMIT_NEW, INSTANCE_ID, "composeflux")


def test_an_unchanged_service_keeps_the_labels_its_containers_carry():
    """Same labels, same configuration: Compose leaves those containers alone."""
    rendered = rendered_stack(
        {"app": {"image": "nginx"}, "db": {"image": "postgres:17"}, "new": {"image": "busybox"}},
        {"app": "hash-app", "db": "hash-db-2", "new": "hash-new"},
    )
    deployed = DeployedStack(
        "web",
        (
            container("app", "hash-app", n=1),
            container("app", "hash-app", n=2),
            container("db", "hash-db-1", stack_hash="stack-older", commit="c" * 40),
        ),
    )
    project = labelled_project(rendered, deployed, COMMIT_NEW, INSTANCE_ID)
    app, db, new = (labels_of(project, name) for name in ("app", "db", "new"))
    assert (app[SERVICE_HASH], app[STACK_HASH], app[COMMIT]) == ("hash-app", "stack-old", COMMIT_OLD)
    assert (db[SERVICE_HASH], db[STACK_HASH], db[COMMIT]) == ("hash-db-2", "stack-new", COMMIT_NEW)
    assert (new[SERVICE_HASH], new[STACK_HASH], new[COMMIT]) == ("hash-new", "stack-new", COMMIT_NEW)


def test_a_service_whose_containers_disagree_gets_the_new_labels():
    """One replica still runs an older configuration: the service is recreated, all of it."""
    rendered = rendered_stack({"app": {"image": "nginx"}}, {"app": "hash-app"})
    deployed = DeployedStack("web", (container("app", "hash-app", n=1), container("app", "hash-older", n=2)))
    labels = labels_of(labelled_project(rendered, deployed, COMMIT_NEW, INSTANCE_ID), "app")
    assert (labels[STACK_HASH], labels[COMMIT]) == ("stack-new", COMMIT_NEW)


def test_a_running_container_without_our_stack_labels_gets_the_new_ones():
    rendered = rendered_stack({"app": {"image": "nginx"}}, {"app": "hash-app"})
    bare = Container("web-app-1", "app", {SERVICE_HASH: "hash-app"}, "running", None)
    labels = labels_of(labelled_project(rendered, DeployedStack("web", (bare,)), COMMIT_NEW, INSTANCE_ID), "app")
    assert (labels[SERVICE_HASH], labels[STACK_HASH], labels[COMMIT]) == ("hash-app", "stack-new", COMMIT_NEW)


def test_a_service_without_a_hash_never_keeps_old_labels():
    """Scaled to zero (no hash): an empty hash must not match containers that carry none."""
    rendered = rendered_stack({"off": {"image": "busybox", "scale": 0}}, {})
    unlabelled = Container("web-off-1", "off", {STACK_HASH: "stack-old", COMMIT: COMMIT_OLD}, "exited", 0)
    labels = labels_of(labelled_project(rendered, DeployedStack("web", (unlabelled,)), COMMIT_NEW, INSTANCE_ID), "off")
    assert (labels[STACK_HASH], labels[COMMIT]) == ("stack-new", COMMIT_NEW)


def test_list_form_labels_are_converted_and_kept():
    rendered = rendered_stack(
        {"app": {"image": "nginx", "labels": ["a=b", "c", "url=http://x/?q=1=2", "empty="]}}, {"app": "hash-app"}
    )
    labels = labels_of(labelled_project(rendered, None, COMMIT_NEW, INSTANCE_ID), "app")
    assert isinstance(labels, dict)
    assert {key: labels[key] for key in ("a", "c", "url", "empty")} == {"a": "b", "c": "", "url": "http://x/?q=1=2", "empty": ""}
    assert set(labels) == {"a", "c", "url", "empty", *OURS}


def test_the_rendered_project_is_not_mutated():
    services = {
        "app": {"image": "nginx", "labels": {"x": "1"}, "environment": {"A": "1"}},
        "db": {"image": "postgres", "labels": ["a=b"]},
        "new": {"image": "busybox"},
    }
    rendered = rendered_stack(services, {"app": "hash-app", "db": "hash-db", "new": "hash-new"})
    before = copy.deepcopy(rendered.project)
    deployed = DeployedStack("web", (container("app", "hash-app"),))
    project = labelled_project(rendered, deployed, COMMIT_NEW, INSTANCE_ID)
    assert rendered.project == before
    assert "labels" not in rendered.project["services"]["new"]
    assert project["services"]["app"]["labels"] is not rendered.project["services"]["app"]["labels"]
    # A second call from the same render gives the same result (nothing leaked into it).
    assert labelled_project(rendered, deployed, COMMIT_NEW, INSTANCE_ID) == project


# -- Applier --------------------------------------------------------------------------------------


class RecordingCompose(Compose):
    """`up` and `down` that record their arguments and return a given result."""

    def __init__(self, result: Result | None = None) -> None:
        self.base_env = {}
        self.docker = "docker"
        self._version = "2.99.0"
        self.result = result or Result(0, "", "")
        self.ups: list[tuple] = []
        self.downs: list[tuple] = []

    def up(
        self, project: str, directory: Path, rendered: dict[str, Any], env: Mapping[str, str], remove_orphans: bool, timeout: float
    ) -> Result:
        self.ups.append((project, directory, rendered, dict(env), remove_orphans, timeout))
        return self.result

    def down(self, project: str, timeout: float) -> Result:
        self.downs.append((project, timeout))
        return self.result


SECRET = "s3cr3t-token-value"
STACK = Stack("web", Path("/srv/clone/stacks/web"), (Path("/srv/clone/stacks/web/compose.yaml"),))


ENV = {"TAG": "1.2", "TOKEN": SECRET}


def applier(compose: Compose, remove_orphans: bool = True) -> Applier:
    return Applier(compose, Masker([SECRET]), remove_orphans, 42.0)


def test_deploy_feeds_the_project_and_environment_to_compose_up():
    compose = RecordingCompose()
    project = {"name": "web", "services": {"app": {"image": "nginx"}}}
    applier(compose, remove_orphans=False).deploy(STACK.name, STACK.directory, project, ENV)
    assert compose.ups == [("web", STACK.directory, project, {"TAG": "1.2", "TOKEN": SECRET}, False, 42.0)]


def test_deploy_with_the_fake_compose():
    compose = FakeCompose()
    project = labelled_project(rendered_stack({"app": {"image": "nginx"}}, {"app": "hash-app"}), None, COMMIT_NEW, INSTANCE_ID)
    applier(compose).deploy(STACK.name, STACK.directory, project, ENV)
    assert compose.called("up") == ["web"]
    running = compose.read_engine(INSTANCE_ID).managed["web"].containers
    assert [c.service_hash for c in running] == ["hash-app"]


def test_a_failing_up_raises_the_last_stderr_lines_masked():
    compose = FakeCompose()
    compose.fail_up["web"] = "\n".join(
        [
            " Network web_default  Creating",
            "first line, not shown",
            " Container web-app-1  Creating",
            "",
            f"Error response from daemon: pull access denied for registry/{SECRET}",
            f"  token={SECRET} rejected  ",
            "Error: exit status 1",
            "   ",
        ]
    )
    with pytest.raises(ApplyError) as caught:
        applier(compose).deploy(STACK.name, STACK.directory, {"name": "web", "services": {}}, ENV)
    message = str(caught.value)
    assert SECRET not in message
    assert message == (
        f"docker compose up failed: Error response from daemon: pull access denied for registry/{MASK}; "
        f"token={MASK} rejected; Error: exit status 1"
    )
    assert "not shown" not in message and "Creating" not in message
    assert "web" not in compose.projects  # nothing recorded as deployed


def test_a_failing_up_without_stderr_names_the_exit_status():
    with pytest.raises(ApplyError, match=r"^docker compose up failed: exit status 17$"):
        applier(RecordingCompose(Result(17, f"stdout mentions {SECRET}", ""))).deploy(STACK.name, STACK.directory, {}, ENV)


def test_a_secret_in_an_escaped_form_is_masked_too():
    compose = RecordingCompose(Result(1, "", f'level=error msg="invalid value \\"{SECRET}\\""'))
    with pytest.raises(ApplyError) as caught:
        applier(compose).deploy(STACK.name, STACK.directory, {}, ENV)
    assert SECRET not in str(caught.value) and MASK in str(caught.value)


def test_prune_runs_compose_down_and_a_failure_is_masked():
    compose = RecordingCompose()
    applier(compose).prune("old")
    assert compose.downs == [("old", 42.0)]
    compose.result = Result(1, "", f"one\ntwo\nthree {SECRET}\nfour")
    with pytest.raises(ApplyError) as caught:
        applier(compose).prune("old")
    assert str(caught.value) == f"docker compose down failed: two; three {MASK}; four"
