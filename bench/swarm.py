#!/usr/bin/python3
"""Benchmark BACKEND=swarm: a sync of N one-service Swarm stacks. Prints figures; asserts nothing.

    /usr/bin/python3 bench/swarm.py [--stacks 20] [--repeat 5]

Boots the swarm test's three-node Swarm (tests/swarm/cluster.py: Debian 13 systemd containers
with their own engines and the .deb of this checkout; needs root, a running dockerd and
tests/e2e/setup.sh's tools), pushes --stacks stacks of one service to its repository and times,
on the leader (node1), with the packaged `composeflux sync`: the first deploy (every stack new,
DEPLOY_JOBS at its default), the no-op sync (median and spread of --repeat runs, each a fresh
process, as the timer starts it) and the sync after one stack changed. Also the peak RSS of a
no-op sync process and, for scale, `git fetch` and one `docker service ls` on the same node.
Everything it makes is removed at the end (the cluster's containers and network).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Runs in the node: one command's wall time and its process's peak RSS, as JSON.
TIMED = """
import json, resource, subprocess, sys, time
start = time.monotonic()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"seconds": time.monotonic() - start, "rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "status": result.returncode, "last": (result.stdout + result.stderr).strip().splitlines()[-1:]}))
"""


def timed(node, command: str) -> dict:
    result = node.sh(f"python3 -c {shlex.quote(TIMED)} {command}", timeout=1800)
    return json.loads(result.stdout.strip().splitlines()[-1])


def stack(index: int, command: str = "3600") -> str:
    return f"services:\n  app:\n    image: cfx-swarm/busybox:latest\n    command: [\"sleep\", \"{command}\"]\n    init: true\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stacks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from tests.swarm.cluster import build_deb, start_cluster, swarm_image

    with tempfile.TemporaryDirectory(prefix="cfxbench-swarm-") as scratch:
        deb = build_deb(Path(scratch) / "dist")
        with start_cluster(deb, swarm_image(), Path(scratch) / "cluster") as cluster:
            leader = cluster.manager
            leader.write_config(HEALTH_STABLE="0")
            for index in range(args.stacks):
                cluster.repo.write(f"stacks/bench{index:03d}/compose.yaml", stack(index))
            cluster.repo.commit_and_push(f"{args.stacks} stacks")
            first = timed(leader, "composeflux sync")
            noops = [timed(leader, "composeflux sync") for _ in range(args.repeat)]
            cluster.repo.write("stacks/bench000/compose.yaml", stack(0, "3601"))
            cluster.repo.commit_and_push("one changed")
            one = timed(leader, "composeflux sync")
            fetch = timed(leader, "git -C /var/lib/composeflux/repo fetch -q origin")
            listing = timed(leader, "docker service ls -q")
            seconds = [run["seconds"] for run in noops]
            print(f"swarm of {len(cluster.nodes)} nodes (Debian 13), {args.stacks} one-service stacks, synced on the leader")
            print(f"  first deploy      {first['seconds']:7.2f} s   {first['last']}")
            print(f"  no-op sync        {statistics.median(seconds):7.2f} s   (min {min(seconds):.2f}, max {max(seconds):.2f}, "
                  f"{args.repeat} runs)   {noops[-1]['last']}")
            print(f"  one changed stack {one['seconds']:7.2f} s   {one['last']}")
            print(f"  peak RSS (no-op)  {max(run['rss_kib'] for run in noops) / 1024:7.1f} MiB")
            print(f"  floor: git fetch {fetch['seconds']:.3f} s, docker service ls {listing['seconds']:.3f} s")


if __name__ == "__main__":
    main()
