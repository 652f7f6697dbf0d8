"""The webhook receiver over real TCP on 127.0.0.1: each forge's signed deliveries, the refusals,
the defensive limits (size, slow clients, the connection cap), a burst, ?wait=1 against a published
result, and the service as systemd starts it (a passed socket as fd 3, the exit when idle).

The receiver runs in this process (a thread) with short timeouts, or as `composeflux webhook` in a
subprocess; the spool and the result directory are temporary. No Docker, no systemd."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from composeflux import trigger, webhook
from composeflux.config import repository_identity
from tests.conftest import PYTHON, REPO_ROOT
from tests.fakes import forges

SECRET = b"7d3f9a0c51e84b62a9f0c3d7e1b5a28f"
FAST = webhook.Limits(header_timeout=1.0, body_timeout=1.0, linger=0.5)
PATIENT = 20.0  # seconds a test waits for something that should happen at once (never a timed assertion)


class Receiver:
    """A receiver on 127.0.0.1:<free port>, in a thread of this process."""

    def __init__(self, tmp_path: Path, forge: str = "github", limits: webhook.Limits = FAST, **changes):
        self.spool = tmp_path / "spool"
        self.results = tmp_path / "results"
        self.spool.mkdir(exist_ok=True)
        self.results.mkdir(exist_ok=True)
        self.settings = webhook.Settings(**{
            "repository": repository_identity(forges.repo_url(forge)), "branch": "main", "trigger_dir": self.spool,
            "result_dir": self.results, "secret": SECRET, "idle": 0, "wait_timeout": PATIENT, **changes,
        })
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.server = webhook.Server(self.settings, [self.listener], limits)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.stop()
        self.thread.join(PATIENT)
        self.listener.close()

    def requests(self) -> list[str]:
        return sorted(path.name for path in self.spool.iterdir())

    def post(self, headers: dict[str, str], body: bytes, target: str = "/") -> tuple[int, str]:
        return post(self.port, headers, body, target)

    def push(self, forge: str = "github", target: str = "/", **payload) -> tuple[int, str]:
        headers, body = forges.delivery(forge, forges.push_payload(forge, **payload), SECRET)
        return self.post(headers, body, target)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PATIENT)


def post(port: int, headers: dict[str, str], body: bytes, target: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENT)
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def receiver(tmp_path):
    made: list[Receiver] = []

    def start(**options) -> Receiver:
        made.append(Receiver(tmp_path, **options))
        return made[-1]

    yield start
    for running in made:
        running.close()


def read_answer(conn: socket.socket) -> bytes:
    """Everything the receiver sends until it closes (b"" when it just closed)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            data += chunk
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- each forge, the signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_signed_push_of_each_forge_asks_for_a_sync(receiver, forge):
    running = receiver(forge=forge)
    assert running.push(forge) == (202, "sync requested\n")
    assert len(running.requests()) == 1
    assert running.requests()[0].startswith(trigger.REQUEST_PREFIX)


@pytest.mark.parametrize("forge", ["github", "gitea", "gogs"])
def test_a_form_encoded_push_works_too(receiver, forge):
    running = receiver(forge=forge)
    headers, body = forges.delivery(forge, forges.push_payload(forge), SECRET, form=True)
    assert running.post(headers, body)[0] == 202
    assert len(running.requests()) == 1


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_wrong_secret_is_401_and_asks_for_nothing(receiver, forge, caplog):
    running = receiver(forge=forge)
    headers, body = forges.delivery(forge, forges.push_payload(forge), b"guessed-secret-0000")
    assert running.post(headers, body) == (401, "unauthorized\n")
    assert running.requests() == []
    logged = caplog.text
    assert SECRET.decode() not in logged and "guessed" not in logged
    assert all(value not in logged for name, value in headers.items() if "signature" in name.lower() or "token" in name.lower())


@pytest.mark.parametrize("forge", forges.FORGES)
def test_no_signature_is_401(receiver, forge):
    running = receiver(forge=forge)
    headers, body = forges.delivery(forge, forges.push_payload(forge), None)
    assert running.post(headers, body) == (401, "unauthorized\n")
    assert running.requests() == []


def test_a_push_to_another_branch_or_a_tag_is_ignored(receiver):
    running = receiver(forge="gitea")
    status, text = running.push("gitea", ref="refs/heads/dev")
    assert (status, text) == (202, "ignored: refs/heads/dev is not refs/heads/main\n")
    assert running.push("gitea", ref="refs/tags/v2")[0] == 202
    assert running.requests() == []


