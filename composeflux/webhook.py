"""`composeflux webhook`: a signed push from the forge asks for a sync, as `composeflux trigger` does.

composeflux-webhook.socket (off by default; ListenStream=127.0.0.1:9417) starts
composeflux-webhook.service on the first connection, which serves until no request came for
WEBHOOK_IDLE seconds (120) and exits: nothing is resident between pushes. The service runs as a
dynamic user in the group composeflux-trigger: it may add a request to the trigger spool and read
the last sync's result, nothing else. It has no Docker socket, no network of its own (the
listening socket comes from systemd), no deploy key, no token, and it never reads composeflux.conf:
`composeflux webhook --prepare`, run as root before it (ExecStartPre=+), extracts the repository's
identity (host/path, without credentials), GIT_BRANCH and TRIGGER_DIR into
$RUNTIME_DIRECTORY/webhook.json. The secret shared with the forge is the credential
WEBHOOK_SECRET (LoadCredential=).

The protocol, for GitHub, Gitea, Forgejo, Gogs and GitLab:

- Only POST (405), with a Content-Length (411: no chunked bodies) of at most 1 MiB (413, answered
  before the body is read), headers within 10 s and the body within 10 s more (408 and cut off),
  at most 16 connections at a time (the 17th gets 503 at once), one request per connection.
- The signature is checked over the raw body before anything of it is parsed, in constant time:
  X-Hub-Signature-256 (sha256=<hex HMAC-SHA256>; GitHub, and Gitea, Forgejo, Gogs send it too),
  X-Forgejo-Signature, X-Gitea-Signature, X-Gogs-Signature (hex HMAC-SHA256), X-Gitlab-Token
  (the secret itself). None, or a wrong one: 401, with no detail.
- A push (X-GitHub-Event / X-Forgejo-Event / X-Gitea-Event / X-Gogs-Event: push; X-Gitlab-Event:
  Push Hook, or System Hook of a push) to refs/heads/<GIT_BRANCH> of the configured repository
  (its clone, SSH or web URL in the payload, compared through config.repository_identity):
  a request in the spool, 202. The test buttons of Gitea, Forgejo, Gogs and GitLab send such a
  push (of the latest commit), so they ask for a sync too; GitHub's ping: 200.
- Anything else that is signed gets 202 "ignored" with the reason: another event, a tag, another
  branch, a deleted branch, and another repository (an organisation's or group's webhook sends
  the pushes of all its repositories; a 4xx would have the forge count them as failed deliveries,
  and GitLab disables a webhook that keeps failing).
- ?wait=1: the answer waits for the sync (at most WEBHOOK_WAIT_TIMEOUT, 600 s) and is its result:
  200 with the summary, 500 with the stacks that failed, or 202 when none came in time. For a CI
  job's curl; a forge gives up after about 10 s and counts a 500 against the webhook.

Nothing of the body is logged but the event, the branch and the commit; no header's signature or
token, never the secret.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from composeflux import config as configuration, trigger
from composeflux.atomic import replace_file
from composeflux.errors import ConfigError, ExitStatus
from composeflux.settings import seconds

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9417"  # composeflux-webhook.socket's ListenStream=
DEFAULT_RUNTIME_DIR = Path("/run/composeflux-webhook")  # its RuntimeDirectory=
PREPARED_FILE = "webhook.json"
SECRET_KEY = "WEBHOOK_SECRET"
DEFAULT_SECRET_FILE = Path("/etc/composeflux/webhook-secret")  # LoadCredential=WEBHOOK_SECRET:...
DEFAULT_IDLE = 120.0
DEFAULT_WAIT_TIMEOUT = 600.0
# The receiver's own settings: the environment of its unit (a drop-in's Environment=), never
# composeflux.conf, which it does not read.
IDLE_KEY = "WEBHOOK_IDLE"
WAIT_TIMEOUT_KEY = "WEBHOOK_WAIT_TIMEOUT"
REPOSITORY_KEY = "WEBHOOK_REPOSITORY"  # the repository as the forge names it, when GIT_REPO_URL reaches it otherwise

NULL_COMMIT = re.compile(r"^0+$")
COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP method or header name
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9 _.:-]{1,64}$")
DELIVERY = re.compile(r"^[A-Za-z0-9-]{1,64}$")

REASONS = {
    100: "Continue", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}
# Headers that must come once: two of them are an ambiguity an attacker would like.
SINGLE_HEADERS = frozenset({
    "content-length", "transfer-encoding", "content-type", "expect", "x-hub-signature-256", "x-forgejo-signature",
    "x-gitea-signature", "x-gogs-signature", "x-gitlab-token", "x-github-event", "x-forgejo-event", "x-gitea-event",
    "x-gogs-event", "x-gitlab-event",
})
# Hex HMAC-SHA256 of the body, in the order they are looked at (Forgejo sends all four, Gitea three).
HMAC_HEADERS = ("x-hub-signature-256", "x-forgejo-signature", "x-gitea-signature", "x-gogs-signature")
GITLAB_TOKEN = "x-gitlab-token"
# The event header of each forge, the most specific first: Forgejo sends X-Forgejo-, X-Gitea-,
# X-Gogs- and X-GitHub-Event, Gitea all but the first.
EVENT_HEADERS = (
    ("gitlab", "x-gitlab-event"), ("forgejo", "x-forgejo-event"), ("gitea", "x-gitea-event"),
    ("gogs", "x-gogs-event"), ("github", "x-github-event"),
)
DELIVERY_HEADERS = ("x-github-delivery", "x-forgejo-delivery", "x-gitea-delivery", "x-gogs-delivery", "x-gitlab-event-uuid")
# Where a payload names its repository: GitHub-like forges, then GitLab's project and repository.
GITHUB_URLS = ("clone_url", "ssh_url", "html_url", "git_url")
GITLAB_URLS = ("git_http_url", "git_ssh_url", "web_url", "homepage", "url", "http_url", "ssh_url")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the receiver knows: no credential but its own secret."""

    repository: str  # config.repository_identity of the repository this host deploys (host/path)
    branch: str  # GIT_BRANCH
    trigger_dir: Path
    result_dir: Path
    secret: bytes = dataclasses.field(repr=False)
    idle: float = DEFAULT_IDLE  # seconds without a request before the service exits; 0: never
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT  # ?wait=1


