"""`composeflux update` against a real registry (Debian's docker-registry on 127.0.0.1) and the
real engine: a new image pushed under the tag a service runs is reported for exactly that
service, recorded for `status`, nothing is pulled or recreated; digest-pinned images, the
per-service label and the per-stack policy are honoured; a stopped registry gives "unknown"."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PYTHON, TEST_IMAGE, container_ids
from tests.registry import start_registry


# Tests ask for `registry` before `prefix`: fixtures are torn down in reverse, so the stacks'
# containers are gone before the registry removes the images pulled from it.
@pytest.fixture
def registry(tmp_path, docker_engine):
    with start_registry(tmp_path / "registry", tls=False, htpasswd=None) as server:
        yield server


def composeflux(cfx, *arguments, expect=0):
    result = subprocess.run(
        [PYTHON, "-m", "composeflux", "--config", str(cfx.config_file), *arguments],
        capture_output=True, text=True, timeout=120, env=cfx.env,
    )
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def service(name, image, labels=None):
    text = f"  {name}:\n    image: {image}\n    command: [\"sleep\", \"infinity\"]\n    init: true\n    stop_grace_period: 1s\n"
    if labels:
        text += "    labels:\n" + "".join(f"      {k}: {json.dumps(v)}\n" for k, v in labels.items())
    return text


def test_a_new_image_behind_a_tag_is_reported_for_exactly_that_service(registry, cfx, repo, prefix):
    first = registry.push("app", "v1")
    registry.pull("app", "v1")
    tagged = registry.image("app", "v1")
    pinned = f"{registry.host}/app@{first}"
    web, db = f"{prefix}-web", f"{prefix}-db"
    repo.write(f"{web}/compose.yaml", "services:\n" + service("app", tagged) + service("pinned", pinned)
               + service("quiet", tagged, {"composeflux.image-updates": "off"}))
    repo.write(f"{db}/compose.yaml", "services:\n" + service("app", tagged))
    repo.write("stack.yml", f"stacks:\n  {db}:\n    image_updates: \"off\"\n")
    repo.commit("stacks on the registry's image")
    cfx.sync()
    before = {**container_ids(web), **{f"db-{k}": v for k, v in container_ids(db).items()}}

    result = composeflux(cfx, "update", "--dry-run")
    assert f"up to date        {web}/app" in result.stdout

    second = registry.push("app", "v1")  # a new image behind the same tag
    assert second != first
    result = composeflux(cfx, "update", "--dry-run")
    lines = result.stdout.splitlines()
    available = [line for line in lines if line.startswith("update available")]
    assert len(available) == 1 and f"{web}/app" in available[0] and second[:19] in available[0], result.stdout
    assert any(line.startswith("skipped") and f"{web}/pinned" in line and "pinned by digest" in line for line in lines)
    assert any(line.startswith("skipped") and f"{web}/quiet" in line and "policy off" in line for line in lines)
    assert any(line.startswith("skipped") and f"{db}/app" in line and "policy off" in line for line in lines)
    assert json.loads((cfx.state / "state.json").read_text())["stacks"][web].get("updates") == {}  # a dry run records nothing

    composeflux(cfx, "update")
    record = json.loads((cfx.state / "state.json").read_text())["stacks"][web]
    assert record["updates"]["app"]["digest"] == second and record["updates"]["app"]["image"] == tagged
    status = composeflux(cfx, "status", web)
    assert "app: " in status.stdout and "has a newer image" in status.stdout
    # Nothing was pulled or recreated.
    after = {**container_ids(web), **{f"db-{k}": v for k, v in container_ids(db).items()}}
    assert after == before

    registry.stop()
    result = composeflux(cfx, "update", "--dry-run")
    assert any(line.startswith("unknown") and f"{web}/app" in line and "unreachable" in line for line in result.stdout.splitlines())


def test_apply_recreates_only_the_updated_service_and_rolls_a_broken_image_back_to_the_old_id(registry, cfx, repo, prefix):
    registry.push("app", "v1")
    registry.pull("app", "v1")
    tagged = registry.image("app", "v1")
    web = f"{prefix}-web"
    repo.write(f"{web}/compose.yaml", "services:\n" + service("app", tagged) + service("side", TEST_IMAGE))
    repo.write("stack.yml", f"stacks:\n  {web}:\n    image_updates: apply\n")
    repo.commit("a stack that takes image updates")
    cfx.settings(HEALTH_TIMEOUT=8, HEALTH_STABLE=1)
    cfx.sync()
    first = container_ids(web)
    first_image = image_of(first["app"])

    registry.push("app", "v1")  # a good new image behind the tag
    composeflux(cfx, "update")
    second = container_ids(web)
    assert second["side"] == first["side"] and second["app"] != first["app"]
    second_image = image_of(second["app"])
    assert second_image != first_image
    assert subprocess.run(["docker", "image", "inspect", first_image], capture_output=True).returncode != 0  # replaced: removed
    assert json.loads((cfx.state / "state.json").read_text())["stacks"][web]["updates"] == {}

    # A broken new image behind the tag: its healthcheck never passes.
    broken = f"FROM {TEST_IMAGE}\nHEALTHCHECK --interval=1s --retries=1 CMD false\nLABEL broken=yes\n"
    built = subprocess.run(["docker", "build", "-q", "-t", tagged, "-"], input=broken, capture_output=True, text=True, check=True)
    registry.image_ids.append(built.stdout.strip())
    subprocess.run(["docker", "push", tagged], capture_output=True, check=True, timeout=120)
    result = composeflux(cfx, "update", expect=1)
    assert "rolled back" in result.stderr
    now = container_ids(web)
    assert image_of(now["app"]) == second_image and now["side"] == first["side"]
    bad = json.loads((cfx.state / "state.json").read_text())["stacks"][web]["bad_images"]["app"]
    result = composeflux(cfx, "update", "--dry-run")
    assert "failed its health gate when it was applied" in result.stdout and bad[:19] in result.stdout
    cfx.sync()  # the revision itself is fine: a sync changes nothing
    assert container_ids(web) == now


def image_of(container_id: str) -> str:
    return subprocess.run(["docker", "inspect", "--format", "{{.Image}}", container_id], capture_output=True, text=True,
                          check=True).stdout.strip()
