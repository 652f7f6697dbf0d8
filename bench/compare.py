#!/usr/bin/python3
"""Compare composeflux with its floor (and, optionally, a peer) on one workload. Prints figures; asserts nothing.

    bench/compare.py [--stacks 50] [--repeat 3] [--jobs 4] [--big 200] [--peer harbormaster]

Builds N one-service stacks (the local test image, `sleep`, `init: true`, `stop_grace_period: 1s`,
`network_mode: none`, `pull_policy: never`) in a local bare Git repository and measures, in one run, as wall time
(the median of --repeat runs) and peak RSS of the process tree:
  - composeflux: first deploy (each repeat on a fresh state with nothing running), no-op sync,
    one changed stack, ten changed stacks, with DEPLOY_JOBS=--jobs;
  - the floor: a sequential `docker compose -p NAME -f FILE up -d` loop over the same stacks
    (first deploy), the same loop with --jobs parallel subprocesses, `git fetch` of the
    repository, one container listing (`docker ps` with a label filter, and one Engine API call
    over the Unix socket), `up -d` of one changed stack alone and of ten changed stacks in turn;
  - the read path from a fresh interpreter: composeflux's Engine API client, and the Docker SDK
    (python3-docker) when it is installed, each importing itself and listing the containers;
  - the ratios: first deploy / sequential loop, first deploy / parallel loop, the no-op, one
    changed - raw one, ten changed / raw ten;
  - with --big M (0 to skip): M stacks deployed, their no-op sync, and ms per additional stack.
--peer harbormaster instead installs docker-harbormaster into a throwaway venv and times its
first deploy and no-op on the same workload (next to composeflux's).
Everything it creates is named cfxbench-<random>-* (containers, networks, volumes, Compose
projects) or lives in a temporary directory, and is removed at the end, also after a failure
or Ctrl-C.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import IMAGE, PYTHON, REPO_ROOT, cleanup, compose_file as bench_compose_file, git, timed

TEN = 10


def compose_file(value: str) -> str:
    """bench.py's stack, with `pull_policy: never`: the test image is local (and no registry is
    reachable), and harbormaster runs `docker compose pull` before each `up`."""
    return bench_compose_file(value).replace("    init: true\n", "    init: true\n    pull_policy: never\n")


def median(runs):
    return statistics.median(t for t, _ in runs), max(m for _, m in runs)


def ensure_image() -> None:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        sys.path.insert(0, str(REPO_ROOT))
        from tests.conftest import build_test_image
        build_test_image()


class Workload:
    """The stacks in a checkout pushed to a bare repository, and the same files for the raw floor."""

    def __init__(self, work: Path, prefix: str, count: int):
        self.work, self.prefix = work, prefix
        self.remote, self.checkout, self.raw = work / "remote.git", work / "checkout", work / "raw"
        git("init", "-q", "--bare", "--initial-branch=main", str(self.remote), cwd=work)
        git("init", "-q", "--initial-branch=main", str(self.checkout), cwd=work)
        self.names: list[str] = []
        self.add(count)

    def add(self, count: int) -> list[str]:
        new = [f"{self.prefix}-s-{i:03d}" for i in range(len(self.names), len(self.names) + count)]
        for name in new:
            (self.checkout / "stacks" / name).mkdir(parents=True)
            (self.checkout / "stacks" / name / "compose.yaml").write_text(compose_file("1"))
        self.names += new
        self.push("stacks")
        return new

    def change(self, names: list[str], value: str) -> None:
        for name in names:
            (self.checkout / "stacks" / name / "compose.yaml").write_text(compose_file(value))
        self.push("change")

    def push(self, message: str) -> None:
        git("add", "-A", cwd=self.checkout)
        git("commit", "-q", "-m", message, cwd=self.checkout)
        git("push", "-q", str(self.remote), "HEAD:main", cwd=self.checkout)

    def raw_file(self, name: str, value: str = "1") -> Path:
        path = self.raw / name / "compose.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(compose_file(value))
        return path


# `python3 -m composeflux ...` that also writes its own peak RSS (KiB) at exit to the file in argv[1]:
# wait4's figure is the largest process of the tree, usually a `docker compose` child.
SELF_RSS = ("import atexit, resource, runpy, sys; out = sys.argv.pop(1); "
            "atexit.register(lambda: open(out, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); "
            "sys.argv[0] = 'composeflux'; runpy.run_module('composeflux', run_name='__main__', alter_sys=True)")


class Composeflux:
    def __init__(self, work: Path, load: Workload, jobs: int):
        self.work, self.load, self.round, self.self_peak, self.jobs = work, load, 0, 0, jobs
        (work / "tmp").mkdir(exist_ok=True)
        (work / "composeflux.conf").write_text("")
        self.rss_file = work / "composeflux.rss"
        self.command = [PYTHON, "-c", SELF_RSS, str(self.rss_file),
                        "--config", str(work / "composeflux.conf"), "sync", "--log-level", "WARNING"]
        self.fresh_state()

    def fresh_state(self) -> None:
        self.round += 1
        self.state = self.work / f"state-{self.round}"
        self.env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), "STATE_DIRECTORY": str(self.state),
                    "GIT_REPO_URL": str(self.load.remote), "STACK_PATH": "stacks", "TMPDIR": str(self.work / "tmp"),
                    "HEALTH_STABLE": "0", "METRICS_TEXTFILE": str(self.work / "composeflux.prom"),
                    "DEPLOY_JOBS": str(self.jobs)}  # the parallel floor's parallelism
        if "PYTHONPYCACHEPREFIX" in os.environ:  # a read-only checkout (bench/debian13.sh): compiled once, not every run
            self.env["PYTHONPYCACHEPREFIX"] = os.environ["PYTHONPYCACHEPREFIX"]

    def sync(self) -> tuple[float, int]:
        self.rss_file.unlink(missing_ok=True)
        figures = timed(self.command, env=self.env)
        if self.rss_file.exists():
            self.self_peak = max(self.self_peak, int(self.rss_file.read_text() or 0) // 1024)
        return figures

    def first_deploy(self) -> tuple[float, int]:
        """Nothing running and a new state directory, then one sync."""
        cleanup(f"{self.load.prefix}-s")
        shutil.rmtree(self.state, ignore_errors=True)
        self.fresh_state()
        return self.sync()


def raw_up(name: str, path: Path) -> tuple[float, int]:
    return timed(["docker", "compose", "-p", name, "-f", str(path), "up", "-d"])


def raw_loop(load: Workload, names: list[str], jobs: int, value: str = "1") -> tuple[float, int]:
    """`up -d` of each stack as project <prefix>-r-..., in turn (jobs 1) or by a pool of jobs."""
    calls = [(name.replace("-s-", "-r-"), load.raw_file(name, value)) for name in names]
    start = time.perf_counter()
    if jobs == 1:
        peaks = [raw_up(*call)[1] for call in calls]
    else:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            peaks = [rss for _, rss in pool.map(lambda call: raw_up(*call), calls)]
    return time.perf_counter() - start, max(peaks)


def engine_api_list(label: str) -> float:
    """One GET /containers/json over the Engine's Unix socket, in this process: seconds."""
    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect("/var/run/docker.sock")

    start = time.perf_counter()
    connection = Connection("localhost")
    connection.request("GET", "/containers/json?all=1&filters=" + f'{{"label":["{label}"]}}'.replace('"', "%22"))
    response = connection.getresponse()
    response.read()
    connection.close()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        sys.exit(f"compare: the Engine API answered {response.status}")
    return elapsed