@dataclasses.dataclass(frozen=True)
class Limits:
    """The defensive bounds of the HTTP side (the tests make the timeouts short)."""

    max_body: int = 1 << 20
    max_head: int = 16 << 10  # request line and headers
    max_headers: int = 100
    header_timeout: float = 10.0  # from the connection to the end of the headers
    body_timeout: float = 10.0  # from there to the end of the body
    send_timeout: float = 10.0  # to hand the answer over
    linger: float = 2.0  # reading what a client still sends after the answer, so that closing resets nothing
    max_connections: int = 16  # served at a time; beyond: 503 (as many again), then closed at once


# -- the forges' side: signatures, events, payloads (pure) ----------------------------------------


def signature_valid(headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    """True when the request carries a valid signature of ``body`` (or GitLab's token); headers
    are keyed by lower-case name. The first signature header present is the one checked."""
    if not secret:
        return False
    for name in HMAC_HEADERS:
        if name in headers:
            given = headers[name].strip()
            if name == "x-hub-signature-256":
                if given[:7].lower() != "sha256=":
                    return False
                given = given[7:]
            expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
            return hmac.compare_digest(expected, given.lower().encode("latin-1"))
    if GITLAB_TOKEN in headers:
        return hmac.compare_digest(secret, headers[GITLAB_TOKEN].encode("latin-1"))
    return False


@dataclasses.dataclass(frozen=True)
class Event:
    """One delivery, as far as the receiver cares."""

    forge: str  # github, gitea, forgejo, gogs, gitlab
    name: str  # the event header's value (printable, short)
    kind: str  # "push", "ping" or "other"
    ref: str | None = None  # a push's ref
    commit: str | None = None  # a push's new head (hex), None when it deletes the ref
    repositories: frozenset[str] = frozenset()  # a push's repository, as identities of the URLs the payload gives


class BadRequest(ValueError):
    """The request is malformed (400); the message may be shown to a client that signed it."""


def identify(headers: Mapping[str, str]) -> tuple[str, str]:
    """(forge, event name) from the event headers; BadRequest without one."""
    for forge, header in EVENT_HEADERS:
        if header in headers:
            name = headers[header].strip()
            if not EVENT_NAME.match(name):
                raise BadRequest("unreadable event header")
            return forge, name
    raise BadRequest("no event header (X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event, X-Gogs-Event or X-Gitlab-Event)")


def parse_event(headers: Mapping[str, str], payload: Any) -> Event:
    """The event a signed delivery announces, with a push's ref, commit and repository."""
    forge, name = identify(headers)
    if not isinstance(payload, dict):
        raise BadRequest("the payload is not a JSON object")
    fields: tuple[str, ...]
    if forge == "gitlab":
        # A tag push is read as a push too: its ref (refs/tags/...) has it ignored as a tag.
        pushes = ("Push Hook", "Tag Push Hook")
        if name not in pushes and not (name == "System Hook" and payload.get("object_kind") in ("push", "tag_push")):
            return Event(forge, name, "other")
        sources = [payload.get("project"), payload.get("repository")]
        fields = GITLAB_URLS
        commit = payload.get("checkout_sha") or payload.get("after")
    else:
        if name == "ping":
            return Event(forge, name, "ping")
        if name != "push":
            return Event(forge, name, "other")
        sources = [payload.get("repository")]
        fields = GITHUB_URLS
        commit = None if payload.get("deleted") is True else payload.get("after")
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise BadRequest("a push without its ref")
    urls = [source.get(field) for source in sources if isinstance(source, dict) for field in fields]
    repositories = frozenset(filter(None, (_identity(url) for url in urls)))
    if not repositories:
        raise BadRequest("a push that names no repository URL")
    if not isinstance(commit, str) or NULL_COMMIT.match(commit) or not COMMIT.match(commit.lower()):
        commit = None
    return Event(forge, name, "push", ref=ref, commit=commit.lower() if commit else None, repositories=repositories)


def _identity(url: object) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        return _normal(configuration.repository_identity(url.strip()))
    except ValueError:  # urlsplit: a broken [IPv6] host
        return None


def _normal(identity: str) -> str:
    """Identities compared as the forges compare names: without case, `.git` or slashes around."""
    return identity.strip().strip("/").removesuffix(".git").casefold()


@dataclasses.dataclass(frozen=True)
class Decision:
    status: int  # the HTTP status when nothing is waited for
    message: str  # the answer's text (the sender proved it holds the secret)
    logged: str  # what the log says: nothing of the payload (the caller adds the event, ref and commit)
    sync: bool = False  # ask for a sync


def decide(event: Event, repository: str, branch: str) -> Decision:
    """What to do about a signed delivery for a host that deploys ``branch`` of ``repository``."""
    if event.kind == "ping":
        return Decision(200, f"pong: this host deploys {branch} of {repository}", "the webhook works")
    if event.kind != "push":
        return Decision(202, f"ignored: a {event.name} event is not a push", "ignored: not a push")
    ref = event.ref or ""
    if _normal(repository) not in event.repositories:
        theirs = ", ".join(sorted(_shown(name) for name in event.repositories))
        return Decision(202, f"ignored: this host deploys {repository}, not {theirs} (set {REPOSITORY_KEY} if that is the same)",
                        f"ignored: the push is for another repository than {repository} (the answer names it; "
                        f"{REPOSITORY_KEY} names this one as the forge does)")
    if ref.startswith("refs/tags/"):
        return Decision(202, f"ignored: a tag ({_shown(ref)}), not a push to refs/heads/{branch}", "ignored: a tag")
    if ref != f"refs/heads/{branch}":
        return Decision(202, f"ignored: {_shown(ref)} is not refs/heads/{branch}", f"ignored: not refs/heads/{branch}")
    if event.commit is None:
        return Decision(202, f"ignored: refs/heads/{branch} was deleted", "ignored: the branch was deleted")
    return Decision(202, "sync requested", "sync requested", sync=True)


def _shown(value: str, limit: int = 200) -> str:
    """A value from a signed payload, fit for a log line or an answer: printable, short."""
    if len(value) <= limit and PRINTABLE.match(value):
        return value
    return "(an unprintable value)"


# -- the HTTP side ---------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Closed(Exception):
    """The client went away before its request was complete: nobody to answer."""


@dataclasses.dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names


def parse_head(head: bytes, max_headers: int = Limits.max_headers) -> Head:
    """The request line and the headers (the bytes before the blank line); HttpError 400/431."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not TOKEN.match(parts[0]) or not parts[1].startswith("/") or not PRINTABLE.match(parts[1]):
        raise HttpError(400, "malformed request line")
    if parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "unsupported HTTP version")
    if len(lines) - 1 > max_headers:
        raise HttpError(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not TOKEN.match(name) or CONTROL.search(value):
            raise HttpError(400, "malformed header")
        name, value = name.lower(), value.strip(" \t")
        if name in headers:
            if name in SINGLE_HEADERS:
                raise HttpError(400, f"more than one {name} header")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    return Head(parts[0], parts[1], parts[2], headers)


def body_length(head: Head, max_body: int) -> int:
    """The Content-Length the body must have; HttpError 411/400/413 before any of it is read."""
    if "transfer-encoding" in head.headers:
        raise HttpError(411, "a Content-Length is required (no chunked bodies)")
    raw = head.headers.get("content-length")
    if raw is None:
        raise HttpError(411, "a Content-Length is required")
    if not raw.isdigit() or len(raw) > 19:
        raise HttpError(400, "malformed Content-Length")
    length = int(raw)
    if length > max_body:
        raise HttpError(413, f"the body is larger than {max_body} bytes")
    return length


def decode_payload(headers: Mapping[str, str], body: bytes) -> Any:
    """The JSON payload: the body, or its `payload` field in a form-encoded body (GitHub, Gitea and
    Gogs offer that content type). A form body begins with `payload=`; JSON sent with the form's
    content type (`curl -d`) is read as JSON."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded" and not body.lstrip().startswith((b"{", b"[")):
            fields = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=16)
            if len(fields.get("payload", ())) != 1:
                raise BadRequest("a form without one payload field")
            return json.loads(fields["payload"][0])
        return json.loads(body)
    except BadRequest:
        raise
    except (ValueError, RecursionError):  # RecursionError: nested too deep for json
        raise BadRequest("the payload is not valid JSON") from None


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