def test_github_ping_is_200_and_asks_for_nothing(receiver):
    running = receiver()
    headers, body = forges.delivery("github", forges.ping_payload(), SECRET, event="ping")
    status, text = running.post(headers, body)
    assert status == 200 and text.startswith("pong")
    assert running.requests() == []


def test_signed_but_malformed_json_is_400(receiver):
    running = receiver()
    body = b'{"ref": "refs/heads/main", '
    assert running.post(forges.headers_for("github", body, SECRET), body)[0] == 400
    assert running.requests() == []


def test_the_log_has_event_branch_and_commit_and_nothing_else_of_the_body(receiver, caplog):
    running = receiver()
    caplog.set_level("INFO")
    assert running.push()[0] == 202
    line = next(record.getMessage() for record in caplog.records if "sync requested" in record.getMessage())
    assert "github push to refs/heads/main" in line and forges.COMMIT[:12] in line
    assert "kim" not in caplog.text and "nginx" not in caplog.text and "sha256=" not in caplog.text


# -- HTTP: methods, lengths, malformed requests ------------------------------------------------------------


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"POST /\x01 HTTP/1.1\r\n\r\n", 400),
    (b"hello\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", 431),
])
def test_refused_requests(receiver, request_bytes, status):
    running = receiver()
    with running.connect() as conn:
        conn.sendall(request_bytes)
        answer = read_answer(conn)
    assert status_of(answer) == status
    assert running.requests() == []


def test_head_gets_405_without_a_body(receiver):
    running = receiver()
    with running.connect() as conn:
        conn.sendall(b"HEAD / HTTP/1.1\r\n\r\n")
        answer = read_answer(conn)
    assert status_of(answer) == 405
    assert answer.endswith(b"\r\n\r\n")


def test_an_oversized_body_is_413_before_it_is_sent(receiver):
    """Content-Length above 1 MiB: the answer comes before the body, which is never read."""
    running = receiver()
    with running.connect() as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nX-GitHub-Event: push\r\nContent-Length: %d\r\n\r\n{" % (64 << 20))
        answer = read_answer(conn)  # sent 1 byte of 64 MiB: the receiver does not wait for the rest
    assert status_of(answer) == 413
    assert running.requests() == []


def test_an_oversized_body_with_expect_gets_413_and_no_100_continue(receiver):
    running = receiver()
    with running.connect() as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % ((1 << 20) + 1))
        answer = read_answer(conn)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_expect_100_continue_is_honoured(receiver):
    running = receiver()
    headers, body = forges.delivery("github", forges.push_payload("github"), SECRET)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with running.connect() as conn:
        conn.sendall(f"POST / HTTP/1.1\r\n{head}Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert conn.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(body)
        assert status_of(read_answer(conn)) == 202
    assert len(running.requests()) == 1


def test_a_body_of_exactly_1_mib_is_read(receiver):
    running = receiver()
    payload = forges.push_payload("github")
    text = json.dumps(payload)
    payload["padding"] = "x" * ((1 << 20) - len(text) - len(', "padding": ""'))
    headers, body = forges.delivery("github", payload, SECRET)
    body = json.dumps(payload).encode()
    assert len(body) == 1 << 20
    headers = forges.headers_for("github", body, SECRET)
    assert running.post(headers, body)[0] == 202


# -- slow clients ------------------------------------------------------------------------------------------


def trickle(conn: socket.socket, data: bytes) -> bytes:
    """Send ``data`` a byte every 0.1 s until the receiver gives up on us; what it answered."""
    for byte in data:
        try:
            conn.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.1)
    return read_answer(conn)


def test_headers_trickling_in_are_cut_off_and_others_are_still_served(receiver):
    running = receiver()
    with running.connect() as slow:
        result: dict[str, bytes] = {}
        thread = threading.Thread(target=lambda: result.update(answer=trickle(slow, b"POST / HTTP/1.1\r\nX-A: " + b"a" * 400)))
        thread.start()
        assert running.push()[0] == 202  # served meanwhile
        thread.join(PATIENT)
        assert not thread.is_alive(), "the receiver kept a trickling client"
    assert result["answer"] == b"" or status_of(result["answer"]) == 408


