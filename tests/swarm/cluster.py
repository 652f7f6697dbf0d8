"""A real three-node Docker Swarm of Debian 13 systems booted with systemd in containers.

Each node is a container of the end-to-end test's image (tests/e2e/build-rootfs.sh) booted the
same way (tests/e2e/test_systemd.py BOOT_FLAGS), on a user-defined bridge network of its own,
with a nested Docker engine and the .deb built from this checkout installed. node1 initialises
the swarm, node2 and node3 join as workers. The nodes sync from a bare Git repository on the
host, bind-mounted read-only at /srv/git/stacks.git; `Cluster.repo` is a host clone that pushes
to it.

The nodes run a derived image, cfx-swarm-trixie:<key>: the e2e image with the package's runtime
dependencies (packaging/debian/control Depends, first alternatives: docker.io, docker-cli,
Debian's docker-compose) and the nested engine's configuration already in place, built once in a
booted container and committed, keyed by a hash of the recipe and the base image's name, so a
run only installs the .deb itself.

Everything a run creates is named cfx-swarm-<random8>* and labelled composeflux.test=swarm (and
composeflux.test.owner=<pid of the process that made it>); teardown removes exactly that, unless
COMPOSEFLUX_SWARM_KEEP=1 (then also labelled composeflux.test.keep=1). A new cluster first removes
the clusters of earlier runs whose process is gone, except kept ones. The conftest next to this
file wraps it in pytest fixtures; the functions here work without pytest too (start_cluster is a
context manager).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.test_systemd import BOOT_FLAGS, wait_until

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "cfx-swarm-"
LABEL = "composeflux.test=swarm"
OWNER_LABEL = "composeflux.test.owner"
KEEP_LABEL = "composeflux.test.keep"
IMAGE_NAME = "cfx-swarm-trixie"
TEST_IMAGE = "cfx-swarm/busybox:latest"
BARE_IN_NODE = "/srv/git/stacks.git"
CONFIG_FILE = "/etc/composeflux/composeflux.conf"
CACHE = Path(os.environ.get("CFX_E2E_CACHE", "/var/cache/composeflux-test"))
# Tools in the nodes beyond the package's dependencies: curl for the Engine API over its socket
# (`Node.api`), iproute2 and procps to look around.
EXTRA_PACKAGES = ("curl", "iproute2", "procps")

# What makes the derived image (with the package list, part of its cache key). The nested
# engine: vfs on the container's overlay; iptables stays on (overlay networks need it); the veth
# IPv6 setting this kernel's container cannot change (dockerd 26 fails `runc create` without the
# variable). The engine starts on boot; its state from the build (engine-id, containerd's) is
# removed so that each node starts as a new engine. No apt lists: `apt-get install /e2e/*.deb` needs
# none when the dependencies are there (a test installing more runs `apt-get update` first).
IMAGE_SETUP = """\
set -e
mkdir -p /etc/docker /etc/systemd/system/docker.service.d
echo '{"storage-driver":"vfs"}' > /etc/docker/daemon.json
printf '[Service]\\nEnvironment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\\n' > /etc/systemd/system/docker.service.d/cfx-swarm.conf
# The bind-mounted repository belongs to the host's root; git refuses other owners.
printf '[safe]\\n\\tdirectory = /srv/git/stacks.git\\n' > /etc/gitconfig
systemctl daemon-reload
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q @PACKAGES@
systemctl stop docker.socket docker.service containerd.service
rm -rf /var/lib/docker /var/lib/containerd
apt-get clean
rm -rf /var/lib/apt/lists/*
# A new machine-id on each node's first boot; no journal of the build.
: > /etc/machine-id
journalctl --relinquish-var
rm -rf /var/log/journal/*
"""
IMAGE_RECIPE_VERSION = "v1"

T = TypeVar("T")


def run(*args: str, check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, text=True, capture_output=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def missing() -> str | None:
    """Why the swarm tests cannot run here, or None."""
    if os.environ.get("COMPOSEFLUX_SWARM") == "0":
        return "COMPOSEFLUX_SWARM=0"
    if os.geteuid() != 0:
        return "needs root"
    for tool, path in (("debootstrap", "/usr/sbin/debootstrap"), ("dpkg-buildpackage", "/usr/bin/dpkg-buildpackage"),
                       ("busybox", "/bin/busybox")):
        if not os.path.exists(path):
            return f"{tool} is not installed (tests/e2e/setup.sh installs it)"
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "needs a running dockerd"
    return None


# -- what the nodes are made of ----------------------------------------------------------------


def build_deb(outdir: Path) -> Path:
    """The .deb of this checkout (packaging/build-deb.sh prints its path last)."""
    result = run(str(ROOT / "packaging" / "build-deb.sh"), str(outdir), timeout=900)
    return Path(result.stdout.strip().splitlines()[-1])


def base_image() -> str:
    return run(str(ROOT / "tests" / "e2e" / "build-rootfs.sh"), timeout=900).stdout.strip()


def runtime_packages(control: Path = ROOT / "packaging" / "debian" / "control") -> list[str]:
    """The binary package's Depends, substitution variables left out, the first of each set of
    alternatives, without version constraints (docker.io, docker-cli, docker-compose)."""
    text = control.read_text()
    paragraph = text.split("\nPackage: composeflux\n", 1)[1]
    lines = [line for line in paragraph.splitlines() if not line.startswith("#")]
    field = re.search(r"^Depends:(.*?)(?=^\S)", "\n".join(lines) + "\nEnd:", re.S | re.M)
    assert field, f"no Depends in {control}"
    packages = []
    for item in field.group(1).split(","):
        first = item.split("|")[0].strip()
        name = re.sub(r"\s*\(.*?\)", "", first).strip()
        if name and not name.startswith("${"):
            packages.append(name)
    return packages


def image_recipe(base: str) -> str:
    packages = " ".join([*runtime_packages(), *EXTRA_PACKAGES])
    return f"{IMAGE_RECIPE_VERSION}\n{base}\n{IMAGE_SETUP.replace('@PACKAGES@', packages)}"


def swarm_image(base: str | None = None) -> str:
    """cfx-swarm-trixie:<key>, built now unless an image of that name exists (another process
    building the same key waits for it: a lock file under the e2e cache directory)."""
    base = base or base_image()
    recipe = image_recipe(base)
    image = f"{IMAGE_NAME}:{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "swarm-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if run("docker", "image", "inspect", image, check=False).returncode != 0:
            _build_image(base, recipe.split("\n", 2)[2], image)
    return image


def _build_image(base: str, setup: str, image: str) -> None:
    name = f"{PREFIX}build-{uuid.uuid4().hex[:8]}"
    run("docker", "run", "-d", "--name", name, "--label", LABEL, "--label", f"{OWNER_LABEL}={os.getpid()}",
        *BOOT_FLAGS, base, "/lib/systemd/systemd")
    try:
        builder = Node(name, "builder")
        builder.wait_booted()
        builder.sh(setup, timeout=900)
        # A clean shutdown (systemd's SIGRTMIN+3), then commit the stopped container.
        run("docker", "kill", "--signal", "SIGRTMIN+3", name)
        run("docker", "wait", name, timeout=120)
        run("docker", "commit", "--change", 'CMD ["/lib/systemd/systemd"]', "--change", f"LABEL {LABEL}", name, image)
    finally:
        run("docker", "rm", "-f", name, check=False)


def busybox_tar(workdir: Path, name: str = "busybox.tar") -> Path:
    """A busybox-static root filesystem with every applet linked (wget, nc, ping, nslookup, httpd, ...)."""
    rootfs = workdir / "busybox-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in run("/bin/busybox", "--list").stdout.split():
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "tmp").mkdir()
    tar = workdir / name
    run("tar", "-C", str(rootfs), "-cf", str(tar), ".")
    shutil.rmtree(rootfs)
    return tar


# -- the parts of a cluster -----------------------------------------------------------------------


class Repo:
    """The host-side clone that pushes to the bare repository the nodes sync from."""

    def __init__(self, path: Path, bare: Path):
        self.path = path
        self.bare = bare

    @classmethod
    def create(cls, base: Path) -> Repo:
        """A bare repository base/stacks.git with one commit on main (stacks/.gitkeep), cloned to base/work."""
        bare = base / "stacks.git"
        run("git", "init", "-q", "--bare", "-b", "main", str(bare))
        run("git", "clone", "-q", str(bare), str(base / "work"))
        repo = cls(base / "work", bare)
        repo.git("checkout", "-q", "-b", "main")
        repo.write("stacks/.gitkeep", "")
        repo.commit_and_push("an empty stacks directory")
        return repo

    def git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("git", "-C", str(self.path), "-c", "user.name=swarm", "-c", "user.email=swarm@example.org", *args)

    def write(self, path: str, text: str) -> None:
        """Write a file, relative to the repository's root (stacks/web/compose.yaml)."""
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, path: str) -> None:
        """Remove a file or a whole directory, relative to the repository's root."""
        target = self.path / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()

    def commit_and_push(self, message: str, branch: str = "main") -> str:
        """Commit everything (also with nothing changed) and push; the new commit's id."""
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        self.git("push", "-q", "origin", f"HEAD:{branch}")
        return self.git("rev-parse", "HEAD").stdout.strip()


class Node:
    """One booted container: a Debian 13 system with its own Docker engine."""

    def __init__(self, name: str, hostname: str, network: str | None = None):
        self.name = name
        self.hostname = hostname
        self.network = network

    def __repr__(self) -> str:
        return f"Node({self.hostname})"

    def sh(self, script: str, check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """bash -c SCRIPT in the node, as root."""
        result = subprocess.run(["docker", "exec", *(["-i"] if input is not None else []), self.name, "bash", "-c", script],
                                text=True, capture_output=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.hostname}: `{script}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def out(self, script: str) -> str:
        return self.sh(script).stdout.strip()

    def docker(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The node's docker CLI with these arguments."""
        return self.sh(shlex.join(["docker", *args]), check=check, timeout=timeout, input=input)

    @property
    def ip(self) -> str:
        """Its address on the cluster's network (what the swarm advertises)."""
        networks = json.loads(run("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", self.name).stdout)
        return str(networks[self.network]["IPAddress"])

    def wait_booted(self, timeout: float = 120) -> None:
        wait_until(lambda: self.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded"),
                   timeout, f"systemd to boot in {self.hostname}")

    def engine_up(self) -> bool:
        return self.sh("timeout 10 docker version --format '{{.Server.Version}}'", check=False).returncode == 0

    def stop_engine(self) -> None:
        self.sh("systemctl stop docker.socket docker.service", timeout=120)

    def start_engine(self, timeout: float = 120) -> None:
        self.sh("systemctl start docker.socket docker.service", timeout=timeout)
        wait_until(self.engine_up, timeout, f"the engine of {self.hostname}")

    def api(self, path: str, check: bool = True) -> Any:
        """GET path from the node's Engine API over its socket, as JSON (None when it fails and not check)."""
        result = self.sh(f"curl -sS --fail-with-body --max-time 30 --unix-socket /var/run/docker.sock {shlex.quote('http://x' + path)}",
                         check=check)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def info(self) -> dict[str, Any]:
        """GET /info: Swarm.LocalNodeState, .NodeID, .ControlAvailable, ..."""
        info: dict[str, Any] = self.api("/info")
        return info

    def control_available(self) -> bool:
        """A manager that can answer swarm questions now (it may not be the leader)."""
        result = self.sh("timeout 10 docker info --format '{{.Swarm.ControlAvailable}}'", check=False)
        return result.returncode == 0 and result.stdout.strip() == "true"

    def sync(self, *args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`composeflux sync ARGS` on this node as the service's user (README: a manual sync)."""
        as_service = ["setpriv", "--reuid=composeflux", "--regid=composeflux", "--groups=docker", "--reset-env"]
        return self.sh(shlex.join([*as_service, "composeflux", "sync", *args]), check=check, timeout=timeout)

    def unit_runs(self) -> list[dict[str, Any]]:
        """systemd's entries for each finished start job of composeflux.service, oldest first (from
        the journal: a finished oneshot nothing refers to is unloaded, and its properties then are
        a fresh unit's)."""
        result = self.sh("journalctl -q -o json _PID=1 UNIT=composeflux.service JOB_TYPE=start", check=False)
        entries = [json.loads(line) for line in result.stdout.splitlines()]
        return [entry for entry in entries if entry.get("JOB_RESULT")]

    def unit_sync(self, expect: str, timeout: float = 600) -> tuple[str, str]:
        """`systemctl start composeflux-sync` (the packaged unit, hardening and all): its job's
        result ("done" when it succeeded) and what that run logged, once that holds `expect`
        (journald may write a message of the run after the unit finished) or 30 s have passed."""
        before = len(self.unit_runs())
        self.sh("systemctl start composeflux-sync", check=False, timeout=timeout)
        run = wait_until(lambda: self.unit_runs()[before:], 30, "the sync's start job in the journal")[0]
        query = f"journalctl -q -o cat _SYSTEMD_INVOCATION_ID={run['INVOCATION_ID']}"
        with contextlib.suppress(AssertionError):
            wait_until(lambda: expect in self.out(query), 30, f"{expect!r} in the journal of the run")
        return str(run["JOB_RESULT"]), self.out(query)

    def write_config(self, settings: Mapping[str, str] | None = None, **more: str) -> None:
        """/etc/composeflux/composeflux.conf: the swarm test's settings, with these added or replaced."""
        merged = {**default_settings(), **(settings or {}), **more}
        text = "".join(f"{key}={value}\n" for key, value in merged.items())
        # The file the package installed keeps its owner and mode (640 root:composeflux).
        self.sh(f"cat > {CONFIG_FILE}", input=text)


def default_settings() -> dict[str, str]:
    return {
        "GIT_REPO_URL": BARE_IN_NODE,
        "GIT_BRANCH": "main",
        "STACK_PATH": "stacks",
        "BACKEND": "swarm",
        "LOG_LEVEL": "DEBUG",
    }


class Cluster:
    """The booted nodes, the swarm they form, and the repository they sync from."""

    def __init__(self, prefix: str, network: str, nodes: list[Node], workdir: Path, repo: Repo):
        self.prefix = prefix
        self.network = network
        self.nodes = nodes
        self.workdir = workdir  # bind-mounted read-only at /e2e in every node
        self.repo = repo
        self.timings: dict[str, float] = {}

    @property
    def manager(self) -> Node:
        """node1: the node that initialised the swarm."""
        return self.nodes[0]

    def node(self, hostname: str) -> Node:
        return next(node for node in self.nodes if node.hostname == hostname)

    @staticmethod
    def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
        return wait_until(predicate, timeout, what, interval)

    def control(self) -> Node:
        """A manager that answers now: the leader when there is one, else any that can."""
        candidates = [node for node in self.nodes if node.control_available()]
        assert candidates, "no node answers as a swarm manager"
        for node in candidates:
            if node.sh("docker node inspect self --format '{{.ManagerStatus.Leader}}'", check=False).stdout.strip() == "true":
                return node
        return candidates[0]

    def leader(self) -> Node:
        """The node that is the Raft leader now (its own engine says so)."""
        for node in self.nodes:
            if node.sh("timeout 10 docker node inspect self --format '{{.ManagerStatus.Leader}}'", check=False).stdout.strip() == "true":
                return node
        raise AssertionError("no node is the swarm's leader")

    def node_list(self) -> list[dict[str, str]]:
        """`docker node ls` as JSON lines, asked of a manager that answers."""
        result = self.control().docker("node", "ls", "--format", "{{json .}}")
        return [json.loads(line) for line in result.stdout.splitlines()]

    def wait_ready(self, count: int | None = None, timeout: float = 120) -> None:
        count = len(self.nodes) if count is None else count

        def ready() -> bool:
            try:
                listed = self.node_list()
            except AssertionError:
                return False
            return sum(1 for entry in listed if entry["Status"] == "Ready") >= count

        wait_until(ready, timeout, f"{count} Ready nodes")

    def promote(self, node: Node, timeout: float = 60) -> None:
        """Make `node` a manager (from the leader) and wait until it can answer as one."""
        self.leader().docker("node", "promote", node.hostname)
        wait_until(node.control_available, timeout, f"{node.hostname} to become a manager")

    def demote(self, node: Node) -> None:
        self.leader().docker("node", "demote", node.hostname)

    def hostnames(self, control: Node | None = None) -> dict[str, str]:
        """Node ID -> hostname."""
        result = (control or self.control()).docker("node", "ls", "--format", "{{.ID}} {{.Hostname}}")
        return dict(line.split(None, 1) for line in result.stdout.splitlines())

    def services(self, stack: str) -> list[dict[str, Any]]:
        """`docker service inspect` of the stack's services (label com.docker.stack.namespace)."""
        control = self.control()
        ids = control.docker("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}").stdout.split()
        if not ids:
            return []
        services: list[dict[str, Any]] = json.loads(control.docker("service", "inspect", *ids).stdout)
        return sorted(services, key=lambda service: service["Spec"]["Name"])

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """Every task of a service, history included (`docker inspect` of each), oldest first, with
        "NodeHostname" added."""
        control = self.control()
        ids = control.docker("service", "ps", "-q", "--no-trunc", service).stdout.split()
        if not ids:
            return []
        tasks: list[dict[str, Any]] = json.loads(control.docker("inspect", "--type", "task", *ids).stdout)
        names = self.hostnames(control)
        for task in tasks:
            task["NodeHostname"] = names.get(task.get("NodeID", ""), "")
        return sorted(tasks, key=lambda task: task["CreatedAt"])

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks(service) if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]

    def write_config(self, node: Node | None = None, settings: Mapping[str, str] | None = None, **more: str) -> None:
        (node or self.manager).write_config(settings, **more)

    def teardown(self) -> None:
        remove_cluster(self.prefix)


# -- making and removing one ----------------------------------------------------------------------


def remove_cluster(prefix: str) -> None:
    """The containers and the network named `prefix`* with our label: exactly what start_cluster made."""
    listed = run("docker", "ps", "-a", "--filter", f"label={LABEL}", "--filter", f"name=^{prefix}", "--format", "{{.Names}}",
                 check=False)
    names = [name for name in listed.stdout.split() if name.startswith(prefix)]
    # The nodes' engines use cgroupfs with the host's cgroup namespace: their containers' cgroups
    # are /docker/<id> in the host's hierarchies, which nothing removes when a node is killed.
    nested = [node.sh("timeout 10 docker ps -aq --no-trunc", check=False).stdout.split() for node in
              (Node(name, name) for name in names)]
    if names:
        run("docker", "rm", "-f", "-v", *names, check=False, timeout=300)
    for container in (c for ids in nested for c in ids if re.fullmatch(r"[0-9a-f]{64}", c)):
        for directory in Path("/sys/fs/cgroup").glob(f"*/docker/{container}"):
            with contextlib.suppress(OSError):
                directory.rmdir()  # empty once the node is gone; a cgroup with processes is left alone
    networks = run("docker", "network", "ls", "--filter", f"label={LABEL}", "--format", "{{.Name}}", check=False)
    for network in networks.stdout.split():
        if network == prefix.rstrip("-") or network.startswith(prefix):
            run("docker", "network", "rm", network, check=False)


