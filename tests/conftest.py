"""Shared fixtures: real Git remotes, the real Docker engine, the real CLI.

Every Docker object a test creates belongs to a Compose project whose name starts with the
test's own random prefix; teardown removes exactly those, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "composeflux-test/busybox:latest"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

# The host's node_exporter directory (/var/lib/prometheus/node-exporter, where CI installs
# prometheus-node-exporter) is not the tests' to write: the syncs they run, in this process and
# in the CLIs they start, write no metrics unless a test points METRICS_TEXTFILE somewhere.
os.environ["METRICS_TEXTFILE"] = "off"
# Nor is the host's result directory of the webhook (/run/composeflux-results, with the package).
os.environ["TRIGGER_RESULT_DIR"] = "/nonexistent/composeflux-tests/results"


@pytest.fixture(autouse=True)
def _no_host_metrics(monkeypatch):
    """Configurations built from an explicit environment find no default metrics or result directory."""
    from composeflux import metrics, trigger

    monkeypatch.setattr(metrics, "DEFAULT_DIRECTORY", Path("/nonexistent/composeflux-tests/node-exporter"))
    monkeypatch.setattr(trigger, "DEFAULT_RESULT_DIR", Path("/nonexistent/composeflux-tests/results"))


def run(*command, check=True, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """A command the tests need; a hung one fails its test instead of hanging the suite."""
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=timeout, **kwargs)


# -- Docker ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A working engine with Compose v2 and the local test image (built here if missing)."""
    version = run("docker", "compose", "version", "--short", check=False)
    assert version.returncode == 0 and version.stdout.strip()[:1] in "23456789", (
        f"Docker Compose v2 is required for these tests: {version.stderr.strip()}"
    )
    if run("docker", "image", "inspect", TEST_IMAGE, check=False).returncode != 0:
        build_test_image()


def build_test_image() -> None:
    """A busybox-static root filesystem, imported: no registry is needed (or reachable)."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox (Debian package busybox-static) is needed to build the test image"
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "bin").mkdir()
        shutil.copy(busybox, Path(root) / "bin" / "busybox")
        for applet in ("sh", "sleep", "cat", "echo", "ls", "true", "env", "httpd", "false"):
            os.symlink("busybox", Path(root) / "bin" / applet)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", TEST_IMAGE], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()


@pytest.fixture
def prefix(docker_engine):
    """A unique stack-name prefix; everything under it is removed afterwards."""
    value = "cfxt" + secrets.token_hex(3)
    yield value
    remove_projects(value)


def compose_projects(prefix: str) -> set[str]:
    label = "com.docker.compose.project"
    listing = run("docker", "ps", "-a", "--filter", f"label={label}", "--format", f'{{{{.Label "{label}"}}}}')
    return {name for name in listing.stdout.split() if name.startswith(prefix)}


def remove_projects(prefix: str) -> None:
    for project in compose_projects(prefix):
        run("docker", "compose", "-p", project, "down", "--volumes", "--remove-orphans", "--timeout", "1", check=False, cwd="/")
    for kind in ("network", "volume"):
        names = run("docker", kind, "ls", "--format", "{{.Name}}").stdout.split()
        ours = [name for name in names if name.startswith(prefix)]
        if ours:
            run("docker", kind, "rm", *ours, check=False)


@dataclasses.dataclass
class ContainerInfo:
    id: str
    service: str
    labels: dict
    env: list
    state: str


def containers(project: str) -> dict[str, ContainerInfo]:
    """service -> its (single) container in this project."""
    ids = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    found = {}
    if ids:
        for item in json.loads(run("docker", "inspect", *ids).stdout):
            labels = item["Config"]["Labels"]
            found[labels["com.docker.compose.service"]] = ContainerInfo(
                item["Id"], labels["com.docker.compose.service"], labels, item["Config"]["Env"] or [], item["State"]["Status"]
            )
    return found


def container_ids(project: str) -> dict[str, str]:
    return {service: info.id for service, info in containers(project).items()}


# -- Git ------------------------------------------------------------------------------------------


class StackRepo:
    """A bare remote plus a working clone to edit, commit and push from."""

    def __init__(self, root: Path, stack_path: str = "stacks"):
        self.remote = root / "remote.git"
        self.work = root / "work"
        self.stack_path = stack_path
        run("git", "init", "-q", "--bare", "--initial-branch=main", str(self.remote))
        run("git", "init", "-q", "--initial-branch=main", str(self.work))
        self.git("remote", "add", "origin", str(self.remote))

    def git(self, *arguments) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
        return run("git", "-C", str(self.work), *arguments, env=env).stdout.strip()

    def write(self, path: str, text: str) -> None:
        target = self.work / self.stack_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

    def remove(self, path: str) -> None:
        target = self.work / self.stack_path / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        self.git("push", "-q", "--force", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")

    def force_push(self, commit: str) -> None:
        self.git("reset", "-q", "--hard", commit)
        self.git("push", "-q", "--force", "origin", "HEAD:main")

    def add_stack(self, name: str, services=("app",), environment: dict | None = None, extra: str = "") -> None:
        self.write(f"{name}/compose.yaml", service_yaml(services, environment) + extra)


def service_yaml(services=("app",), environment: dict | None = None) -> str:
    lines = ["services:"]
    for service in services:
        lines += [
            f"  {service}:",
            f"    image: {TEST_IMAGE}",
            '    command: ["sleep", "infinity"]',
            "    init: true",
            "    stop_grace_period: 1s",
        ]
        if environment:
            lines.append("    environment:")
            lines += [f"      {key}: {json.dumps(value)}" for key, value in environment.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def repo(tmp_path) -> StackRepo:
    return StackRepo(tmp_path / "git")


# -- The composeflux CLI --------------------------------------------------------------------------


@dataclasses.dataclass
class Composeflux:
    """Runs the real CLI in a subprocess with its own state directory and config file."""

    repo: StackRepo
    state: Path
    config_file: Path
    env: dict

    def settings(self, **values) -> None:
        self.env.update({key: str(value) for key, value in values.items()})

    def sync(self, *arguments, expect: int | None = 0, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [PYTHON, "-m", "composeflux", "--config", str(self.config_file), "sync", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )
        if expect is not None:
            assert result.returncode == expect, f"exit {result.returncode}, expected {expect}\n{result.stdout}\n{result.stderr}"
        return result

    def popen(self, *arguments) -> subprocess.Popen:
        return subprocess.Popen(
            [PYTHON, "-m", "composeflux", "--config", str(self.config_file), "sync", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def last_state(self) -> dict:
        """The last sync's record in the state file."""
        return json.loads((self.state / "state.json").read_text())["last_sync"]