def test_a_body_that_stalls_is_cut_off_and_others_are_still_served(receiver):
    running = receiver()
    headers, body = forges.delivery("github", forges.push_payload("github"), SECRET)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with running.connect() as stalled:
        stalled.sendall(f"POST / HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        assert running.push()[0] == 202
        answer = read_answer(stalled)  # returns once the receiver gives up on the rest of the body
    assert status_of(answer) == 408
    assert len(running.requests()) == 1  # the stalled push asked for nothing


def test_a_client_that_connects_and_says_nothing_is_cut_off(receiver):
    running = receiver()
    with running.connect() as idle:
        assert status_of(read_answer(idle)) == 408


# -- load: the connection cap, a burst ---------------------------------------------------------------------


def test_the_17th_connection_gets_503_at_once_and_service_resumes(receiver):
    running = receiver(limits=webhook.Limits(header_timeout=PATIENT, linger=0.2))
    held = [running.connect() for _ in range(16)]
    try:
        for conn in held:
            conn.sendall(b"POST / HTTP/1.1\r\n")  # and nothing more: each holds its slot
        deadline = time.monotonic() + PATIENT
        while running.server._active < 16 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the receiver has taken them all on
        with running.connect() as extra:
            extra.sendall(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            answer = read_answer(extra)
        assert status_of(answer) == 503
        assert b"Retry-After: 1" in answer
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + PATIENT
    while (status := running.push()[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)  # the slots come free as the receiver sees the closed connections
    assert status == 202


def test_a_burst_of_50_pushes_leaves_one_request_for_one_sync(receiver):
    """50 signed pushes at once, 16 at a time: all accepted, and the spool holds one request, so
    composeflux.path starts one sync (which drains it) and no more."""
    running = receiver()
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: running.push()[0], range(50)))
    assert statuses.count(202) == 50
    assert len(running.requests()) == 1
    # The sync: drains the spool first; the path unit finds it empty afterwards, no second sync.
    assert trigger.drain_requests(running.spool) == 1
    assert not trigger.has_pending_request(running.spool)
    # A push while that sync runs (the spool drained) asks for exactly one more.
    assert running.push() == (202, "sync requested\n")
    assert running.push() == (202, "a sync is already requested\n")
    assert len(running.requests()) == 1


# -- ?wait=1 -------------------------------------------------------------------------------------------------


def wait_request(running: Receiver) -> tuple[threading.Thread, dict[str, tuple[int, str]]]:
    answer: dict[str, tuple[int, str]] = {}
    thread = threading.Thread(target=lambda: answer.update(result=running.push(target="/?wait=1")))
    thread.start()
    deadline = time.monotonic() + PATIENT
    while not running.requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.requests(), "the push asked for no sync"
    return thread, answer


def sync_result(outcome: str = "ok", **changes) -> dict:
    now = time.time()
    return {"started": now, "finished": now + 0.5, "status": 0 if outcome == "ok" else 1, "result": outcome,
            "summary": "1 deployed, 2 unchanged", "failed": {}, **changes}


def test_wait_answers_with_the_syncs_summary(receiver):
    running = receiver()
    trigger.publish_result(running.results, {**sync_result(), "started": time.time() - 60, "summary": "an old sync"})
    thread, answer = wait_request(running)
    trigger.drain_requests(running.spool)  # the sync starts: drains, runs, publishes
    trigger.publish_result(running.results, sync_result())
    thread.join(PATIENT)
    assert answer["result"] == (200, "sync ok: 1 deployed, 2 unchanged\n")


def test_wait_answers_500_naming_the_failed_stacks(receiver):
    running = receiver()
    thread, answer = wait_request(running)
    trigger.drain_requests(running.spool)
    trigger.publish_result(running.results, sync_result(
        "failed", summary="1 deployed, 1 failed (web: health gate)", failed={"web": "health gate: unhealthy after 120 s"}))
    thread.join(PATIENT)
    status, text = answer["result"]
    assert status == 500
    assert text.splitlines() == ["sync failed (exit status 1): 1 deployed, 1 failed (web: health gate)",
                                 "web: health gate: unhealthy after 120 s"]


def test_wait_gives_up_after_webhook_wait_timeout(receiver):
    running = receiver(wait_timeout=0.3)
    assert running.push(target="/?wait=1") == (202, "sync requested; no result yet\n")


def test_wait_is_not_for_ignored_pushes(receiver):
    running = receiver()
    assert running.push(target="/?wait=1", ref="refs/heads/dev")[0] == 202


# -- the service: a passed socket, the exit when idle; --listen -------------------------------------------------


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "LC_ALL": "C.UTF-8", "HOME": str(tmp_path)}
    return {**env, **extra}