def remove_stale_clusters() -> None:
    """Clusters (and image builders) of earlier runs whose process is gone; a live run's, and those
    kept for a post-mortem (COMPOSEFLUX_SWARM_KEEP=1, label composeflux.test.keep=1), are left alone."""
    for kind, labels in (("container", ".Config.Labels"), ("network", ".Labels")):
        template = f'{{{{.Name}}}} {{{{index {labels} "{OWNER_LABEL}"}}}} {{{{index {labels} "{KEEP_LABEL}"}}}}'
        listed = run("docker", kind, "ls", *(["-a"] if kind == "container" else []), "-q", "--filter", f"label={LABEL}", check=False)
        if not listed.stdout.split():
            continue
        described = run("docker", kind, "inspect", "--format", template, *listed.stdout.split(), check=False)
        for line in described.stdout.splitlines():
            name, owner, keep = ([*line.split(), "", ""])[:3]
            name = name.lstrip("/")
            if not name.startswith(PREFIX) or keep == "1" or (owner.isdigit() and Path(f"/proc/{owner}").exists()):
                continue
            match = re.match(rf"^({re.escape(PREFIX)}[0-9a-f]{{8}})(-node\d+)?$", name)
            if match:
                remove_cluster(match.group(1))
            elif kind == "container":
                run("docker", "rm", "-f", "-v", name, check=False)