def wants_wait(target: str) -> bool:
    """?wait=1 (or wait, wait=true, yes, on) in the request target."""
    try:
        values = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query, keep_blank_values=True, max_num_fields=16).get("wait", [])
    except ValueError:
        return False
    return bool(values) and values[-1].lower() in ("", "1", "true", "yes", "on")


def _result_response(result: Mapping[str, Any]) -> Response:
    """200 with a sync's summary when it converged, else 500 naming the stacks that failed."""
    summary = str(result.get("summary") or "")
    outcome = str(result.get("result") or "error")
    status = result.get("status")
    lines = [f"sync {outcome}" + (f" (exit status {status})" if isinstance(status, int) and status else "") + f": {summary}"]
    failed = result.get("failed")
    if isinstance(failed, dict):
        lines += [f"{stack}: {reason}" for stack, reason in sorted(failed.items())]
    return Response(200 if outcome == "ok" else 500, "\n".join(lines))


class Receiver:
    """Signed deliveries in, requests in the spool out (the application, without the HTTP)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._spool = threading.Lock()  # one request, not one per thread, when a burst finds the spool empty

    def deliver(self, head: Head, body: bytes, client: str, gone: Callable[[], bool] = lambda: False) -> Response:
        headers = head.headers
        if not signature_valid(headers, body, self.settings.secret):
            log.warning("webhook: a request from %s has no valid signature (401)", client)
            return Response(401, "unauthorized")
        delivery = next((headers[name] for name in DELIVERY_HEADERS if name in headers), "")
        delivery = f" (delivery {delivery})" if DELIVERY.match(delivery) else ""
        try:
            event = parse_event(headers, decode_payload(headers, body))
        except BadRequest as exc:
            log.warning("webhook: a signed request from %s%s is malformed: %s (400)", client, delivery, exc)
            return Response(400, f"bad request: {exc}")
        decision = decide(event, self.settings.repository, self.settings.branch)
        what = f"{event.forge} {event.name}"
        if event.kind == "push":
            what += f" to {_shown(event.ref or '')}" + (f" ({event.commit[:12]})" if event.commit else "")
        if not decision.sync:
            log.info("webhook: %s%s: %s", what, delivery, decision.logged)
            return Response(decision.status, decision.message)
        requested_at = time.time()
        try:
            with self._spool:
                if trigger.has_pending_request(self.settings.trigger_dir):
                    made = "a sync is already requested"
                else:
                    trigger.request_sync(self.settings.trigger_dir)
                    made = "sync requested"
        except trigger.TriggerError as exc:
            log.error("webhook: %s%s: cannot request a sync: %s", what, delivery, exc)
            return Response(500, "cannot request a sync (the host's log says why)")
        log.info("webhook: %s%s: %s", what, delivery, made)
        if not wants_wait(head.target):
            return Response(202, made)
        result = trigger.wait_for_result(self.settings.result_dir, requested_at, self.settings.wait_timeout, cancelled=gone)
        if result is None:
            return Response(202, f"{made}; no result yet")
        return _result_response(result)


class Server:
    """The listening sockets' accept loop; each connection in a thread of its own, at most
    ``limits.max_connections`` at a time. ``serve`` returns after ``settings.idle`` seconds without
    a connection (never with 0) or after ``stop``."""

    def __init__(self, settings: Settings, listeners: Sequence[socket.socket], limits: Limits | None = None) -> None:
        self.settings = settings
        self.listeners = list(listeners)
        self.limits = limits or Limits()
        self.receiver = Receiver(settings)
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        self._spare = threading.BoundedSemaphore(self.limits.max_connections)  # for the 503s
        self._lock = threading.Lock()
        self._active = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._wake, self._waker = socket.socketpair()  # stop() wakes the accept loop at once

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._waker.send(b"x")

    def serve(self) -> None:
        try:
            self._serve()
        finally:
            self._wake.close()
            self._waker.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake, selectors.EVENT_READ)
            for listener in self.listeners:
                listener.setblocking(False)
                selector.register(listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                timeout: float | None = None
                if self.settings.idle:
                    with self._lock:
                        quiet = time.monotonic() - self._last if self._active == 0 else None
                    if quiet is not None and quiet >= self.settings.idle:
                        log.info("webhook: no request for %g s: exiting (the socket starts it again)", self.settings.idle)
                        return
                    # Idle: wake when the idle time is up. Serving: look again in a second.
                    timeout = self.settings.idle - quiet if quiet is not None else 1.0
                for key, _ in selector.select(None if timeout is None else max(timeout, 0.01)):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    if ready is not self._wake:
                        self._accept(ready)

    def _touch(self, change: int = 0) -> None:
        with self._lock:
            self._active += change
            self._last = time.monotonic()

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # out of file descriptors, for one
            log.warning("webhook: cannot accept a connection: %s", exc.strerror)
            time.sleep(0.1)
            return
        self._touch()
        if self._slots.acquire(blocking=False):
            target, slot = self._connection, self._slots
        elif self._spare.acquire(blocking=False):
            target, slot = self._busy, self._spare
        else:
            conn.close()
            return
        try:
            threading.Thread(target=target, args=(conn, _client(address), slot), daemon=True).start()
        except RuntimeError:  # no thread to be had (TasksMax=)
            slot.release()
            conn.close()

    def _busy(self, conn: socket.socket, client: str, slot: threading.BoundedSemaphore) -> None:
        try:
            log.warning("webhook: too many connections: %s turned away (503)", client)
            self._answer(conn, Response(503, "too many connections; try again", (("Retry-After", "1"),)), linger=0.5)
        finally:
            conn.close()
            slot.release()

    def _connection(self, conn: socket.socket, client: str, slot: threading.BoundedSemaphore) -> None:
        self._touch(+1)
        try:
            self._exchange(conn, client)
        except Exception:
            log.exception("webhook: internal error serving %s", client)
        finally:
            conn.close()
            slot.release()
            self._touch(-1)

    def _exchange(self, conn: socket.socket, client: str) -> None:
        limits = self.limits
        head_only = False
        try:
            head_bytes, rest = _read_head(conn, limits)
            head = parse_head(head_bytes, limits.max_headers)
            head_only = head.method == "HEAD"
            if head.method != "POST":
                raise HttpError(405, "only POST")
            length = body_length(head, limits.max_body)
            if head.headers.get("expect", "").lower() == "100-continue" and head.version == "HTTP/1.1" and len(rest) < length:
                conn.settimeout(limits.send_timeout)
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = _read_body(conn, rest, length, limits)
        except Closed:
            return
        except HttpError as exc:
            log.info("webhook: a request from %s refused (%d): %s", client, exc.status, exc.message)
            # A slow client is not waited for once more.
            self._answer(conn, Response(exc.status, exc.message, (("Allow", "POST"),) if exc.status == 405 else ()),
                         head_only=head_only, linger=0.0 if exc.status == 408 else None)
            return
        response = self.receiver.deliver(head, body, client, gone=lambda: _gone(conn))
        self._answer(conn, response)

    def _answer(self, conn: socket.socket, response: Response, *, head_only: bool = False, linger: float | None = None) -> None:
        """Send the answer, close the sending side, and read what the client still sends for a
        moment: closing a socket with unread data resets the connection, and the client might
        lose the answer (a 413 it gets while it still sends the body)."""
        text = (response.text.rstrip("\n") + "\n").encode("utf-8")
        lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
                 "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(text)}", "Connection: close",
                 *(f"{name}: {value}" for name, value in response.headers)]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else text)
        try:
            conn.settimeout(self.limits.send_timeout)
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + (self.limits.linger if linger is None else linger)
            while (remaining := deadline - time.monotonic()) > 0:
                conn.settimeout(remaining)
                if not conn.recv(65536):
                    break
        except OSError:
            pass


def _read_head(conn: socket.socket, limits: Limits) -> tuple[bytes, bytes]:
    """The bytes up to the blank line after the headers, and what came after them, all within
    ``limits.header_timeout`` from now, however slowly they trickle in."""
    deadline = time.monotonic() + limits.header_timeout
    buffer = bytearray()
    start = 0
    while True:
        end = buffer.find(b"\r\n\r\n", start)
        if end > limits.max_head or (end < 0 and len(buffer) > limits.max_head):
            raise HttpError(431, "the request line and headers are too large")
        if end >= 0:
            return bytes(buffer[:end]), bytes(buffer[end + 4:])
        start = max(0, len(buffer) - 3)
        buffer += _receive(conn, deadline, "the headers did not arrive in time")


def _read_body(conn: socket.socket, rest: bytes, length: int, limits: Limits) -> bytes:
    deadline = time.monotonic() + limits.body_timeout
    buffer = bytearray(rest[:length])
    while len(buffer) < length:
        buffer += _receive(conn, deadline, "the body did not arrive in time", size=min(65536, length - len(buffer)))
    return bytes(buffer)


def _receive(conn: socket.socket, deadline: float, late: str, size: int = 65536) -> bytes:
    """What the client sends next, before ``deadline`` (HttpError 408 after it)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise HttpError(408, late)
    conn.settimeout(remaining)
    try:
        chunk = conn.recv(size)
    except TimeoutError:
        raise HttpError(408, late) from None
    except OSError:
        raise Closed from None
    if not chunk:
        raise Closed
    return chunk


