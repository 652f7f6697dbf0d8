"""The Engine API client (dockerapi.py) against a small HTTP server on a Unix socket of the
test's own: what goes on the wire (unversioned paths, JSON filters, bodies), what comes back
(JSON, errors with the engine's message, 404 as NotFound), an engine that is not there, and a
kept-alive connection the engine closed. The real engine is spoken to by the integration tests
(every sync reads and claims through it)."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from pathlib import Path

import pytest

from composeflux.dockerapi import Client, EngineAPIError, EngineUnreachable, NotFound


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path):
        self.seen: list[tuple[str, str, bytes]] = []
        self.close_after_each = False
        super().__init__(str(path), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    server: Engine

    def log_message(self, format: str, *args: object) -> None:  # the base class's name
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, body))
        path = self.path.split("?")[0]
        if path == "/containers/json":
            status, answer = 200, [{"Id": "abc", "Labels": {"x": "1"}}]
        elif path == "/volumes/create":
            status, answer = 201, {"Name": json.loads(body)["Name"], "Labels": json.loads(body)["Labels"]}
        elif path.startswith("/containers/gone"):
            status, answer = 404, {"message": "No such container: gone"}
        elif path == "/broken":
            status, answer = 500, {"message": "something broke"}
        else:
            status, answer = 204, None
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.close_after_each:
            self.close_connection = True  # without saying so: the client believes the connection is kept
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def engine(tmp_path):
    server = Engine(tmp_path / "docker.sock")
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client_for(engine: Engine) -> Client:
    return Client({"DOCKER_HOST": f"unix://{engine.server_address}"})


def test_a_listing_goes_to_the_unversioned_path_with_json_filters(engine):
    with client_for(engine) as client:
        listing = client.get("/containers/json", all=1, filters={"label": ["com.docker.compose.project"]})
    assert listing == [{"Id": "abc", "Labels": {"x": "1"}}]
    method, path, _ = engine.seen[0]
    assert method == "GET"
    assert path == "/containers/json?all=1&filters=%7B%22label%22%3A+%5B%22com.docker.compose.project%22%5D%7D"


def test_one_connection_serves_several_requests_and_bodies_are_json(engine):
    with client_for(engine) as client:
        volume = client.request("POST", "/volumes/create", body={"Name": "web_composeflux-claim", "Labels": {"a": "b"}})
        assert client.request("DELETE", "/volumes/web_composeflux-claim") is None  # 204: nothing to decode
    assert volume == {"Name": "web_composeflux-claim", "Labels": {"a": "b"}}
    assert [(m, p) for m, p, _ in engine.seen] == [("POST", "/volumes/create"), ("DELETE", "/volumes/web_composeflux-claim")]


def test_errors_carry_the_engines_message_and_404_is_not_found(engine):
    with client_for(engine) as client:
        with pytest.raises(NotFound, match="No such container: gone") as missing:
            client.get("/containers/gone/json")
        assert missing.value.status == 404
        with pytest.raises(EngineAPIError, match="something broke") as broken:
            client.get("/broken")
        assert broken.value.status == 500 and not isinstance(broken.value, NotFound)


def test_a_connection_the_engine_closed_is_opened_again_for_a_read(engine):
    engine.close_after_each = True
    with client_for(engine) as client:
        assert client.get("/containers/json")
        assert client.get("/containers/json")  # the kept connection is gone: a new one, once
        with pytest.raises(EngineUnreachable, match=r"the Docker engine at unix://.* closed the connection"):
            client.request("POST", "/containers/abc/restart")  # not a read: never sent twice
    assert len(engine.seen) == 2


def test_no_engine_is_engine_unreachable_naming_where(tmp_path):
    with pytest.raises(EngineUnreachable, match=rf"cannot connect to the Docker engine at unix://{tmp_path}/none.sock: "
                                                 "No such file or directory"):
        Client({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}).get("/containers/json")


def test_docker_host_forms(tmp_path):
    assert Client({}).host == "unix:///var/run/docker.sock"
    assert Client({"DOCKER_HOST": "tcp://127.0.0.1:1"}).host == "tcp://127.0.0.1:1"
    with pytest.raises(EngineUnreachable, match=r"cannot connect to the Docker engine at tcp://127\.0\.0\.1:1"):
        Client({"DOCKER_HOST": "tcp://127.0.0.1:1"}).get("/info")
    with pytest.raises(EngineUnreachable, match=r"DOCKER_HOST=ssh://me@host is not supported"):
        Client({"DOCKER_HOST": "ssh://me@host"})
    with pytest.raises(EngineUnreachable, match=rf"cannot load the TLS certificates for DOCKER_HOST from {tmp_path}"):
        Client({"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
