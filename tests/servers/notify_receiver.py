"""An HTTP server on 127.0.0.1 that records every POST, for the notification tests.

Apprise's json:// and ntfy:// plugins POST a JSON document to it; the test reads what arrived:

    with NotifyReceiver() as receiver:          # a free port, picked by the kernel (no race)
        url = f"json://127.0.0.1:{receiver.port}/hook"
        ...
        [post] = receiver.posts                 # Post(path, headers, body): the raw bytes as sent

It answers every POST with 200 and `{}` (ntfy's plugin reads the answer as JSON), and anything
else with 405.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading


@dataclasses.dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record(Post(self.path, dict(self.headers.items()), body))
        answer = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self.send_error(405)

    do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # the tests read the posts, not a log


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.posts: list[Post] = []

    def record(self, post: Post) -> None:
        with self.lock:
            self.posts.append(post)


class NotifyReceiver:
    """The server, serving from a thread of its own until stop() (or the end of a with block)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"notify-receiver-{self.port}", daemon=True)

    def start(self) -> NotifyReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> NotifyReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def posts(self) -> list[Post]:
        """Every POST so far, in the order they arrived (a copy)."""
        with self._server.lock:
            return list(self._server.posts)

    def clear(self) -> None:
        with self._server.lock:
            self._server.posts.clear()