def base_environment() -> dict:
    keep = ("PATH", "DOCKER_HOST", "LANG", "HOME")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.fixture
def cfx(repo, tmp_path, docker_engine) -> Composeflux:
    state = tmp_path / "state"
    config_file = tmp_path / "composeflux.conf"
    config_file.write_text(f"GIT_REPO_URL={repo.remote}\nSTACK_PATH={repo.stack_path}\n")
    env = base_environment()
    # LOCAL_ENV_DIR: the host's own /etc/composeflux/stacks must not leak into a test.
    # HEALTH_STABLE: every test deploy would sit out 10 s; the health tests set their own.
    env.update({
        "STATE_DIRECTORY": str(state), "RUNTIME_DIRECTORY": str(tmp_path / "run"), "LOCAL_ENV_DIR": str(tmp_path / "local-env"),
        "HEALTH_STABLE": "0",
    })
    return Composeflux(repo, state, config_file, env)


# -- sshd on 127.0.0.1 ----------------------------------------------------------------------------


@dataclasses.dataclass
class SshServer:
    port: int
    client_key: Path
    known_hosts: Path

    def url(self, path: Path) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{path}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None, f"server exited with status {process.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@pytest.fixture
def sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1 accepting one deploy key (for root, as CI runs)."""
    daemon = shutil.which("sshd") or "/usr/sbin/sshd"
    assert Path(daemon).exists(), "openssh-server is needed for the SSH tests"
    directory = tmp_path / "sshd"
    directory.mkdir()
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "host_key"))
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", str(directory / "deploy_key"))
    shutil.copy(directory / "deploy_key.pub", directory / "authorized_keys")
    port = free_port()
    (directory / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPidFile {directory / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    process = subprocess.Popen([daemon, "-D", "-e", "-f", str(directory / "sshd_config")])
    host_key = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    wait_for_port(port, process)
    yield SshServer(port, directory / "deploy_key", directory / "known_hosts")
    process.terminate()
    process.wait(timeout=10)


# -- git over HTTP with a token -------------------------------------------------------------------


@dataclasses.dataclass
class GitHttpServer:
    port: int
    user: str
    token: str

    def url(self, repository: Path) -> str:
        return f"http://127.0.0.1:{self.port}/{repository.name}"


@pytest.fixture
def git_http(repo):
    """`git http-backend` serving the test repository, requiring a Basic-auth token."""
    port, token = free_port(), "tok-" + secrets.token_hex(12)
    process = subprocess.Popen(
        [PYTHON, str(REPO_ROOT / "tests" / "servers" / "git_http.py"), str(port), str(repo.remote.parent), "deploy-bot", token]
    )
    wait_for_port(port, process)
    yield GitHttpServer(port, "deploy-bot", token)
    process.terminate()
    process.wait(timeout=10)
