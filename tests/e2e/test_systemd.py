"""End to end on a real Debian 13 (trixie) booted with systemd as PID 1 in a container.

Builds the .deb from this checkout, boots a cached debootstrap image, installs the package with
apt (which pulls docker.io and docker-compose from Debian; apprise, only recommended, is installed
for the notification tests), serves a Git repository from the host (a bare repository
bind-mounted read-only) and checks the units do what composeflux(8) and composeflux-webhook(8)
say (the webhook over real HTTP, as a forge sends it, through the socket systemd holds).

Part of the suite (about 4 minutes with the cached image, 4.5 without). Needs root, a running
dockerd, debootstrap and lintian (tests/e2e/setup.sh) and the Debian registry; skipped when any is
missing, or with COMPOSEFLUX_E2E=0. COMPOSEFLUX_E2E_KEEP=1 keeps the container for a post-mortem.
    /usr/bin/python3 -m pytest tests/e2e -v
The tests in this module run in order and share one booted system.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.fakes import forges
from tests.sopsenc import age_keygen, encrypt_file

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PREFIX = "cfx-e2e-"
LABEL = "composeflux.test=e2e"

def _missing() -> str | None:
    if os.environ.get("COMPOSEFLUX_E2E") == "0":
        return "COMPOSEFLUX_E2E=0"
    if os.geteuid() != 0:
        return "needs root"
    for tool, path in (("debootstrap", "/usr/sbin/debootstrap"), ("dpkg-buildpackage", "/usr/bin/dpkg-buildpackage"),
                       ("lintian", "/usr/bin/lintian"), ("busybox", "/bin/busybox")):
        if not os.path.exists(path):
            return f"{tool} is not installed (tests/e2e/setup.sh installs it)"
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "needs a running dockerd"
    return None


MISSING = _missing()

# On a developer machine a missing prerequisite skips the module (and says which); in CI, where
# tests/e2e/setup.sh has installed everything, the same gap is a failure, never a silent skip.
IN_CI = bool(os.environ.get("CI")) and os.environ.get("COMPOSEFLUX_E2E") != "0"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(MISSING is not None and not IN_CI, reason=f"systemd end-to-end test: {MISSING}"),
]


@pytest.fixture(autouse=True, scope="module")
def _prerequisites():
    if MISSING is not None:
        pytest.fail(f"systemd end-to-end test cannot run in CI: {MISSING}")

# The flags that boot systemd here (REFERENCE.md): no --privileged (no CAP_SYS_RESOURCE).
BOOT_FLAGS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
]

COMPOSE = """\
services:
  {name}:
    image: cfx-e2e/busybox:latest
    init: true
    command: ["sleep", "3600"]
    environment:
      GREETING: "{greeting}"
"""


# A stack that never gets healthy: its healthcheck fails, but inside a start period of an hour
# (failures there do not count), so the health gate waits on "starting" for its HEALTH_TIMEOUT.
HANGING = """\
services:
  hang:
    image: cfx-e2e/busybox:latest
    init: true
    command: ["sleep", "3600"]
    healthcheck:
      test: ["CMD-SHELL", "exit 1"]
      interval: 1h
      start_period: 1h
"""

# The notification receiver in the container (NOTIFY_URLS=json://...): one JSON line per POST.
RECEIVER = """\
import http.server
import json
import sys

port, path = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        try:
            record = json.loads(body)
        except ValueError:
            record = {"raw": body}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""
RECEIVER_PORT = 8099
POSTS = "/root/cfx-e2e-posts.jsonl"
# The OnFailure= instance of composeflux.service (OnFailure=composeflux-notify@%n.service).
NOTIFY_UNIT = "composeflux-notify@composeflux.service.service"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
STACK_FAILED_ID = "b2c9783b03be451c89e692e34f7b41c1"  # composeflux/events.py, MESSAGE_IDS[Kind.STACK_FAILED]
UNIT_FAILED_ID = "64292bc310a34ff3832e39b47391c86e"  # MESSAGE_IDS[Kind.UNIT_FAILED]
UNIT_STARTING_ID = "7d4958e842da4a758f6c1cdc7b36dcc5"  # systemd's "Starting UNIT..." (SD_MESSAGE_UNIT_STARTING)
UNIT_STARTED_ID = "39f53479d3a045ac8e11786248231fbf"  # "Started UNIT." (SD_MESSAGE_UNIT_STARTED)

WEBHOOK_UNIT = "composeflux-webhook.service"
WEBHOOK_DROPINS = "/etc/systemd/system/composeflux-webhook.service.d"
# The repository as a forge would name it in its payloads: the same host/path as GIT_REPO_URL
# (gitsrv@localhost:/srv/git/stacks.git), another transport, as with a real forge.
WEBHOOK_WEB = "https://localhost/srv/git/stacks"
# A stand-in for LoadCredential=WEBHOOK_SECRET:/etc/composeflux/webhook-secret where systemd cannot
# mount credential directories (this container, for any unit): the same file, root-owned outside,
# copied as root ("+") into the service's RuntimeDirectory= for its dynamic user, mode 0400, and
# $CREDENTIALS_DIRECTORY pointing there; the receiver reads it exactly as it reads a credential.
WEBHOOK_CREDENTIAL_STANDIN = """\
[Service]
LoadCredential=
Environment=CREDENTIALS_DIRECTORY=/run/composeflux-webhook/creds
ExecStartPre=+/bin/sh -c "u=$$(stat -c %%u $$RUNTIME_DIRECTORY); install -d -m 0700 -o $$u $$RUNTIME_DIRECTORY/creds; \
install -m 0400 -o $$u /etc/composeflux/webhook-secret $$RUNTIME_DIRECTORY/creds/WEBHOOK_SECRET"
"""

# The forge's side, in the container: POSTs the deliveries of a JSON file to the socket
# (127.0.0.1:9417, systemd's), `threads` at a time; prints each answer with when it was sent and
# answered (Unix times, the clock of the container and of its engine).
WEBHOOK_CLIENT = """\
import base64
import concurrent.futures
import http.client
import json
import sys
import time


def post(request):
    body = base64.b64decode(request["body"]) if "body" in request else b"x" * request["size"]
    sent = time.time()
    connection = http.client.HTTPConnection("127.0.0.1", 9417, timeout=request["timeout"])
    try:
        connection.request("POST", request["target"], body=body, headers=request["headers"])
        response = connection.getresponse()
        return {"status": response.status, "text": response.read().decode(), "sent": sent, "answered": time.time()}
    except OSError as exc:
        return {"status": None, "text": repr(exc), "sent": sent, "answered": time.time()}
    finally:
        connection.close()


with open(sys.argv[1], encoding="utf-8") as source:
    requests = json.load(source)
with concurrent.futures.ThreadPoolExecutor(int(sys.argv[2])) as pool:
    print(json.dumps(list(pool.map(post, requests))))
"""