def _gone(conn: socket.socket) -> bool:
    """True when the client has closed its side (while it waits for ?wait=1)."""
    try:
        conn.settimeout(0.0)
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _client(address: Any) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "a local client"


# -- set-up: the prepared file, the secret, the sockets --------------------------------------------


def target_from_settings(settings: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """What the receiver needs of composeflux.conf: the repository's identity (host/path, never a
    credential), the branch, the spool and the result directory. ConfigError for those alone."""
    key = REPOSITORY_KEY if environ.get(REPOSITORY_KEY, "").strip() else "GIT_REPO_URL"
    raw = environ.get(REPOSITORY_KEY, "").strip() or settings.get("GIT_REPO_URL", "").strip()
    if not raw:
        raise ConfigError("GIT_REPO_URL: required (the repository whose pushes start a sync)")
    if raw.startswith("-") or any(c.isspace() for c in raw):
        raise ConfigError(f"{key}: not a valid repository URL or path")
    branch = settings.get("GIT_BRANCH", "").strip() or "main"
    if not configuration.BRANCH_PATTERN.match(branch):
        raise ConfigError(f"GIT_BRANCH: not a valid branch name: {branch!r}")
    trigger_dir = settings.get("TRIGGER_DIR", "").strip() or str(trigger.DEFAULT_TRIGGER_DIR)
    try:
        repository = configuration.repository_identity(raw)
    except ValueError:
        raise ConfigError(f"{key}: not a valid repository URL or path") from None
    return {
        "repository": repository,
        "branch": branch,
        "trigger_dir": trigger_dir,
        "result_dir": settings.get("TRIGGER_RESULT_DIR", "").strip() or str(trigger.DEFAULT_RESULT_DIR),
    }


def runtime_dir(environ: Mapping[str, str]) -> Path:
    raw = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(raw) if raw else DEFAULT_RUNTIME_DIR


def prepare(config_file: Path | None, environ: Mapping[str, str]) -> Path:
    """`--prepare`: write the target to $RUNTIME_DIRECTORY/webhook.json, mode 0644, atomically
    (a new file renamed over the old name: a link planted there is replaced, never followed)."""
    target = target_from_settings(configuration.load_settings(config_file, environ, {}), environ)
    directory = runtime_dir(environ)
    try:
        replace_file(directory / PREPARED_FILE, (json.dumps(target, indent=2, sort_keys=True) + "\n").encode("utf-8"), 0o644)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot write {PREPARED_FILE}: {exc.strerror} (RuntimeDirectory= of the unit)") from None
    return directory / PREPARED_FILE


def read_prepared(environ: Mapping[str, str]) -> dict[str, str]:
    path = runtime_dir(environ) / PREPARED_FILE
    try:
        target = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}); `composeflux webhook --prepare` writes it "
                          "(ExecStartPre= of composeflux-webhook.service)") from None
    keys = ("repository", "branch", "trigger_dir", "result_dir")
    if not isinstance(target, dict) or not all(isinstance(target.get(key), str) and target[key] for key in keys):
        raise ConfigError(f"{path}: not what `composeflux webhook --prepare` writes; run it again")
    return {key: target[key] for key in keys}


