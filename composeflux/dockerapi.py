"""The Docker Engine API, spoken directly over its socket with the standard library.

Why not the Docker SDK (python3-docker): composeflux reads a handful of endpoints (list, inspect,
restart, volumes, networks, images, info), and on Debian 12 importing the SDK alone took 0.26 s
of a 0.39 s no-op sync (it pulls in requests, urllib3 and, through distutils, setuptools), and
`docker.from_env(version="auto")` asks the engine for its API version on every client. One
listing over the Unix socket from this module costs about 20 ms, import included (the figures
are in bench/compare.py's output and the README's benchmark section).

Requests go to unversioned paths (`/containers/json`): the engine answers them at its own API
version, so no version round trip and no minimum to fall under as engines drop old versions.
Every field read here is in every API version since 1.25.

DOCKER_HOST is honoured as the Docker CLI and `docker compose` honour it: unset or
`unix:///path` (the default socket /var/run/docker.sock), or `tcp://host:port` (TLS when
DOCKER_TLS_VERIFY is set, with ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH, default
~/.docker). Other schemes (ssh://) are refused with a clear error: composeflux runs on the host.

Errors: EngineAPIError (the engine answered with an error, `status` and its message), its
subclass NotFound (404), and EngineUnreachable (no connection, a broken or timed-out exchange).
Callers turn them into EngineError with what they were doing.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT = 60.0  # seconds for one exchange (a restart adds the container's own stop timeout)


class EngineAPIError(Exception):
    """The engine answered with an error status; the message is the engine's own."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class NotFound(EngineAPIError):
    """404: no such container, image, volume or network."""


class EngineUnreachable(Exception):
    """No answer from the engine: the socket is missing, refused, or the exchange broke or timed out."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class Client:
    """One connection to the engine, kept alive for the requests of one caller; not shared
    between threads (each thread makes its own, which costs a connect on a local socket)."""

    def __init__(self, environ: Mapping[str, str] | None = None, timeout: float = TIMEOUT):
        environ = os.environ if environ is None else environ
        self.timeout = timeout
        self.host = environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        url = urllib.parse.urlsplit(self.host)
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "unix":
            self._socket = url.path or DEFAULT_SOCKET
        elif url.scheme == "tcp" and url.hostname:
            self._socket = ""
            self._address = (url.hostname, url.port or (2376 if environ.get("DOCKER_TLS_VERIFY") else 2375))
            if environ.get("DOCKER_TLS_VERIFY"):
                self._tls = _tls_context(Path(environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker"))
        else:
            raise EngineUnreachable(f"DOCKER_HOST={self.host} is not supported (use unix:///path or tcp://host:port)")
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._socket:
            return _UnixConnection(self._socket, timeout)
        host, port = self._address
        if self._tls is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params)

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None, body: Any = None,
                timeout: float | None = None) -> Any:
        """One exchange; the decoded JSON answer (None for an empty one). `params` values that
        are dicts (filters) are sent JSON-encoded, as the API wants them."""
        query = urllib.parse.urlencode(
            {key: json.dumps(value) if isinstance(value, dict) else value for key, value in (params or {}).items() if value is not None}
        )
        target = urllib.parse.quote(path) + (f"?{query}" if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None or timeout is not None:
                self.close()
                self._connection = self._connect(timeout or self.timeout)
            try:
                self._connection.request(method, target, body=payload, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1 and method == "GET":
                    continue  # the engine closed an idle kept-alive connection: once more on a new one
                raise EngineUnreachable(f"the Docker engine at {self.host} closed the connection ({_describe(exc)})") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise EngineUnreachable(f"cannot connect to the Docker engine at {self.host}: {_describe(exc)}") from None
            if timeout is not None:
                self.close()  # a connection with its own timeout is not kept
            break
        if response.status >= 400:
            raise (NotFound if response.status == 404 else EngineAPIError)(response.status, _message(data, response.status))
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise EngineUnreachable(f"{self.host}: the answer to {method} {path} is not JSON") from None


def _message(data: bytes, status: int) -> str:
    try:
        message = json.loads(data).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else (data.decode(errors="replace").strip() or f"HTTP {status}")


def _tls_context(certs: Path) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    except (OSError, ssl.SSLError) as exc:
        raise EngineUnreachable(f"cannot load the TLS certificates for DOCKER_HOST from {certs}: {_describe(exc)}") from None
    return context