# connect(2) to a Unix socket: exit 0 when it answers, 1 (and why) when it does not.
SOCKET_PROBE = """\
import socket
import sys

probe = socket.socket(socket.AF_UNIX)
try:
    probe.connect(sys.argv[1])
except OSError as exc:
    print(f"cannot connect: {exc}")
    sys.exit(1)
print("connected")
"""


def catalog_entry(message_id: str, fields: dict[str, str]) -> list[str]:
    """The non-blank lines of packaging/systemd/composeflux.catalog's entry, @FIELD@s substituted."""
    text = (ROOT / "packaging" / "systemd" / "composeflux.catalog").read_text()
    entry = text.split(f"-- {message_id}\n", 1)[1].split("\n-- ", 1)[0]
    entry = re.sub(r"@([A-Z0-9_]+)@", lambda m: fields.get(m.group(1), m.group(0)), entry)
    return [line for line in entry.splitlines() if line.strip()]


def metric_values(text: str) -> dict[str, float]:
    """node_exporter's textfile format: {'name{labels}': value} of every sample line."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def run(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, text=True, capture_output=True, **kwargs)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class System:
    """The booted container."""

    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.workdir = workdir

    def sh(self, script: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["docker", "exec", self.name, "bash", "-c", script],
            text=True, capture_output=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"`{script}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def out(self, script: str) -> str:
        return self.sh(script).stdout.strip()

    def prop(self, unit: str, name: str) -> str:
        return self.out(f"systemctl show -P {name} {unit}")

    def idle(self) -> bool:
        """The sync is not running and nothing is queued for it."""
        return (
            self.prop("composeflux.service", "ActiveState") in ("inactive", "failed")
            and self.out("systemctl list-jobs --no-legend composeflux.service") == ""
        )

    def wait_idle(self, timeout=120):
        wait_until(self.idle, timeout, "the sync to finish")

    def env_of(self, container: str) -> list[str]:
        result = self.sh(f"docker inspect -f '{{{{json .Config.Env}}}}' {container}", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else []

    def container_id(self, container: str) -> str:
        return self.out(f"docker inspect -f '{{{{.Id}}}}' {container}")

    def running(self, container: str) -> bool:
        result = self.sh(f"docker inspect -f '{{{{.State.Running}}}}' {container}", check=False)
        return result.stdout.strip() == "true"

    def invocations(self) -> list[str]:
        """InvocationIDs of composeflux.service runs, oldest first."""
        result = self.sh("journalctl -u composeflux -o json --output-fields=_SYSTEMD_INVOCATION_ID,INVOCATION_ID", check=False)
        ids = []
        for line in result.stdout.splitlines():
            entry = json.loads(line)
            value = entry.get("_SYSTEMD_INVOCATION_ID") or entry.get("INVOCATION_ID")
            if value and value not in ids:
                ids.append(value)
        return ids

    def journal(self, *matches: str) -> list[dict]:
        result = self.sh("journalctl -q -o json " + " ".join(matches), check=False)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def unit_runs(self, unit: str) -> list[dict]:
        """systemd's entries for each finished start job of `unit` (JOB_RESULT, INVOCATION_ID),
        oldest first. From the journal: an inactive unit nothing refers to is unloaded, and then
        its properties (Result=success, ...) are a fresh unit's, whatever its last run did."""
        return [e for e in self.journal("_PID=1", f"UNIT={unit}", "JOB_TYPE=start") if e.get("JOB_RESULT")]

    def wait_unit_run(self, unit: str, before: int, timeout: float = 60) -> dict:
        """The run of `unit` after the `before` ones seen already, once it has finished."""
        try:
            wait_until(lambda: len(self.unit_runs(unit)) > before, timeout, f"{unit} to run")
        except AssertionError as exc:
            log = self.sh("journalctl -u 'composeflux-notify@*' -u composeflux -n 30 --no-pager", check=False).stdout
            raise AssertionError(f"{exc}\n{log}") from None
        runs = self.unit_runs(unit)
        assert len(runs) == before + 1, [e.get("MESSAGE") for e in runs[before:]]
        return runs[-1]

    def log_of(self, invocation: str) -> str:
        """What the processes of one run logged (not systemd's own lines about it)."""
        return self.out(f"journalctl -q -o cat _SYSTEMD_INVOCATION_ID={invocation}")


class Receiver:
    """The HTTP server in the container that NOTIFY_URLS points at."""

    def __init__(self, system: System):
        self.system = system

    def posts(self) -> list[dict]:
        """Every notification received so far (apprise's json:// payload: title, message, type)."""
        text = self.system.sh(f"cat {POSTS} 2>/dev/null", check=False).stdout
        return [json.loads(line) for line in text.splitlines()]


class Repo:
    """The host-side clone that pushes to the bare repository the system syncs from."""

    def __init__(self, path: Path):
        self.path = path

    def git(self, *args):
        return run("git", "-C", str(self.path), "-c", "user.name=e2e", "-c", "user.email=e2e@example.org", *args)

    def write_stack(self, name: str, greeting: str):
        directory = self.path / "stacks" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "compose.yaml").write_text(COMPOSE.format(name=name, greeting=greeting))

    def commit_and_push(self, message: str, branch: str = "main"):
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", f"HEAD:{branch}")


class Webhook:
    """The forge's side of composeflux-webhook.socket: signed deliveries (tests/fakes/forges.py)
    of the test repository's head, sent from inside the container."""

    def __init__(self, system: System, repo: Repo, secret: bytes):
        self.system = system
        self.repo = repo
        self.secret = secret

    def delivery(self, forge: str = "github", *, ref: str = "refs/heads/main", secret: bytes | None = None,
                 target: str = "/", size: int | None = None, commit: str | None = None, timeout: float = 60) -> dict:
        """A push of ``ref`` as ``forge`` sends it; ``size``: a body of that many bytes instead."""
        commit = commit or self.repo.git("rev-parse", "HEAD").stdout.strip()
        payload = forges.push_payload(forge, ref=ref, after=commit, web=WEBHOOK_WEB)
        headers, body = forges.delivery(forge, payload, self.secret if secret is None else secret)
        request: dict = {"headers": headers, "target": target, "timeout": timeout}
        if size is None:
            request["body"] = base64.b64encode(body).decode("ascii")
        else:
            request["size"] = size
        return request

    def post(self, *requests: dict, threads: int = 1) -> list[dict]:
        """Each request's answer: status, text, and the Unix times it was sent and answered."""
        name = f"webhook-{uuid.uuid4().hex[:8]}.json"
        (self.system.workdir / name).write_text(json.dumps(list(requests)))
        return json.loads(self.system.out(f"python3 /e2e/webhook_client.py /e2e/{name} {threads}"))

    def log(self) -> str:
        return self.system.sh(f"journalctl -q -o cat -u {WEBHOOK_UNIT}", check=False).stdout

    def requested(self) -> int:
        """Sync requests the receiver logged (one per push it accepted, whether it added one to the spool or found one)."""
        return len(re.findall(r"^webhook: .*: (?:sync requested|a sync is already requested)$", self.log(), re.M))