def load_secret(environ: Mapping[str, str], *, from_environment: bool) -> bytes:
    """WEBHOOK_SECRET: the credential ($CREDENTIALS_DIRECTORY/WEBHOOK_SECRET), else (``--listen``
    only) the environment variable. A final newline is not part of it."""
    value: bytes | None = None
    credentials = environ.get("CREDENTIALS_DIRECTORY", "")
    if credentials:
        try:
            value = Path(credentials, SECRET_KEY).read_bytes()
        except FileNotFoundError:
            value = None
        except OSError as exc:
            raise ConfigError(f"{SECRET_KEY}: cannot read the credential: {exc.strerror}") from None
    if value is None and from_environment:
        value = environ.get(SECRET_KEY, "").encode("utf-8")
    value = (value or b"").rstrip(b"\r\n")
    if not value:
        where = "the WEBHOOK_SECRET environment variable or credential" if from_environment else (
            f"the credential WEBHOOK_SECRET (LoadCredential=WEBHOOK_SECRET:{DEFAULT_SECRET_FILE})")
        raise ConfigError(f"{SECRET_KEY}: not set; the secret shared with the forge comes from {where}")
    return value


def listen_sockets(environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed (LISTEN_FDS, from fd 3), if they are for this process; the
    variables are removed so that nothing started later takes them for its own."""
    env = os.environ if environ is None else environ
    try:
        count = int(env.get("LISTEN_FDS", "0")) if int(env.get("LISTEN_PID", "0")) == os.getpid() else 0
    except ValueError:
        count = 0
    if environ is None:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    sockets = []
    for fd in range(3, 3 + max(count, 0)):
        os.set_inheritable(fd, False)
        listener = socket.socket(fileno=fd)
        if listener.type != socket.SOCK_STREAM or not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ConfigError(f"file descriptor {fd} is not a listening stream socket (ListenStream= in the socket unit)")
        sockets.append(listener)
    return sockets


def bind(address: str) -> socket.socket:
    """A listening socket on HOST:PORT ([::1]:PORT for IPv6; port 0: any free one)."""
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen: expected HOST:PORT, got {address!r}")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(where)
        listener.listen(128)
    except OSError as exc:
        raise ConfigError(f"--listen: cannot listen on {address}: {exc.strerror or exc}") from None
    return listener


def _address(listener: socket.socket) -> str:
    where = listener.getsockname()
    if isinstance(where, tuple):
        host = where[0]
        return f"[{host}]:{where[1]}" if ":" in host else f"{host}:{where[1]}"
    return str(where)


def settings_for(target: Mapping[str, str], secret: bytes, environ: Mapping[str, str]) -> Settings:
    return Settings(
        repository=target["repository"],
        branch=target["branch"],
        trigger_dir=Path(target["trigger_dir"]),
        result_dir=Path(target["result_dir"]),
        secret=secret,
        idle=seconds(environ, IDLE_KEY, DEFAULT_IDLE, maximum=configuration.MAX_TIMEOUT),
        wait_timeout=seconds(environ, WAIT_TIMEOUT_KEY, DEFAULT_WAIT_TIMEOUT, maximum=configuration.MAX_TIMEOUT),
    )


def run(config_file: Path | None, *, listen: str | None = None, do_prepare: bool = False,
        environ: Mapping[str, str] | None = None) -> ExitStatus:
    """`composeflux webhook [--listen HOST:PORT] [--prepare]`; the exit status."""
    from composeflux import logs
    from composeflux.masking import Masker

    env = os.environ if environ is None else environ
    logs.setup_logging("INFO", "text", Masker())
    listeners: list[socket.socket] = []
    try:
        if do_prepare:
            path = prepare(config_file, env)
            log.info("webhook: %s written (repository, branch, spool; no credential)", path)
            return ExitStatus.OK
        secret = load_secret(env, from_environment=listen is not None)
        logs.setup_logging("INFO", "text", Masker([secret.decode("utf-8", "replace")], min_length=1))
        if listen is not None:
            target = target_from_settings(configuration.load_settings(config_file, env, {}), env)
            settings = settings_for(target, secret, env)
            listeners = [bind(listen)]
        else:
            settings = settings_for(read_prepared(env), secret, env)
            listeners = listen_sockets(environ)
            if not listeners:
                log.error("webhook: no socket was passed (LISTEN_FDS): composeflux-webhook.socket starts it; "
                          "`composeflux webhook --listen HOST:PORT` runs it on a socket of its own")
                return ExitStatus.USAGE
    except ConfigError as exc:
        log.error("webhook: %s", exc)
        return ExitStatus.CONFIG
    log.info("webhook: listening on %s for pushes to %s of %s", ", ".join(_address(s) for s in listeners), settings.branch,
             settings.repository)
    server = Server(settings, listeners)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        for listener in listeners:
            listener.close()  # never shutdown(): systemd's copy of a passed socket keeps listening
    return ExitStatus.OK
