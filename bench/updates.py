#!/usr/bin/python3
"""Benchmark composeflux.registry: the cost of finding out which tags moved. Prints figures; asserts nothing.

    /usr/bin/python3 bench/updates.py [--images 10] [--services 50] [--repeat 5]

Starts Debian's docker-registry on 127.0.0.1 (tests/registry.py), anonymous over plain http,
pushes --images distinct images to it with the real `docker push`, and times Registry.check()
over --services references spread over those images (as that many services would name them,
with and without :latest), each run with a fresh Registry, as each `composeflux update`
starts with one. Printed: the median wall time, the requests made (one HEAD per distinct image,
plus the https attempt dockerd's rules give an insecure registry first) and the process's peak
RSS. The same again against a registry with htpasswd over TLS (one more request: the first
HEAD meets the 401). Needs the Docker engine and the local test image (built if missing);
everything it pushes is removed at the end, and so are the registries.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(label: str, server, images: int, services: int, repeat: int, make_registry) -> None:
    from composeflux.registry import parse_reference

    names = [f"bench/app{index}" for index in range(images)]
    for name in names:
        server.push(name, "latest")
    # Service i uses image i % images, with or without its :latest (one reference once parsed).
    texts = [f"{server.host}/{names[index % images]}" + (":latest" if index % 2 else "") for index in range(services)]
    times, made = [], []
    for _ in range(repeat):
        registry = make_registry(server)
        start = time.perf_counter()
        references = [parse_reference(text) for text in texts]
        results = registry.check(references)
        times.append(time.perf_counter() - start)
        made.append(registry.requests_made)
        problems = [remote.problem for remote in results.values() if remote.problem]
        if problems:
            sys.exit(f"bench: {label}: {problems[0]}")
    print(
        f"{label}: {services} references over {len(results)} images: median {statistics.median(times) * 1000:.1f} ms "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}; {repeat} runs), "
        f"{made[0]} requests per check, peak RSS {peak_rss_mib():.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()

    from tests.registry import TEST_IMAGE, start_registry

    if subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True).returncode != 0:
        from tests.conftest import build_test_image

        build_test_image()
    before = peak_rss_mib()
    start = time.perf_counter()
    from composeflux.registry import Registry

    print(f"import composeflux.registry: {(time.perf_counter() - start) * 1000:.0f} ms; peak RSS before the checks {before:.0f} MiB")
    with tempfile.TemporaryDirectory(prefix="cfx-bench-updates-") as directory:
        with start_registry(Path(directory), tls=False, htpasswd=None) as server:
            measure(
                "anonymous, plain http", server, arguments.images, arguments.services, arguments.repeat,
                lambda s: Registry(None, insecure=("127.0.0.0/8",)),
            )
        with start_registry(Path(directory), tls=True, htpasswd=("bench", "bench-password")) as server:
            measure(
                "htpasswd over TLS", server, arguments.images, arguments.services, arguments.repeat,
                lambda s: Registry(s.docker_config, ca_bundle=str(s.ca_file)),
            )


if __name__ == "__main__":
    main()