def started_at(system: System, container: str) -> float:
    """A container's State.StartedAt as a Unix time (the engine's RFC 3339, nanoseconds)."""
    raw = system.out(f"docker inspect -f '{{{{.State.StartedAt}}}}' {container}")
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", raw)
    assert match, raw
    return datetime.datetime.fromisoformat(match.group(1) + "+00:00").timestamp() + float(match.group(2) or 0)


def systemd_event(system: System, unit: str, message_id: str, after: float) -> float | None:
    """When systemd first logged ``message_id`` about ``unit`` after the Unix time ``after``."""
    times = [int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in system.journal("_PID=1", f"UNIT={unit}", f"MESSAGE_ID={message_id}")]
    return min((t for t in times if t >= after), default=None)


def cleanup_stale_containers():
    """Containers of earlier, interrupted runs: ours only (label and name prefix)."""
    listed = run("docker", "ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}", check=False)
    for name in listed.stdout.split():
        if name.startswith(PREFIX):
            run("docker", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = run(str(ROOT / "packaging" / "build-deb.sh"), str(out))
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def image() -> str:
    return run(str(HERE / "build-rootfs.sh"), timeout=900).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    base = tmp_path_factory.mktemp("git")
    bare = base / "stacks.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(bare))
    run("git", "clone", "-q", str(bare), str(base / "work"))
    repo = Repo(base / "work")
    repo.git("checkout", "-q", "-b", "main")
    repo.write_stack("web", "hello v1")
    repo.write_stack("db", "db v1")
    repo.commit_and_push("v1: web and db")
    return repo


@pytest.fixture(scope="module")
def system(deb, image, repo, tmp_path_factory):
    cleanup_stale_containers()
    workdir = tmp_path_factory.mktemp("e2e")
    shutil.copy(deb, workdir / deb.name)
    # The test image for the nested engine: a busybox-static root filesystem.
    rootfs = workdir / "busybox"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep", "echo", "cat"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    run("tar", "-C", str(rootfs), "-cf", str(workdir / "busybox.tar"), ".")

    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    bare = repo.path.parent / "stacks.git"
    run(
        "docker", "run", "-d", "--name", name, "--label", LABEL, "--hostname", "cfx-e2e",
        *BOOT_FLAGS,
        "-v", f"{workdir}:/e2e:ro", "-v", f"{bare}:/srv/git/stacks.git:ro",
        image, "/lib/systemd/systemd",
    )
    system = System(name, workdir)
    try:
        wait_until(
            lambda: system.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded"),
            60, "systemd to boot",
        )
        system.sh(
            """
            set -e
            # Nested engine: vfs on the container's overlay, no iptables, and a veth IPv6
            # setting this kernel's container cannot change.
            mkdir -p /etc/docker /etc/systemd/system/docker.service.d
            echo '{"storage-driver":"vfs","iptables":false}' > /etc/docker/daemon.json
            printf '[Service]\\nEnvironment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\\n' \
                > /etc/systemd/system/docker.service.d/cfx-e2e.conf
            # The bind-mounted repository belongs to the host's root; git refuses other owners.
            printf '[safe]\\n\\tdirectory = /srv/git/stacks.git\\n' > /etc/gitconfig
            apt-get update -q
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q man-db openssh-server /e2e/*.deb
            docker import - cfx-e2e/busybox:latest < /e2e/busybox.tar
            # The repository is served over SSH by a git-shell user, so the sync exercises
            # git + ssh inside the hardened unit. Key and known_hosts where the docs put them.
            useradd -m -s /usr/bin/git-shell gitsrv
            ssh-keygen -q -t ed25519 -N '' -C composeflux -f /etc/composeflux/id_ed25519
            chgrp composeflux /etc/composeflux/id_ed25519 && chmod 0640 /etc/composeflux/id_ed25519
            install -d -m 0700 -o gitsrv -g gitsrv ~gitsrv/.ssh
            install -m 0600 -o gitsrv -g gitsrv /etc/composeflux/id_ed25519.pub ~gitsrv/.ssh/authorized_keys
            systemctl is-active ssh || systemctl start ssh
            ssh-keyscan -t ed25519 localhost > /etc/composeflux/known_hosts 2>/dev/null
            """,
            timeout=600,
        )
        yield system
    finally:
        if os.environ.get("COMPOSEFLUX_E2E_KEEP") != "1":
            run("docker", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def receiver(system):
    """apprise (a Recommends, which APT does not install here) and NOTIFY_URLS pointing at a
    receiver in the container, checked with `composeflux notify-test`."""
    system.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q apprise", timeout=300)
    (system.workdir / "receiver.py").write_text(RECEIVER)
    system.sh(f"systemd-run -q --unit=cfx-e2e-receiver /usr/bin/python3 /e2e/receiver.py {RECEIVER_PORT} {POSTS}")
    wait_until(lambda: system.sh(f"exec 3<>/dev/tcp/127.0.0.1/{RECEIVER_PORT}", check=False).returncode == 0,
               30, "the receiver to listen")
    system.wait_idle()
    before = len(system.invocations())
    # An edit of composeflux.conf starts a sync (composeflux.path, PathChanged=): let it finish.
    system.sh(f"echo 'NOTIFY_URLS=json://127.0.0.1:{RECEIVER_PORT}/' >> /etc/composeflux/composeflux.conf")
    wait_until(lambda: len(system.invocations()) > before, 30, "the sync the configuration change starts")
    system.wait_idle()
    assert system.prop("composeflux.service", "Result") == "success"
    result = system.sh("composeflux notify-test", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    receiver = Receiver(system)
    assert [post["title"] for post in receiver.posts()] == ["composeflux on cfx-e2e: test"]
    try:
        yield receiver
    finally:
        system.sh("systemctl stop cfx-e2e-receiver; sed -i '/^NOTIFY_URLS=/d' /etc/composeflux/composeflux.conf", check=False)


def test_package_is_lintian_clean(deb):
    result = run("lintian", "--fail-on", "error,warning", str(deb), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installing_starts_nothing(system):
    for unit in ("composeflux.timer", "composeflux.path", "composeflux-update.timer"):
        assert system.prop(unit, "UnitFileState") == "disabled"
        assert system.prop(unit, "ActiveState") == "inactive"
    assert system.prop("composeflux.service", "ActiveState") == "inactive"
    assert system.prop("composeflux-update.service", "ActiveState") == "inactive"
    assert system.invocations() == []
    assert system.out("stat -c '%a %U:%G' /etc/composeflux/composeflux.conf") == "640 root:composeflux"
    assert system.out("stat -c '%a %U:%G' /var/spool/composeflux") == "2770 composeflux:composeflux-trigger"
    # A dry run by hand as the service's user may come first (README): its state directory is there
    assert system.out("stat -c '%a %U:%G' /var/lib/composeflux") == "750 composeflux:composeflux"
    assert system.out("systemctl is-active docker") == "active"


def test_enabling_the_timer_brings_the_stacks_up(system):
    system.sh(
        "printf 'GIT_REPO_URL=gitsrv@localhost:/srv/git/stacks.git\\nSTACK_PATH=stacks\\nLOG_LEVEL=DEBUG\\n"
        "GIT_SSH_KEY_PATH=/etc/composeflux/id_ed25519\\n' >> /etc/composeflux/composeflux.conf"
    )
    system.sh("systemctl enable --now composeflux.timer")
    assert system.prop("composeflux.path", "ActiveState") == "active"  # enabled with the timer
    wait_until(lambda: system.running("web-web-1") and system.running("db-db-1"), 150, "web and db to run")
    system.wait_idle()
    assert "GREETING=hello v1" in system.env_of("web-web-1")
    assert system.prop("composeflux.service", "Result") == "success"


def test_push_and_trigger_deploys_through_the_path_unit(system, repo):
    system.wait_idle()
    before = len(system.invocations())
    repo.write_stack("web", "hello v2")
    repo.commit_and_push("v2: web")
    # A member of composeflux-trigger may ask; somebody else may not.
    system.sh("id alice >/dev/null 2>&1 || useradd -m -G composeflux-trigger alice")
    system.sh("runuser -u alice -- composeflux trigger")
    refused = system.sh("runuser -u nobody -- composeflux trigger", check=False)
    assert refused.returncode != 0 and "composeflux-trigger" in refused.stderr
    wait_until(lambda: "GREETING=hello v2" in system.env_of("web-web-1"), 60, "web to get v2")
    system.wait_idle()
    assert len(system.invocations()) > before
    assert system.out("ls -A /var/spool/composeflux") == ""
    assert "GREETING=db v1" in system.env_of("db-db-1")


def test_requests_during_a_run_give_exactly_one_more_run(system):
    # Keep the unit running after the sync has drained the spool and deployed (ExecStartPost=),
    # so the requests certainly land during the run and after the drain.
    system.sh(
        "mkdir -p /etc/systemd/system/composeflux.service.d && printf '[Service]\\nExecStartPost=/bin/sleep 6\\n'"
        " > /etc/systemd/system/composeflux.service.d/cfx-e2e-slow.conf && systemctl daemon-reload"
    )

    def in_post():
        if system.prop("composeflux.service", "ActiveState") != "activating":
            return False
        started = int(system.prop("composeflux.service", "InactiveExitTimestampMonotonic") or 0)
        main_exited = int(system.prop("composeflux.service", "ExecMainExitTimestampMonotonic") or 0)
        return main_exited > started

    try:
        system.wait_idle()
        before = len(system.invocations())
        system.sh("systemctl start --no-block composeflux.service")
        wait_until(in_post, 60, "the sync to finish its main process", interval=0.2)
        # A burst during the run: one through the CLI, twenty more in one process (twenty CLI
        # starts would take longer than the run and rightly cause a third one).
        system.sh("composeflux trigger")
        system.sh("python3 -c 'from composeflux.trigger import request_sync\nfor _ in range(20): request_sync()'")
        assert system.prop("composeflux.service", "ActiveState") == "activating", "the burst came too late"
        wait_until(lambda: len(system.invocations()) >= before + 2, 30, "a second run")
        system.wait_idle(60)
        time.sleep(2)  # would a third run start?
        system.wait_idle(60)
        assert len(system.invocations()) == before + 2
        assert system.out("ls -A /var/spool/composeflux") == ""
        assert system.prop("composeflux.path", "ActiveState") == "active"
        assert system.prop("composeflux.service", "Result") == "success"
    finally:
        system.sh("rm -f /etc/systemd/system/composeflux.service.d/cfx-e2e-slow.conf && systemctl daemon-reload")


def test_systemctl_start_composeflux_sync_runs_a_sync(system, repo):
    system.wait_idle()
    repo.write_stack("web", "hello v3")
    repo.commit_and_push("v3: web")
    before = len(system.invocations())
    result = system.sh("systemctl start composeflux-sync", check=False)  # blocks until done
    assert result.returncode == 0, result.stderr
    assert len(system.invocations()) == before + 1
    assert "GREETING=hello v3" in system.env_of("web-web-1")
    status = system.sh("composeflux status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    # The sync's last sd_notify STATUS= (NotifyAccess=main), as `systemctl status` shows it.
    status_text = system.prop("composeflux.service", "StatusText")
    print(f"\nStatusText after the run: {status_text!r}")
    assert status_text, "no sd_notify STATUS= reached systemd"


def test_dry_run_by_hand_as_the_service_user(system):
    """The command composeflux(8) and docs/systemd.md give for a manual dry run."""
    system.wait_idle()
    result = system.sh(
        "setpriv --reuid=composeflux --regid=composeflux --groups=docker --reset-env composeflux sync --dry-run",
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unchanged" in result.stdout
    # Nothing in the state directory is out of the service's reach afterwards.
    assert system.out("find /var/lib/composeflux ! -user composeflux | head -1") == ""


def test_a_systemd_credential_overrides_the_configuration(system, repo):
    """systemd-creds encrypt + LoadCredentialEncrypted= reach the sync as $CREDENTIALS_DIRECTORY/KEY."""
    system.wait_idle()
    # The documented command works here (host key; no TPM in a container).
    system.sh(
        """
        set -e
        mkdir -p /etc/credstore.encrypted
        printf prod | systemd-creds encrypt --name=GIT_BRANCH - /etc/credstore.encrypted/GIT_BRANCH
        test "$(systemd-creds decrypt --name=GIT_BRANCH /etc/credstore.encrypted/GIT_BRANCH -)" = prod
        """
    )
    probe = system.sh(
        "systemd-run --wait --pipe -q -p LoadCredential=PROBE:/etc/hostname sh -c 'cat \"$CREDENTIALS_DIRECTORY/PROBE\"'",
        check=False,
    )
    if probe.returncode != 0:
        # Measured here: systemd 257 in this unprivileged container sets $CREDENTIALS_DIRECTORY
        # but cannot mount it, for any unit, hardened or not.
        pytest.skip(f"systemd in this container cannot mount credential directories: {probe.stderr.strip()}")
    repo.git("checkout", "-q", "-b", "prod")
    repo.write_stack("web", "hello prod")
    repo.commit_and_push("prod: web", branch="prod")
    repo.git("checkout", "-q", "main")
    system.sh(
        "mkdir -p /etc/systemd/system/composeflux.service.d && printf '[Service]\\n"
        "LoadCredentialEncrypted=GIT_BRANCH:/etc/credstore.encrypted/GIT_BRANCH\\n'"
        " > /etc/systemd/system/composeflux.service.d/cfx-e2e-cred.conf && systemctl daemon-reload"
    )
    try:
        assert system.sh("systemctl start composeflux-sync", check=False).returncode == 0
        assert "GREETING=hello prod" in system.env_of("web-web-1")
    finally:
        system.sh("rm -f /etc/systemd/system/composeflux.service.d/cfx-e2e-cred.conf && systemctl daemon-reload")
    assert system.sh("systemctl start composeflux-sync", check=False).returncode == 0
    assert "GREETING=hello v3" in system.env_of("web-web-1")


def test_a_sops_env_opens_with_the_hosts_age_key_under_the_packaged_unit(system, repo, tmp_path):
    """The documented home of the age identity (/etc/composeflux/age.key, 0600, owned by the
    service user) is readable inside the unit's sandbox, and the stack gets the decrypted value;
    nothing decrypted is left in the state directory."""
    system.wait_idle()
    key, recipient = age_keygen(tmp_path)
    system.sh(f"install -o composeflux -g composeflux -m 0600 /dev/stdin /etc/composeflux/age.key <<'EOF'\n{key.read_text()}EOF")
    repo.write_stack("vault", "${SECRET_GREETING}")
    secret = "sealed greeting 7c1e"
    (repo.path / "stacks" / "vault" / ".env.sops").write_bytes(
        encrypt_file("dotenv", {"SECRET_GREETING": secret}, age_recipients=[recipient])
    )
    repo.commit_and_push("vault: a SOPS .env")
    try:
        result = system.sh("systemctl start composeflux-sync", check=False)
        assert result.returncode == 0, system.out("journalctl -u composeflux -n 30 --no-pager")
        assert f"GREETING={secret}" in system.env_of("vault-vault-1")
        assert system.sh(f"grep -rlF '{secret}' /var/lib/composeflux /run/composeflux", check=False).stdout == ""
        assert secret not in system.out("journalctl -u composeflux --no-pager")
    finally:
        shutil.rmtree(repo.path / "stacks" / "vault")
        repo.commit_and_push("vault: removed")
        system.sh("systemctl start composeflux-sync", check=False)
        system.sh("rm -f /etc/composeflux/age.key")
    assert not system.running("vault-vault-1")


def test_journal_has_the_sync_with_structured_fields(system):
    entries = [json.loads(line) for line in system.out("journalctl -u composeflux -o json").splitlines()]
    own = [e for e in entries if e.get("_SYSTEMD_UNIT") == "composeflux.service" and e.get("_COMM") != "systemd"]
    assert own, "no log lines of the sync itself under journalctl -u composeflux"
    stacks = {e.get("COMPOSEFLUX_STACK") for e in own}
    assert {"web", "db"} <= stacks
    assert any(re.fullmatch(r"[0-9a-f]{40}", e.get("COMPOSEFLUX_COMMIT", "")) for e in own)
    assert any(e.get("COMPOSEFLUX_ACTION") for e in own)
    # The field filters people will use work as documented.
    assert system.out("journalctl -u composeflux COMPOSEFLUX_STACK=web -o cat | wc -l") != "0"


def test_a_failing_stack_fails_the_unit(system, repo, receiver):
    """A sync with a stack that fails to render: exit status 1, the others carry on; the sync
    tells it itself (one notice; the OnFailure= template adds none), the journal entry carries
    its catalog text (journalctl -x) and the ExecStopPost= writes the metrics."""
    system.wait_idle()
    system.sh(f"mkdir -p {TEXTFILE_DIR}")  # as prometheus-node-exporter has it: METRICS_TEXTFILE's default applies
    notified = len(receiver.posts())
    notify_runs = len(system.unit_runs(NOTIFY_UNIT))
    broken = repo.path / "stacks" / "broken"
    broken.mkdir()
    (broken / "compose.yaml").write_text("services:\n  bad:\n    image: cfx-e2e/busybox:latest\n    ports: ['not a port']\n")
    repo.commit_and_push("broken stack")
    try:
        result = system.sh("systemctl start composeflux-sync", check=False)
        assert result.returncode != 0
        assert system.prop("composeflux.service", "Result") == "exit-code"
        assert system.prop("composeflux.service", "ExecMainStatus") == "1"
        assert system.running("web-web-1") and system.running("db-db-1")  # the others carry on
        invocation = system.invocations()[-1]

        # OnFailure= ran the template, which found the run reported and sent nothing.
        notify = system.wait_unit_run(NOTIFY_UNIT, notify_runs)
        assert notify["JOB_RESULT"] == "done", notify
        assert "after reporting its run itself; nothing to add" in system.log_of(notify["INVOCATION_ID"])
        posts = receiver.posts()[notified:]
        assert len(posts) == 1, posts
        assert posts[0]["title"] == "composeflux on cfx-e2e: broken failed", posts
        assert posts[0]["type"] == "failure" and "broken: failed: docker compose config failed" in posts[0]["message"], posts

        # The event, found by its MESSAGE_ID, and explained by the catalog the package installed
        # (systemd's dpkg trigger on /usr/lib/systemd/catalog; nothing here updates it).
        listed = system.sh(f"journalctl --list-catalog {STACK_FAILED_ID}", check=False)
        assert listed.returncode == 0 and STACK_FAILED_ID in listed.stdout, f"the catalog is not in the database: {listed.stderr}"
        events = [e for e in system.journal(f"MESSAGE_ID={STACK_FAILED_ID}") if e.get("_SYSTEMD_INVOCATION_ID") == invocation]
        assert [(e.get("COMPOSEFLUX_STACK"), e.get("COMPOSEFLUX_EVENT")) for e in events] == [("broken", "stack-failed")], events
        assert events[0]["_SYSTEMD_UNIT"] == "composeflux.service"
        explained = system.out("journalctl -x -u composeflux --no-pager")
        expected = catalog_entry(STACK_FAILED_ID, events[0])
        assert "Subject: composeflux: stack broken failed" in expected
        assert f"The stack broken does not run what commit {events[0]['COMPOSEFLUX_COMMIT']} wants:" in expected
        missing = [line for line in expected if line not in explained]
        assert not missing, f"not in journalctl -x: {missing}"

        # ExecStopPost=+composeflux metrics: node_exporter's textfile, world-readable, complete.
        assert system.out(f"ls -A {TEXTFILE_DIR}") == "composeflux.prom"  # no temporary file left
        assert system.out(f"stat -c '%a %U' {TEXTFILE_DIR}/composeflux.prom") == "644 root"
        samples = metric_values(system.out(f"cat {TEXTFILE_DIR}/composeflux.prom"))
        assert samples["composeflux_last_sync_success"] == 0
        assert samples["composeflux_last_sync_exit_status"] == 1
        assert samples['composeflux_stack_state{stack="broken",state="failed"}'] == 1
        for stack in ("web", "db"):
            assert samples[f'composeflux_stack_state{{stack="{stack}",state="unchanged"}}'] == 1
            assert samples[f'composeflux_stack_state{{stack="{stack}",state="failed"}}'] == 0
    finally:
        shutil.rmtree(broken)
        repo.commit_and_push("remove the broken stack")
        fixed = system.sh("systemctl start composeflux-sync", check=False)
    assert fixed.returncode == 0
    samples = metric_values(system.out(f"cat {TEXTFILE_DIR}/composeflux.prom"))
    assert samples["composeflux_last_sync_success"] == 1 and samples["composeflux_last_sync_exit_status"] == 0
    assert samples['composeflux_stack_state{stack="web",state="unchanged"}'] == 1
    assert len(receiver.posts()) == notified + 1  # a stack deleted from Git: nothing more to tell


def test_a_sync_killed_by_its_timeout_is_told_once(system, repo, receiver):
    """A sync that hangs (here in a health gate) and is killed by TimeoutStartSec= cannot report
    itself: OnFailure= starts composeflux-notify@composeflux.service.service, which sends one
    notice with the dead run's last lines; a second such death sends none (repeat suppression);
    the next sync that works tells that it recovered."""
    system.wait_idle()
    notified = len(receiver.posts())
    notify_runs = len(system.unit_runs(NOTIFY_UNIT))
    deaths = len(system.journal(f"MESSAGE_ID={UNIT_FAILED_ID}"))
    (repo.path / "stacks" / "hang").mkdir()
    (repo.path / "stacks" / "hang" / "compose.yaml").write_text(HANGING)
    repo.commit_and_push("hang: never healthy")
    # The health gate would wait HEALTH_TIMEOUT (120 s); the unit gives the whole sync 15 s.
    system.sh(
        "mkdir -p /etc/systemd/system/composeflux.service.d && printf '[Service]\\nTimeoutStartSec=15s\\n'"
        " > /etc/systemd/system/composeflux.service.d/cfx-e2e-timeout.conf && systemctl daemon-reload"
    )
    try:
        for death in (1, 2):
            result = system.sh("systemctl start composeflux-sync", check=False)
            assert result.returncode != 0 and "timeout" in result.stderr, result.stderr
            assert system.prop("composeflux.service", "Result") == "timeout"
            dead = system.invocations()[-1]
            notify = system.wait_unit_run(NOTIFY_UNIT, notify_runs + death - 1)
            log = system.log_of(notify["INVOCATION_ID"])
            assert notify["JOB_RESULT"] == "done", log
            assert "composeflux.service failed: timeout (killed by signal TERM), last lines:" in log, log
            posts = receiver.posts()[notified:]
            if death == 1:
                assert len(posts) == 1, posts
                assert posts[0]["title"] == "composeflux on cfx-e2e: died" and posts[0]["type"] == "failure", posts
                message = posts[0]["message"]
                assert message.startswith("composeflux.service failed: timeout (killed by signal TERM), last lines:\n"), message
                # The dead run's own last lines (journalctl _SYSTEMD_INVOCATION_ID=), up to the hang.
                assert "Container hang-hang-1  Started" in message, message
                dead_log = system.log_of(dead)
                assert all(line in dead_log for line in message.splitlines()[1:]), (message, dead_log)
            else:
                assert len(posts) == 1, f"the second death was told again: {posts[1:]}"
        recorded = system.journal(f"MESSAGE_ID={UNIT_FAILED_ID}")[deaths:]
        assert [e.get("_SYSTEMD_UNIT") for e in recorded] == [NOTIFY_UNIT] * 2, recorded
    finally:
        shutil.rmtree(repo.path / "stacks" / "hang")
        repo.commit_and_push("hang: removed")
        system.sh("rm -f /etc/systemd/system/composeflux.service.d/cfx-e2e-timeout.conf && systemctl daemon-reload")
        recovered = system.sh("systemctl start composeflux-sync", check=False)
    assert recovered.returncode == 0, system.out("journalctl -u composeflux -n 30 --no-pager")
    assert not system.running("hang-hang-1")
    posts = receiver.posts()[notified + 1:]
    assert [post["title"] for post in posts] == ["composeflux on cfx-e2e: recovered"], posts
    assert posts[0]["message"].startswith("composeflux sync: recovered (was: composeflux.service failed: timeout"), posts


@pytest.fixture(scope="class")
def webhook(system, repo):
    """composeflux-webhook.socket enabled as composeflux-webhook(8) says: the secret in
    /etc/composeflux/webhook-secret (root, 0600), `systemctl enable --now`. Disabled, its drop-ins
    and the secret removed after the class: the tests after it see the package as installed."""
    secret = secrets.token_hex(32)
    (system.workdir / "webhook_client.py").write_text(WEBHOOK_CLIENT)
    (system.workdir / "socket_probe.py").write_text(SOCKET_PROBE)
    system.sh(f"install -m 0600 -o root -g root /dev/stdin /etc/composeflux/webhook-secret <<'EOF'\n{secret}\nEOF")
    # The unit hands the secret over with LoadCredential=. systemd 257 in this unprivileged container
    # cannot mount a credential directory for any unit (see the credential test above): measured
    # here with a probe, and then a drop-in stands in for it (WEBHOOK_CREDENTIAL_STANDIN says how).
    probe = system.sh(
        "systemd-run --wait --pipe -q -p LoadCredential=PROBE:/etc/hostname sh -c 'cat \"$CREDENTIALS_DIRECTORY/PROBE\"'",
        check=False,
    )
    if probe.returncode != 0:
        print(f"\nLoadCredential= cannot be mounted here ({probe.stderr.strip()}): the webhook's secret goes through a stand-in")
        system.sh(f"mkdir -p {WEBHOOK_DROPINS} && cat > {WEBHOOK_DROPINS}/cfx-e2e-credential.conf <<'EOF'\n{WEBHOOK_CREDENTIAL_STANDIN}EOF")
    system.sh("systemctl daemon-reload && systemctl enable --now composeflux-webhook.socket")
    try:
        yield Webhook(system, repo, secret.encode("ascii"))
    finally:
        system.sh(
            f"systemctl disable --now composeflux-webhook.socket; systemctl stop {WEBHOOK_UNIT};"
            f" rm -rf {WEBHOOK_DROPINS} /etc/composeflux/webhook-secret; systemctl daemon-reload",
            check=False,
        )


class TestWebhook:
    """composeflux-webhook.socket and .service on the booted system, spoken to over HTTP as a forge
    would (127.0.0.1:9417; systemd holds the socket and passes it)."""

    def test_a_signed_github_push_deploys_through_the_spool(self, system, repo, webhook):
        """Socket activation: nothing runs until the first connection; a GitHub push to main with a
        valid X-Hub-Signature-256 gets 202 and a request in the spool, composeflux.path starts the
        sync, and the change pushed is deployed. The push-to-running latency is printed, not judged."""
        assert system.prop("composeflux-webhook.socket", "UnitFileState") == "enabled"
        assert system.prop("composeflux-webhook.socket", "SubState") == "listening"
        assert system.prop(WEBHOOK_UNIT, "ActiveState") == "inactive"  # started by the first connection only
        system.wait_idle()
        before = len(system.invocations())
        old = system.container_id("web-web-1")
        repo.write_stack("web", "hello webhook")
        repo.commit_and_push("web: through the webhook")
        [answer] = webhook.post(webhook.delivery("github"))
        sent = answer["sent"]
        print(f"\nwebhook: {answer['status']} {answer['text'].strip()!r} after {answer['answered'] - sent:.2f} s"
              " (the receiver started by the socket)")
        assert (answer["status"], answer["text"]) == (202, "sync requested\n"), answer
        wait_until(lambda: "GREETING=hello webhook" in system.env_of("web-web-1") and system.running("web-web-1"),
                   90, "web to run the pushed change")
        running = started_at(system, "web-web-1")
        print(f"webhook push-to-running latency: {running - sent:.2f} s (from the request to the new container's StartedAt)")
        system.wait_idle()
        assert system.container_id("web-web-1") != old  # recreated with the new environment
        assert system.prop("composeflux.service", "Result") == "success"
        assert len(system.invocations()) == before + 1
        assert system.out("ls -A /var/spool/composeflux") == ""
        assert "GREETING=db v1" in system.env_of("db-db-1")
        # The parts, from systemd's journal and the sync's published result.
        receiver = systemd_event(system, WEBHOOK_UNIT, UNIT_STARTED_ID, sent)
        unit = systemd_event(system, "composeflux.service", UNIT_STARTING_ID, sent)
        result = json.loads(system.out("cat /run/composeflux-results/last-sync.json"))
        parts = [("receiver started", receiver), ("answered", answer["answered"]), ("composeflux.service starting", unit),
                 ("sync began", result["started"]), ("container started", running), ("sync finished", result["finished"])]
        print("webhook timeline from the request: " + ", ".join(f"{what} +{at - sent:.2f} s" for what, at in parts if at))
        assert result["result"] == "ok" and result["started"] >= sent, result
        assert "github push to refs/heads/main" in webhook.log()

    def test_the_receiver_cannot_reach_the_docker_socket(self, system, webhook):
        """A dynamic user with no capability and no docker group; and even with that group, the
        Docker socket is not there in its mount namespace (InaccessiblePaths=)."""
        [answer] = webhook.post(webhook.delivery("github", ref="refs/heads/elsewhere"))  # it runs (WEBHOOK_IDLE 120 s)
        assert answer["status"] == 202, answer
        assert system.prop(WEBHOOK_UNIT, "ActiveState") == "active"
        pid = system.prop(WEBHOOK_UNIT, "MainPID")
        status = dict(line.split(":", 1) for line in system.out(f"cat /proc/{pid}/status").splitlines())
        uid = status["Uid"].split()
        docker_gid, trigger_gid = (system.out(f"getent group {name} | cut -d: -f3") for name in ("docker", "composeflux-trigger"))
        assert len(set(uid)) == 1 and uid[0] not in ("0", system.out("id -u composeflux")), status["Uid"]
        assert trigger_gid in status["Groups"].split() and docker_gid not in status["Groups"].split(), status["Groups"]
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (caps, status[caps])
        assert status["NoNewPrivs"].strip() == "1"
        # Its mount namespace through /proc/PID/root, as its own user (root here has no CAP_SYS_PTRACE:
        # nsenter is refused), with the docker group added: more than the service has. Only
        # /run/docker.sock: /var/run is an absolute symlink, which /proc/PID/root resolves in ours.
        # (The probe on stdin: /e2e is root's alone.)
        as_it = f"setpriv --reuid={uid[0]} --regid={uid[0]} --groups=composeflux-trigger,docker python3 -"
        inside = system.sh(f"{as_it} /proc/{pid}/root/run/docker.sock < /e2e/socket_probe.py", check=False)
        outside = system.sh(f"{as_it} /run/docker.sock < /e2e/socket_probe.py", check=False)
        assert outside.returncode == 0, outside.stdout + outside.stderr  # the probe can succeed
        assert inside.returncode == 1 and "cannot connect" in inside.stdout, inside.stdout + inside.stderr
        print(f"\nthe receiver (uid {uid[0]}, groups {status['Groups'].strip()}) and /run/docker.sock: {inside.stdout.strip()}")
        # What the unit says that comes from.
        shown = system.out(f"systemctl show {WEBHOOK_UNIT} -p User -p DynamicUser -p SupplementaryGroups -p InaccessiblePaths")
        assert dict(line.split("=", 1) for line in shown.splitlines()) == {
            "User": "composeflux-webhook", "DynamicUser": "yes", "SupplementaryGroups": "composeflux-trigger",
            "InaccessiblePaths": "-/run/docker.sock -/var/run/docker.sock",
        }

    def test_a_signed_gitea_push_asks_for_a_sync(self, system, webhook):
        system.wait_idle()
        before = len(system.invocations())
        [answer] = webhook.post(webhook.delivery("gitea"))
        assert (answer["status"], answer["text"]) == (202, "sync requested\n"), answer
        wait_until(lambda: len(system.invocations()) > before, 30, "the sync the push asks for")
        system.wait_idle()
        assert system.prop("composeflux.service", "Result") == "success"
        assert "gitea push to refs/heads/main" in webhook.log()

    def test_refused_and_ignored_deliveries_start_no_sync(self, system, webhook):
        """A wrong signature (401), a push to another branch (202, ignored) and a body over 1 MiB
        (413): nothing in the spool, no sync, and the log says why without the secret."""
        system.wait_idle()
        before, requested = len(system.invocations()), webhook.requested()
        answers = webhook.post(
            webhook.delivery("github", secret=b"not the secret"),
            webhook.delivery("gitea", secret=b"not the secret"),
            webhook.delivery("github", ref="refs/heads/dev"),
            webhook.delivery("github", size=(1 << 20) + 1),
        )
        assert [(a["status"], a["text"]) for a in answers] == [
            (401, "unauthorized\n"), (401, "unauthorized\n"), (202, "ignored: refs/heads/dev is not refs/heads/main\n"),
            (413, f"the body is larger than {1 << 20} bytes\n"),
        ], answers
        assert system.out("ls -A /var/spool/composeflux") == ""
        time.sleep(2)  # would a sync start?
        assert len(system.invocations()) == before
        assert system.idle()
        log = webhook.log()
        assert webhook.requested() == requested
        assert log.count("has no valid signature (401)") >= 2
        assert "github push to refs/heads/dev" in log and "ignored: not refs/heads/main" in log
        assert "refused (413): the body is larger than" in log
        assert webhook.secret.decode() not in log

    def test_wait_answers_with_the_syncs_result(self, system, repo, webhook):
        """?wait=1: 200 with the summary of the sync the push asked for once it ends; 500 and the
        failed stack when one fails."""
        system.wait_idle()
        [answer] = webhook.post(webhook.delivery("github", target="/?wait=1", timeout=150))
        result = json.loads(system.out("cat /run/composeflux-results/last-sync.json"))
        assert answer["status"] == 200, answer
        assert answer["text"] == f"sync ok: {result['summary']}\n" and "unchanged" in answer["text"], (answer, result)
        assert answer["sent"] <= result["started"] <= result["finished"] <= answer["answered"], (answer, result)
        print(f"\n?wait=1: {answer['text'].strip()!r} after {answer['answered'] - answer['sent']:.2f} s")
        broken = repo.path / "stacks" / "broken"
        broken.mkdir()
        (broken / "compose.yaml").write_text("services:\n  bad:\n    image: cfx-e2e/busybox:latest\n    ports: ['not a port']\n")
        repo.commit_and_push("broken stack, for ?wait=1")
        try:
            system.wait_idle()
            [failed] = webhook.post(webhook.delivery("github", target="/?wait=1", timeout=150))
            lines = failed["text"].splitlines()
            assert failed["status"] == 500, failed
            assert lines[0].startswith("sync failed (exit status 1): ") and "(broken)" in lines[0], lines
            assert [line for line in lines[1:] if line.startswith("broken: ")], lines
            assert system.running("web-web-1") and system.running("db-db-1")
        finally:
            shutil.rmtree(broken)
            repo.commit_and_push("remove the broken stack")
            system.wait_idle()
            fixed = system.sh("systemctl start composeflux-sync", check=False)
        assert fixed.returncode == 0, system.out("journalctl -u composeflux -n 30 --no-pager")

    def test_a_burst_of_pushes_gives_at_most_two_syncs(self, system, repo, webhook):
        """50 signed pushes, 8 at a time: each gets 202; while a request waits in the spool no
        other is made, so one sync, or one more for the pushes that came after its drain."""
        system.wait_idle()
        before, requested = len(system.invocations()), webhook.requested()
        commit = repo.git("rev-parse", "HEAD").stdout.strip()
        answers = webhook.post(*(webhook.delivery("github", commit=commit) for _ in range(50)), threads=8)
        texts = [(a["status"], a["text"]) for a in answers]
        made = texts.count((202, "sync requested\n"))
        assert made >= 1 and made + texts.count((202, "a sync is already requested\n")) == 50, texts
        wait_until(lambda: len(system.invocations()) > before, 30, "the sync the burst asks for")
        system.wait_idle()
        time.sleep(2)  # would another sync start?
        system.wait_idle()
        runs = len(system.invocations()) - before
        took = max(a["answered"] for a in answers) - min(a["sent"] for a in answers)
        print(f"\nwebhook burst: 50 pushes answered in {took:.2f} s, {made} request(s) in the spool, {runs} sync(s)")
        assert 1 <= runs <= 2, runs
        assert made <= runs  # each request made was answered by a sync of its own
        assert system.out("ls -A /var/spool/composeflux") == ""
        wait_until(lambda: webhook.requested() == requested + 50, 10, "the receiver's log of the burst")

    def test_the_receiver_exits_when_idle_and_the_socket_starts_it_again(self, system, webhook):
        system.sh(
            f"mkdir -p {WEBHOOK_DROPINS} && printf '[Service]\\nEnvironment=WEBHOOK_IDLE=3\\n' > {WEBHOOK_DROPINS}/cfx-e2e-idle.conf"
            f" && systemctl daemon-reload && systemctl stop {WEBHOOK_UNIT}"
        )
        assert system.prop("composeflux-webhook.socket", "SubState") == "listening"
        [answer] = webhook.post(webhook.delivery("github", ref="refs/heads/dev"))
        assert answer["status"] == 202, answer
        first = system.prop(WEBHOOK_UNIT, "InvocationID")
        wait_until(lambda: system.prop(WEBHOOK_UNIT, "ActiveState") == "inactive", 30, "the receiver to exit when idle")
        assert system.prop(WEBHOOK_UNIT, "Result") == "success" and system.prop(WEBHOOK_UNIT, "ExecMainStatus") == "0"
        assert system.prop("composeflux-webhook.socket", "SubState") == "listening"
        wait_until(lambda: "no request for 3 s: exiting (the socket starts it again)" in system.log_of(first), 10,
                   "the receiver's last log line")
        [again] = webhook.post(webhook.delivery("github", ref="refs/heads/dev"))
        assert again["status"] == 202, again
        assert system.prop(WEBHOOK_UNIT, "ActiveState") == "active"
        assert system.prop(WEBHOOK_UNIT, "InvocationID") != first


def test_systemd_analyze_verify_and_security(system):
    result = system.sh(
        "systemd-analyze verify composeflux.service composeflux.timer composeflux.path composeflux-sync.service"
        f" composeflux-update.service composeflux-update.timer {NOTIFY_UNIT} composeflux-webhook.socket {WEBHOOK_UNIT}",
        check=False,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    # The webhook receiver faces the network: held to a stricter bound than the others.
    for unit, bound in (("composeflux.service", 2.0), ("composeflux-update.service", 2.0), (NOTIFY_UNIT, 2.0), (WEBHOOK_UNIT, 1.5)):
        report = system.out(f"systemd-analyze security --no-pager {unit}")
        exposure = float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", report).group(1))
        print(f"\nsystemd-analyze security {unit}: {exposure}")
        assert exposure <= bound, report


def test_the_update_check_runs_under_its_unit(system):
    """`systemctl start composeflux-update` runs the check as the service user, in its sandbox,
    and it finishes (the e2e stacks use a local image without a registry digest: skipped)."""
    system.wait_idle()
    result = system.sh("systemctl start composeflux-update", check=False)
    log = system.out("journalctl -u composeflux-update --no-pager -n 20")
    assert result.returncode == 0, log
    assert "image updates:" in log and "skipped" in log, log


def test_upgrade_keeps_the_units_enabled_and_the_stacks_running(system):
    system.wait_idle()
    ids = {name: system.container_id(name) for name in ("web-web-1", "db-db-1")}
    system.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall /e2e/*.deb")
    for unit in ("composeflux.timer", "composeflux.path"):
        assert system.prop(unit, "UnitFileState") == "enabled"
        assert system.prop(unit, "ActiveState") == "active"
    assert system.out("stat -c '%a %U:%G' /etc/composeflux/composeflux.conf") == "640 root:composeflux"
    assert "GIT_REPO_URL=gitsrv@localhost" in system.out("cat /etc/composeflux/composeflux.conf")
    system.wait_idle()
    assert {name: system.container_id(name) for name in ids} == ids


def test_purge_leaves_the_running_stacks_alone(system):
    system.wait_idle()
    ids = {name: system.container_id(name) for name in ("web-web-1", "db-db-1")}
    system.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q composeflux")
    for name, container_id in ids.items():
        assert system.running(name) and system.container_id(name) == container_id
    for path in ("/etc/composeflux", "/var/lib/composeflux", "/var/spool/composeflux"):
        assert system.sh(f"test -e {path}", check=False).returncode != 0, f"{path} survived the purge"
    assert system.prop("composeflux.timer", "LoadState") == "not-found"
    assert system.out("systemctl is-active composeflux.timer composeflux.path || true").split() == ["inactive", "inactive"]