def test_socket_activation_serves_the_passed_socket_and_exits_when_idle(tmp_path):
    """As composeflux-webhook.service: the listening socket arrives as fd 3 (LISTEN_FDS=1,
    LISTEN_PID), webhook.json and the credential come from its directories; after WEBHOOK_IDLE
    without a request it exits 0, and the socket (systemd's) still listens."""
    spool, results, run, credentials = (tmp_path / name for name in ("spool", "results", "run", "credentials"))
    for directory in (spool, results, run, credentials):
        directory.mkdir()
    (credentials / "WEBHOOK_SECRET").write_bytes(SECRET + b"\n")
    (run / "webhook.json").write_text(json.dumps({
        "repository": repository_identity(forges.repo_url("gitlab")), "branch": "main", "trigger_dir": str(spool),
        "result_dir": str(results)}))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    env = environment(tmp_path, LISTEN_FDS="1", RUNTIME_DIRECTORY=str(run), CREDENTIALS_DIRECTORY=str(credentials),
                      WEBHOOK_IDLE="1")
    # What systemd does between fork and exec: the socket on fd 3, LISTEN_PID the pid that exec keeps.
    launcher = (f"import os, sys; os.dup2({fd}, 3); os.close({fd}); os.environ['LISTEN_PID'] = str(os.getpid()); "
                "os.execv(sys.executable, [sys.executable, '-m', 'composeflux', 'webhook'])")
    process = subprocess.Popen([PYTHON, "-c", launcher], env=env, pass_fds=(fd,), stderr=subprocess.PIPE, text=True)
    try:
        headers, body = forges.delivery("gitlab", forges.push_payload("gitlab"), SECRET)
        assert post(port, headers, body) == (202, "sync requested\n")
        assert len(list(spool.iterdir())) == 1
        process.wait(timeout=PATIENT)  # WEBHOOK_IDLE=1: it exits on its own
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate()[1]
    assert process.returncode == 0, stderr
    assert "no request for 1 s: exiting" in stderr
    assert SECRET.decode() not in stderr
    # The socket systemd holds is not shut down by the exit: a new connection waits for the next start.
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENT):
        pass
    listener.close()


def test_listen_mode_reads_composeflux_conf_and_the_environments_secret(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    conf = tmp_path / "composeflux.conf"
    conf.write_text(f"GIT_REPO_URL=https://x-access-token:ghp_t0ken0000@github.com/home/stacks.git\nSTACK_PATH=.\nTRIGGER_DIR={spool}\n")
    env = environment(tmp_path, WEBHOOK_SECRET=SECRET.decode(), WEBHOOK_IDLE="1")
    process = subprocess.Popen([PYTHON, "-m", "composeflux", "--config", str(conf), "webhook", "--listen", "127.0.0.1:0"],
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert "github.com/home/stacks" in line and "t0ken" not in line
        headers, body = forges.delivery("github", forges.push_payload("github"), SECRET)
        assert post(port, headers, body) == (202, "sync requested\n")
        process.wait(timeout=PATIENT)
    finally:
        if process.poll() is None:
            process.kill()
        rest = process.communicate()[1]
    assert process.returncode == 0, rest
    assert len(list(spool.iterdir())) == 1
    assert SECRET.decode() not in rest


def test_the_service_refuses_to_start_without_its_secret(tmp_path):
    env = environment(tmp_path, RUNTIME_DIRECTORY=str(tmp_path))
    result = subprocess.run([PYTHON, "-m", "composeflux", "webhook"], env=env, capture_output=True, text=True, timeout=PATIENT)
    assert result.returncode == 3
    assert "WEBHOOK_SECRET" in result.stderr and "LoadCredential" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_a_member_of_the_trigger_group_only_can_request():
    """The spool as the package makes it (2770, a group of its own): a receiver running as nobody
    with that group adds requests; the same receiver without the group gets 500 and a log line."""
    with tempfile.TemporaryDirectory(prefix="cfx-webhook-") as top:  # pytest's tmp_path is root's alone
        os.chmod(top, 0o755)
        spool = Path(top, "spool")
        spool.mkdir()
        _requests_as_nobody(spool, Path(top))


def _requests_as_nobody(spool: Path, tmp_path: Path) -> None:
    group = 64999
    os.chown(spool, 0, group)
    spool.chmod(0o2770)
    results = {}
    for groups in ([group], []):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups(groups)
                os.setgid(65534)
                os.setuid(65534)
                settings = webhook.Settings(repository=repository_identity(forges.repo_url("github")), branch="main",
                                            trigger_dir=spool, result_dir=tmp_path, secret=SECRET, idle=0)
                receiver = webhook.Receiver(settings)
                headers, body = forges.delivery("github", forges.push_payload("github"), SECRET)
                head = webhook.Head("POST", "/", "HTTP/1.1", {name.lower(): value for name, value in headers.items()})
                code = {202: 10, 500: 20}.get(receiver.deliver(head, body, "test").status, 1)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        results[bool(groups)] = os.waitstatus_to_exitcode(status)
    assert results == {True: 10, False: 20}
    assert len(list(spool.iterdir())) == 1
