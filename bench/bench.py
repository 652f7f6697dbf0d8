#!/usr/bin/python3
"""Benchmark composeflux against its floor on the real engine. Prints figures; asserts nothing.

    bench/bench.py [--stacks 50] [--repeat 5]

Builds N one-service stacks in a local Git repository and measures, each as wall time and peak
RSS (the largest single process of the run, composeflux or a child):
  - first deploy, a no-op sync, a sync after changing one stack;
  - a dry run (`sync --dry-run`) with a warm render cache: after a warm-up dry run, which also
    checks that no stack is rendered (`docker compose config` is never called) and that every
    stack is planned as unchanged;
  - the floor: a plain `docker compose up -d` loop over the same stacks (as separate projects),
    `docker compose up -d` of one changed stack, `git fetch` alone, and listing the containers
    (`docker ps`, and one Engine API listing in a fresh Python process as composeflux does it).
Stacks use network_mode: none, so Compose creates no network for them: any number of stacks fits
in Docker's default address pools (about 30 bridge networks) on a stock engine.
Everything it creates on the engine (containers, networks, volumes, including composeflux's
<stack>_composeflux-claim volumes) is named or labelled bench-<random>-* and is removed at the
end; nothing else is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
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
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # interrupted: it ends before the cleanup starts
        process.terminate()
        process.wait()
        raise
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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))  # so that the cleanup runs
    try:
        run(args, prefix, work, names)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave containers behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(prefix)
        shutil.rmtree(work, ignore_errors=True)


FORMATS = {  # id | name | Compose project, one line per object
    "container": '{{.ID}}|{{.Names}}|{{.Label "com.docker.compose.project"}}',
    "network": '{{.ID}}|{{.Name}}|{{.Label "com.docker.compose.project"}}',
    "volume": '{{.Name}}|{{.Name}}|{{.Label "com.docker.compose.project"}}',
}


def ours(prefix: str, kind: str) -> list[str]:
    """The containers, networks or volumes of this run: named <prefix>-*, or belonging to a
    Compose project <prefix>-* (composeflux's stacks, the floor's projects, the claim volumes)."""
    listing = subprocess.run(["docker", kind, "ls", *(["-a"] if kind == "container" else []), "--format", FORMATS[kind]],
                             capture_output=True, text=True)
    found = []
    for line in listing.stdout.splitlines() if listing.returncode == 0 else []:
        ident, name, project = [*line.split("|"), "", ""][:3]
        if name.startswith(f"{prefix}-") or project.startswith(f"{prefix}-"):
            found.append(ident)
    return found


def cleanup(prefix: str) -> None:
    """Remove this run's containers, then its networks and volumes (the claim volumes too).
    First, after an interruption, the `docker compose -p <prefix>-...` that composeflux may have
    left running (it runs them in sessions of their own): they could create a container later."""
    for _ in range(30):
        running = subprocess.run(["pgrep", "-f", f"compose -p {prefix}-"], capture_output=True, text=True).stdout.split()
        if not running:
            break
        for pid in map(int, running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(1)
    for kind, remove in (("container", ["rm", "-f", "-v"]), ("network", ["rm"]), ("volume", ["rm", "-f"])):
        found = ours(prefix, kind)
        if found:
            subprocess.run(["docker", kind, *remove, *found], capture_output=True)
    left = {kind: ours(prefix, kind) for kind in ("container", "network", "volume")}
    if any(left.values()):
        print(f"bench: WARNING: left on the engine: {left}", file=sys.stderr)


def check_warm_dry_run(sync: list[str], env: dict[str, str], work: Path, stacks: int) -> None:
    """One dry run, not timed, through a `docker` that logs its arguments: the cache is warm when
    it renders nothing (no `docker compose config`) and plans every stack as unchanged."""
    shim, calls = work / "shim", work / "docker-calls"
    shim.mkdir()
    docker = shutil.which("docker", path=env["PATH"])
    (shim / "docker").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{calls}"\nexec "{docker}" "$@"\n')
    (shim / "docker").chmod(0o755)
    result = subprocess.run([*sync, "--dry-run"], env={**env, "PATH": f"{shim}:{env['PATH']}"}, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: the warm-up dry run failed:\n{result.stderr}")
    unchanged = sum(line.startswith("unchanged") for line in result.stdout.splitlines())
    renders = sum(" config" in line for line in calls.read_text().splitlines()) if calls.exists() else 0
    if renders or unchanged != stacks:
        sys.exit(f"bench: the render cache is not warm: the dry run rendered {renders} stack(s) and planned "
                 f"{unchanged} of {stacks} as unchanged:\n{result.stdout}{result.stderr}")


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

    (work / "tmp").mkdir()  # a dry run's scratch copy of the commit goes here, and with it at the end
    # HEALTH_STABLE=0: the health gate only waits for the containers to run (these have no
    # healthcheck), so the figures compare with a plain `up`; its default 10 s window is measured
    # once on its own below. The metrics are written to the benchmark's own directory, not to the
    # host's node_exporter (they are part of every sync's cost, so they are measured too).
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), "STATE_DIRECTORY": str(work / "state"),
           "GIT_REPO_URL": str(remote), "STACK_PATH": "stacks", "TMPDIR": str(work / "tmp"), "HEALTH_STABLE": "0",
           "METRICS_TEXTFILE": str(work / "composeflux.prom")}
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
    (checkout / "stacks" / changed / "compose.yaml").write_text(compose_file("default-gate"))
    git("commit", "-q", "-am", "change one", cwd=checkout)
    git("push", "-q", str(remote), "HEAD:main", cwd=checkout)
    results["one changed, default gate (10 s window)"] = timed(sync, env={**env, "HEALTH_STABLE": "10"})
    check_warm_dry_run(sync, env, work, len(names))
    results["composeflux dry run (warm cache)"] = median([timed([*sync, "--dry-run"], env=env) for _ in range(args.repeat)])

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
    api = ("from composeflux.dockerapi import Client; "
           "Client().get('/containers/json', all=1, filters={'label': ['com.docker.compose.project']})")
    results["floor: Engine API list, fresh python"] = median(
        [timed([PYTHON, "-c", api], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}) for _ in range(args.repeat)])

    print(f"composeflux benchmark: {len(names)} stacks, median of {args.repeat} where repeated, on {os.cpu_count()} cores")
    print(f"{'measurement':<40} {'wall s':>8} {'peak RSS MiB':>13}")
    for label, (seconds, rss) in results.items():
        print(f"{label:<40} {seconds:>8.3f} {rss:>13}")

    noop = results["composeflux no-op sync"][0]
    floor_cli = results["floor: git fetch"][0] + results["floor: docker ps (label filter)"][0]
    floor_api = results["floor: git fetch"][0] + results["floor: Engine API list, fresh python"][0]
    one = results["composeflux one stack changed"][0]
    dry = results["composeflux dry run (warm cache)"][0]
    one_floor = results["floor: compose up -d, one changed"][0] + noop
    print()
    print(f"no-op sync / (git fetch + docker ps)          = {noop / floor_cli:5.2f}x  (bar: 1.5 s and 3x)")
    print(f"no-op sync / (git fetch + API list in python) = {noop / floor_api:5.2f}x")
    print(f"one changed / (raw up of that stack + no-op)  = {one / one_floor:5.2f}x  (bar: 1.15x)")
    print(f"{f'dry run (warm cache), {len(names)} stacks':<45} = {dry:5.2f} s  (bar: under 2 s for 150 stacks)")
    print("Resident after the run: nothing (composeflux exits; `pgrep -f composeflux` is empty)"
          if subprocess.run(["pgrep", "-f", "-u", str(os.getuid()), "python3 -m composeflux"], capture_output=True).returncode
          else "WARNING: a composeflux process is still running")


if __name__ == "__main__":
    main()
