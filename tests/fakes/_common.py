"""What the fake servers share: a threaded HTTP(S) server whose state lives in a JSON file.

A fake is started as its own process (the official SDKs hold the GIL in ways that would stall a
server thread in the test process):  python3 FAKE.py STATE.json [--tls CERT KEY]
It prints "listening on PORT" once ready, re-reads STATE.json on every request (so a test changes
the fake's secrets by rewriting the file) and appends "METHOD PATH?QUERY" lines to STATE.json.log.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state_path = ""

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def load_state(self) -> dict:
        with open(self.state_path, encoding="utf-8") as f:
            return json.load(f)

    def record(self) -> None:
        with open(self.state_path + ".log", "a", encoding="utf-8") as f:
            f.write(f"{self.command} {self.path}\n")

    @property
    def route(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True))

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.record()
        self.handle_request(self.load_state(), b"")

    def do_POST(self):
        self.record()
        body = self.body()
        self.handle_request(self.load_state(), body)

    def handle_request(self, state: dict, body: bytes) -> None:
        raise NotImplementedError


def serve(handler_class: type[FakeHandler]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("state")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    handler_class.state_path = args.state
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on {server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()
