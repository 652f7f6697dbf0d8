"""No credential reaches any output: a failing sync with a password inside GIT_REPO_URL, an HTTPS
token and each provider's credentials set (servers that echo what they were sent back in their
error messages) prints none of them, in any escaped form, to stderr (text and JSON), stdout,
the state file or sd_notify STATUS."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import threading
import urllib.parse
import uuid

import pytest

from composeflux.errors import ExitStatus
from composeflux.masking import escaped_forms
from tests.conftest import free_port

URL_PASSWORD = "p@ss/w:rd 9"
TOKEN = "tok-4f1a9c2e7b"
INFISICAL_ID = "client-id-7d3e51"
INFISICAL_SECRET = 'sec"ret\\0x91-zz'
BITWARDEN_CLIENT_SECRET = "bwsecret+/=7Hq2"
BITWARDEN_TOKEN = f"0.{uuid.UUID(int=7)}.{BITWARDEN_CLIENT_SECRET}:" + base64.b64encode(b"0123456789abcdef").decode()
COMMAND_SECRET = "cmd-s3cret-value"
FILE_SECRET = "file-s3cret-value"


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request 401 with its body and Authorization header quoted in the error."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace")
        answer = json.dumps({"error": self.headers.get("Authorization", "none"), "message": body}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def received(sock) -> str:
    messages = []
    while True:
        try:
            messages.append(sock.recv(65536).decode())
        except BlockingIOError:
            return "\n".join(messages)


def forbidden() -> dict[str, str]:
    """Every credential form that must never be shown."""
    values = [URL_PASSWORD, TOKEN, INFISICAL_ID, INFISICAL_SECRET, BITWARDEN_TOKEN, BITWARDEN_CLIENT_SECRET]
    values += [COMMAND_SECRET, FILE_SECRET]
    forms = {form: value for value in values for form in escaped_forms(value)}
    forms[base64.b64encode(f"bot:{TOKEN}".encode()).decode()] = "basic auth header"
    return forms


def scenarios(echo: str, tmp_path) -> dict[str, dict[str, str]]:
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"DB_PASSWORD={FILE_SECRET}\n")
    os.chmod(secrets_file, 0o600)
    return {
        "infisical": {
            "SECRETS_PROVIDER": "infisical", "INFISICAL_CLIENT_ID": INFISICAL_ID, "INFISICAL_CLIENT_SECRET": INFISICAL_SECRET,
            "INFISICAL_PROJECT_ID": "p1", "INFISICAL_ENVIRONMENT": "prod", "INFISICAL_SITE_URL": echo,
        },
        "bitwarden": {
            "SECRETS_PROVIDER": "bitwarden", "BITWARDEN_ACCESS_TOKEN": BITWARDEN_TOKEN, "BITWARDEN_PROJECT_ID": str(uuid.UUID(int=9)),
            "BITWARDEN_API_URL": echo, "BITWARDEN_IDENTITY_URL": echo,
        },
        # These two succeed, so the sync goes on to Git, which fails (nothing listens there).
        "command": {
            "SECRETS_PROVIDER": "command",
            "SECRETS_COMMAND": f"echo 'APP_KEY={COMMAND_SECRET}'; echo 'warning: got {COMMAND_SECRET}' >&2",
        },
        "file": {"SECRETS_PROVIDER": "file", "SECRETS_FILE": str(secrets_file)},
    }


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("provider", ["infisical", "bitwarden", "command", "file"])
def test_no_credential_reaches_any_output(cfx, repo, tmp_path, echo_server, notify_socket, capsys, provider, log_format):
    repo.add_stack("web")
    repo.commit()
    settings = {
        **scenarios(echo_server, tmp_path)[provider],
        # The password as a user writes it into a URL: percent-encoded where it must be.
        "GIT_REPO_URL": f"http://bot:{urllib.parse.quote(URL_PASSWORD, safe=':')}@127.0.0.1:{free_port()}/stacks.git",
        "GIT_TOKEN": TOKEN,
        "GIT_USERNAME": "bot",
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": "DEBUG",
    }
    status = cfx(**settings)
    assert status in (ExitStatus.SECRETS, ExitStatus.GIT)
    if provider in ("command", "file"):
        assert status is ExitStatus.GIT
    captured = capsys.readouterr()
    outputs = {
        "stderr": captured.err,
        "stdout": captured.out + cfx.out,
        "state": (cfx.state_dir / "state.json").read_text(),
        "sd_notify": received(notify_socket),
    }
    if provider != "file":  # these put a credential at risk: the server or the command echoes it
        assert "***" in outputs["stderr"]
    for where, text in outputs.items():
        for form, value in forbidden().items():
            assert form not in text, f"{value!r} shown as {form!r} in {where}:\n{text}"
    assert "STATUS=" in outputs["sd_notify"]
