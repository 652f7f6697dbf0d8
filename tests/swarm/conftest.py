"""Fixtures of the multi-node Swarm tests: a real three-node swarm (tests/swarm/cluster.py).

Needs root, a running dockerd, debootstrap, dpkg-buildpackage and busybox-static
(tests/e2e/setup.sh) and the Debian registry for the first build of the images; every test here
is skipped when any is missing (and fails in CI, env CI set), or with COMPOSEFLUX_SWARM=0.
COMPOSEFLUX_SWARM_KEEP=1 keeps the cluster for a post-mortem (its containers are named
cfx-swarm-<random8>-node1..3; a later run leaves kept clusters alone).
    /usr/bin/python3 -m pytest tests/swarm -v
One cluster per test module: the tests of a module run in order and share it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.swarm import cluster as harness
from tests.swarm.cluster import Cluster

HERE = Path(__file__).resolve().parent
MISSING = harness.missing()
# On a developer machine a missing prerequisite skips the tests (and says which); in CI the same gap fails them.
IN_CI = bool(os.environ.get("CI")) and os.environ.get("COMPOSEFLUX_SWARM") != "0"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The e2e marker for every test under tests/swarm; off CI, a skip that says what is missing."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            if MISSING is not None and not IN_CI:
                item.add_marker(pytest.mark.skip(reason=f"swarm test: {MISSING}"))


@pytest.fixture(autouse=True, scope="session")
def _swarm_prerequisites() -> None:
    if MISSING is not None:
        pytest.fail(f"swarm test cannot run in CI: {MISSING}")


@pytest.fixture(scope="session")
def swarm_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb built from this checkout (packaging/build-deb.sh)."""
    return harness.build_deb(tmp_path_factory.mktemp("swarm-dist"))


@pytest.fixture(scope="session")
def swarm_image() -> str:
    """cfx-swarm-trixie:<key>: the e2e image with the package's dependencies (built once, cached)."""
    return harness.swarm_image()


@pytest.fixture(scope="module")
def cluster(swarm_deb: Path, swarm_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three booted nodes with the .deb installed: node1 the swarm's manager (and leader), node2 and
    node3 workers, all Ready; node1's composeflux.conf points at the repository (BACKEND=swarm)."""
    with harness.start_cluster(swarm_deb, swarm_image, tmp_path_factory.mktemp("swarm")) as started:
        print(f"\nswarm {started.prefix}: " + ", ".join(f"{what} after {seconds:.1f} s" for what, seconds in started.timings.items()))
        yield started
