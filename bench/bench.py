#!/usr/bin/python3
"""Benchmark composeflux against its floor on the real engine. Prints figures; asserts nothing.

    bench/bench.py [--stacks 50] [--repeat 5]

Builds N one-service stacks in a local Git repository and measures, each as wall time and peak
RSS (the largest single process of the run, composeflux or a child):
  - first deploy, a no-op sync, a sync after changing one stack;
  - the floor: a plain `docker compose up -d` loop over the same stacks (as separate projects),
    `docker compose up -d` of one changed stack, `git fetch` alone, and listing the containers
    (`docker ps`, and the Docker SDK in a fresh Python process as composeflux does it).
Stacks use network_mode: none so that 50 of them do not exhaust Docker's default address pools.
Everything it creates is named bench-<random>-* and is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = "composeflux-test/busybox:latest"
PYTHON = "/usr/bin/python3"


def timed(command, cwd=None, env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of the largest process in the command's tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, command))} failed:\n{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss // 1024


def compose_file(value: str) -> str:
    return (
        "services:\n  app:\n"
        f"    image: {IMAGE}\n"
        '    command: ["sleep", "infinity"]\n'
        "    init: true\n    network_mode: none\n    stop_grace_period: 1s\n"
        f"    environment:\n      VALUE: \"{value}\"\n"
    )


def git(*arguments, cwd):
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b.invalid",
                        "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b.invalid"})


def median(runs):
    return statistics.median(t for t, _ in runs), max(m for _, m in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    prefix = "bench-" + secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="composeflux-bench-"))
    names = [f"{prefix}-{i:03d}" for i in range(args.stacks)]
    try:
        run(args, prefix, work, names)
    finally:
        for name in names + [f"{n}-raw" for n in names]:
            subprocess.run(["docker", "compose", "-p", name, "down", "-t", "1"], cwd="/", capture_output=True)
        # The volumes composeflux claims each stack's name with (everything here starts with the prefix).
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name={prefix}"], capture_output=True, text=True)
        ours = [volume for volume in volumes.stdout.split() if volume.startswith(prefix)]
        if ours:
            subprocess.run(["docker", "volume", "rm", *ours], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def run(args, prefix: str, work: Path, names: list[str]) -> None:
    remote, checkout, raw = work / "remote.git", work / "checkout", work / "raw"
    git("init", "-q", "--bare", "--initial-branch=main", str(remote), cwd=work)
    git("init", "-q", "--initial-branch=main", str(checkout), cwd=work)
    for name in names:
        (checkout / "stacks" / name).mkdir(parents=True)
        (checkout / "stacks" / name / "compose.yaml").write_text(compose_file("1"))
        (raw / name).mkdir(parents=True)
        (raw / name / "compose.yaml").write_text(compose_file("1"))
    git("add", "-A", cwd=checkout)
    git("commit", "-q", "-m", "stacks", cwd=checkout)
    git("push", "-q", str(remote), "HEAD:main", cwd=checkout)

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), "STATE_DIRECTORY": str(work / "state"),
           "GIT_REPO_URL": str(remote), "STACK_PATH": "stacks"}
    config = work / "composeflux.conf"
    config.write_text("")
    sync = [PYTHON, "-m", "composeflux", "--config", str(config), "sync", "--log-level", "WARNING"]

    results = {}
    results["composeflux first deploy"] = timed(sync, env=env)
    results["composeflux no-op sync"] = median([timed(sync, env=env) for _ in range(args.repeat)])
    changed = names[len(names) // 2]
    changes = []
    for round_ in range(args.repeat):
        (checkout / "stacks" / changed / "compose.yaml").write_text(compose_file(f"change-{round_}"))
        git("commit", "-q", "-am", "change one", cwd=checkout)
        git("push", "-q", str(remote), "HEAD:main", cwd=checkout)
        changes.append(timed(sync, env=env))
    results["composeflux one stack changed"] = median(changes)

    def raw_up(name):
        return timed(["docker", "compose", "-p", f"{name}-raw", "up", "-d"], cwd=raw / name)

    start = time.perf_counter()
    peak = max(raw_up(name)[1] for name in names)
    results["floor: compose up -d loop, first"] = (time.perf_counter() - start, peak)
    start = time.perf_counter()
    peak = max(raw_up(name)[1] for name in names)
    results["floor: compose up -d loop, no-op"] = (time.perf_counter() - start, peak)
    raw_changes = []
    for round_ in range(args.repeat):
        (raw / changed / "compose.yaml").write_text(compose_file(f"raw-{round_}"))
        raw_changes.append(raw_up(changed))
    results["floor: compose up -d, one changed"] = median(raw_changes)
    results["floor: git fetch"] = median([timed(["git", "-C", str(work / "state" / "repo"), "fetch", "-q", "origin"])
                                         for _ in range(args.repeat)])
    results["floor: docker ps (label filter)"] = median(
        [timed(["docker", "ps", "-a", "-q", "--filter", "label=compose.stack.managed-by=composeflux"])
         for _ in range(args.repeat)])
    sdk = "import docker; docker.from_env(version='auto').api.containers(all=True, filters={'label': 'com.docker.compose.project'})"
    results["floor: Docker SDK list, fresh python"] = median([timed([PYTHON, "-c", sdk]) for _ in range(args.repeat)])

    print(f"composeflux benchmark: {len(names)} stacks, median of {args.repeat} where repeated, on {os.cpu_count()} cores")
    print(f"{'measurement':<40} {'wall s':>8} {'peak RSS MiB':>13}")
    for label, (seconds, rss) in results.items():
        print(f"{label:<40} {seconds:>8.3f} {rss:>13}")

    noop = results["composeflux no-op sync"][0]
    floor_cli = results["floor: git fetch"][0] + results["floor: docker ps (label filter)"][0]
    floor_sdk = results["floor: git fetch"][0] + results["floor: Docker SDK list, fresh python"][0]
    one = results["composeflux one stack changed"][0]
    one_floor = results["floor: compose up -d, one changed"][0] + noop
    print()
    print(f"no-op sync / (git fetch + docker ps)          = {noop / floor_cli:5.2f}x  (bar: 1.5 s and 3x)")
    print(f"no-op sync / (git fetch + SDK list in python) = {noop / floor_sdk:5.2f}x")
    print(f"one changed / (raw up of that stack + no-op)  = {one / one_floor:5.2f}x  (bar: 1.15x)")
    print("Resident after the run: nothing (composeflux exits; `pgrep -f composeflux` is empty)"
          if subprocess.run(["pgrep", "-f", "-u", str(os.getuid()), "python3 -m composeflux"], capture_output=True).returncode
          else "WARNING: a composeflux process is still running")


if __name__ == "__main__":
    main()