def _parallel(function: Callable[[Node], T], nodes: list[Node]) -> list[T]:
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(function, nodes))


def _prepare(node: Node) -> None:
    node.wait_booted()
    node.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q /e2e/composeflux_*.deb", timeout=600)
    node.start_engine()
    node.sh(f"docker import - {TEST_IMAGE} < /e2e/busybox.tar >/dev/null")


@contextlib.contextmanager
def start_cluster(deb: Path, image: str, workdir: Path, count: int = 3) -> Iterator[Cluster]:
    """Boot `count` nodes of `image` with `deb` installed, node1 the swarm's manager and the others
    workers, a fresh repository (workdir/git), node1 configured; removed on exit unless
    COMPOSEFLUX_SWARM_KEEP=1. workdir must be empty or new; it becomes /e2e (read-only) in the nodes."""
    remove_stale_clusters()
    started = time.monotonic()
    share = workdir / "share"
    share.mkdir(parents=True)
    shutil.copy(deb, share / deb.name)
    busybox_tar(share)
    repo = Repo.create(workdir / "git")
    prefix = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    network = prefix
    labels = ["--label", LABEL, "--label", f"{OWNER_LABEL}={os.getpid()}"]
    if os.environ.get("COMPOSEFLUX_SWARM_KEEP") == "1":
        labels += ["--label", f"{KEEP_LABEL}=1"]
    nodes = [Node(f"{prefix}-node{i}", f"node{i}", network) for i in range(1, count + 1)]
    cluster = Cluster(prefix, network, nodes, share, repo)
    try:
        run("docker", "network", "create", *labels, network)
        for node in nodes:
            run("docker", "run", "-d", "--name", node.name, *labels, "--hostname", node.hostname,
                "--network", network, *BOOT_FLAGS,
                "-v", f"{share}:/e2e:ro", "-v", f"{repo.bare}:{BARE_IN_NODE}:ro",
                image, "/lib/systemd/systemd")
        _parallel(_prepare, nodes)
        cluster.timings["nodes ready"] = time.monotonic() - started
        manager = cluster.manager
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        _parallel(lambda node: node.docker("swarm", "join", "--token", token, f"{manager.ip}:2377"), nodes[1:])
        cluster.wait_ready()
        manager.write_config()
        cluster.timings["swarm formed"] = time.monotonic() - started
        yield cluster
    finally:
        if os.environ.get("COMPOSEFLUX_SWARM_KEEP") != "1":
            cluster.teardown()