def composeflux_figures(args, load: Workload, results: dict) -> Composeflux:
    cfx = Composeflux(load.work, load, args.jobs)
    results["composeflux first deploy"] = median([cfx.first_deploy() for _ in range(args.repeat)])
    results["composeflux no-op sync"] = median([cfx.sync() for _ in range(args.repeat)])
    return cfx


def run(args, prefix: str, work: Path) -> None:
    ensure_image()
    load = Workload(work, prefix, args.stacks)
    results: dict[str, tuple[float, int]] = {}
    if args.peer:
        return peer(args, prefix, work, load, results)
    cfx = composeflux_figures(args, load, results)
    one = [load.names[len(load.names) // 2]]
    ten = load.names[:TEN]
    runs = []
    for round_ in range(args.repeat):
        load.change(one, f"one-{round_}")
        runs.append(cfx.sync())
    results["composeflux one changed"] = median(runs)
    runs = []
    for round_ in range(args.repeat):
        load.change(ten, f"ten-{round_}")
        runs.append(cfx.sync())
    results[f"composeflux {len(ten)} changed"] = median(runs)

    runs = []
    for _ in range(args.repeat):
        cleanup(f"{prefix}-r")
        runs.append(raw_loop(load, load.names, 1))
    results["floor: up -d loop, sequential"] = median(runs)
    runs = []
    for _ in range(args.repeat):
        cleanup(f"{prefix}-r")
        runs.append(raw_loop(load, load.names, args.jobs))
    results[f"floor: up -d loop, {args.jobs} parallel"] = median(runs)
    results["floor: git fetch"] = median([timed(["git", "-C", str(cfx.state / "repo"), "fetch", "-q", "origin"])
                                         for _ in range(args.repeat)])
    label = "com.docker.compose.project"
    results["floor: docker ps (label filter)"] = median(
        [timed(["docker", "ps", "-a", "--filter", f"label={label}", "--format", f'{{{{.ID}}}} {{{{.Label "{label}"}}}}'])
         for _ in range(args.repeat)])
    results["floor: Engine API list (in process)"] = (statistics.median(engine_api_list(label) for _ in range(args.repeat)), 0)
    # What composeflux's own read path costs from a fresh interpreter, and the Docker SDK's
    # (python3-docker, when installed) for the same listing: why engine.py speaks the API itself.
    listing = "Client().get('/containers/json', all=1, filters={'label': ['com.docker.compose.project']})"
    results["fresh python: dockerapi import + list"] = median(
        [timed([PYTHON, "-c", f"from composeflux.dockerapi import Client; {listing}"], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
         for _ in range(args.repeat)])
    if subprocess.run([PYTHON, "-c", "import docker"], capture_output=True).returncode == 0:
        sdk = "import docker; docker.from_env(version='auto').api.containers(all=True, filters={'label': 'com.docker.compose.project'})"
        results["fresh python: Docker SDK import + list"] = median([timed([PYTHON, "-c", sdk]) for _ in range(args.repeat)])
    results["fresh python: nothing"] = median([timed([PYTHON, "-c", "pass"]) for _ in range(args.repeat)])
    results["floor: up -d, one changed"] = median([raw_loop(load, one, 1, f"raw-one-{r}") for r in range(args.repeat)])
    results[f"floor: up -d, {len(ten)} changed sequential"] = median(
        [raw_loop(load, ten, 1, f"raw-ten-{r}") for r in range(args.repeat)])
    cleanup(f"{prefix}-r")

    if args.big > len(load.names):
        small = len(load.names)
        load.add(args.big - small)
        cfx.sync()  # deploys the extra stacks
        results[f"composeflux no-op sync, {args.big} stacks"] = median([cfx.sync() for _ in range(args.repeat)])

    report(args, load, results)
    first, noop = results["composeflux first deploy"][0], results["composeflux no-op sync"][0]
    fetch_ps = results["floor: git fetch"][0] + results["floor: docker ps (label filter)"][0]
    print()
    print(f"first deploy / sequential loop        = {first / results['floor: up -d loop, sequential'][0]:6.2f}x")
    print(f"first deploy / {args.jobs}-parallel loop        = {first / results[f'floor: up -d loop, {args.jobs} parallel'][0]:6.2f}x")
    print(f"no-op sync                            = {noop:6.3f} s  ({noop / fetch_ps:.2f}x git fetch + docker ps)")
    extra = results["composeflux one changed"][0] - results["floor: up -d, one changed"][0]
    print(f"one changed - raw one                 = {extra:6.3f} s")
    ten_ratio = results[f"composeflux {len(ten)} changed"][0] / results[f"floor: up -d, {len(ten)} changed sequential"][0]
    print(f"{f'{len(ten)} changed / raw {len(ten)} sequential':<37} = {ten_ratio:6.2f}x")
    tree = max(rss for key, (_, rss) in results.items() if key.startswith("composeflux"))
    print(f"peak RSS of a composeflux sync        = {cfx.self_peak} MiB (the Python process; {tree} MiB its largest child)")
    if args.big > args.stacks:
        big = results[f"composeflux no-op sync, {args.big} stacks"][0]
        print(f"{f'no-op, {args.big} stacks':<37} = {big:6.3f} s  "
              f"({(big - noop) * 1000 / (args.big - args.stacks):.1f} ms per stack beyond {args.stacks})")


def report(args, load: Workload, results: dict) -> None:
    print(f"compare: {args.stacks} stacks, median of {args.repeat}, on {os.cpu_count()} cores")
    print(f"{'measurement':<44} {'wall s':>8} {'peak RSS MiB':>13}")
    for label, (seconds, rss) in results.items():
        print(f"{label:<44} {seconds:>8.3f} {rss or '-':>13}")


def peer(args, prefix: str, work: Path, load: Workload, results: dict) -> None:
    if args.peer != "harbormaster":
        sys.exit(f"compare: unknown peer {args.peer!r} (known: harbormaster)")
    venv = work / "venv"
    for step in (["python3", "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", "docker-harbormaster"]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"compare: cannot install harbormaster ({' '.join(step)}):\n{done.stderr[-2000:]}")
    # Harbormaster clones each app's repository into <working dir>/repos/<app id> and runs
    # `docker compose -f <compose_config> up -d` there; Compose names the project after the
    # directory of that file, here the stack's name (<prefix>-s-NNN), so the cleanup finds it.
    config = work / "harbormaster.yml"
    lines = ["config:", "  prune: false", "apps:"]
    for name in load.names:
        lines += [f"  {name}:", f"    url: file://{load.remote}", "    branch: main", "    compose_config:",
                  f"      - stacks/{name}/compose.yaml"]
    config.write_text("\n".join(lines) + "\n")
    command = [str(venv / "bin" / "harbormaster"), "run", "--config", str(config), "--working-dir"]

    def hm_first() -> tuple[float, int]:
        cleanup(f"{prefix}-s")
        hm_work = work / f"hm-{secrets.token_hex(2)}"
        hm_work.mkdir()
        hm_first.dir = hm_work
        return timed([*command, str(hm_work)])

    results["harbormaster first deploy"] = median([hm_first() for _ in range(args.repeat)])
    results["harbormaster no-op run"] = median([timed([*command, str(hm_first.dir)]) for _ in range(args.repeat)])
    cleanup(f"{prefix}-s")
    composeflux_figures(args, load, results)
    report(args, load, results)
    print()
    print(f"harbormaster / composeflux, first deploy = "
          f"{results['harbormaster first deploy'][0] / results['composeflux first deploy'][0]:5.2f}x")
    print(f"harbormaster / composeflux, no-op        = "
          f"{results['harbormaster no-op run'][0] / results['composeflux no-op sync'][0]:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4, help="DEPLOY_JOBS, and the parallelism of the floor's parallel loop")
    parser.add_argument("--big", type=int, default=200, help="stacks for the big no-op figure (0: skip)")
    parser.add_argument("--peer", choices=["harbormaster"], help="time a peer instead of the floor")
    args = parser.parse_args()
    if args.stacks < TEN:
        print(f"compare: fewer than {TEN} stacks: the 'ten changed' figures change all {args.stacks}", file=sys.stderr)
    prefix = "cfxbench-" + secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("compare: terminated"))  # so that the cleanup runs
    try:
        run(args, prefix, work)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave containers behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(prefix)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
