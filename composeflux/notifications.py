"""Delivery of a run's one notification through apprise (NOTIFY_URLS), bounded in time.

Apprise (Debian's `apprise` package, a Recommends) knows ~100 services by URL: ntfy://,
gotify://, tgram://, mailto://, matrix://, discord://, json:// ... composeflux hands it a title
and a body, already masked, once per URL, and logs what could not be delivered. Nothing here
raises: a notification that cannot be delivered never changes a run's result.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import urllib.parse
from collections.abc import Iterable, Sequence

from composeflux.alerts import Notice
from composeflux.events import Kind
from composeflux.masking import Masker

log = logging.getLogger(__name__)

DEADLINE = 30.0  # seconds for one URL, whatever its plugin's own timeouts (a hung SMTP server)
FAILURES = (Kind.SYNC_FAILED, Kind.PRUNE_REFUSED, Kind.UNVERIFIED, Kind.STACK_FAILED, Kind.UNIT_FAILED)
WARNINGS = (Kind.ROLLED_BACK, Kind.UPDATE_ROLLED_BACK)


def apprise_missing() -> bool:
    """Whether apprise cannot be imported (checked without importing it: that takes a while)."""
    return importlib.util.find_spec("apprise") is None


# A path segment or dotless host this long is taken for a token (gotify://HOST/TOKEN has 15
# characters, tgram://TOKEN/CHAT, discord://ID/TOKEN more); "composeflux" (11) is a word.
TOKEN_LENGTH = 12


def url_parts(url: str) -> set[str]:
    """The parts of a notification URL that may be credentials, for the masker: the URL itself,
    its user and password, every query value, and each path segment, or "host" without a dot,
    long enough to be a token. A short topic such as ntfy://host/composeflux is left alone: masking it would
    hide that word all over the log."""
    split = urllib.parse.urlsplit(url)
    userinfo, _, host = split.netloc.rpartition("@")
    parts = {url, userinfo, *(urllib.parse.unquote(p) for p in userinfo.split(":", 1) if userinfo)}
    parts |= {value for _, value in urllib.parse.parse_qsl(split.query)}
    segments = [urllib.parse.unquote(segment) for segment in split.path.split("/")]
    # A host name (it has dots) is not a secret; a "host" without one is a token (tgram://, discord://).
    candidates = [*segments, *([host] if "." not in host else [])]
    parts |= {candidate for candidate in candidates if len(candidate) >= TOKEN_LENGTH}
    return {part for part in parts if part}


def describe(index: int, url: str) -> str:
    """How a URL is named in the log: its position and scheme, never the rest."""
    scheme = url.partition("://")[0] if "://" in url else "?"
    return f"NOTIFY_URLS #{index} ({scheme}://)"


def notify_type(notices: Iterable[Notice]) -> str:
    kinds = {notice.kind for notice in notices}
    if kinds & set(FAILURES):
        return "failure"
    if kinds & set(WARNINGS):
        return "warning"
    if kinds & {Kind.RECOVERED, Kind.UPDATE_APPLIED}:
        return "success"
    return "info"


def deliver(urls: Sequence[str], title: str, body: str, masker: Masker, kind: str = "info", deadline: float = DEADLINE) -> tuple[int, int]:
    """Send the (masked here again) title and body to each URL: (delivered, failed)."""
    if not urls:
        return 0, 0
    try:
        import apprise
    except ImportError:
        log.error("NOTIFY_URLS is set, but apprise is not installed (apt install apprise): nothing was sent")
        return 0, len(urls)
    title, body = masker(title), masker(body)
    sent = failed = 0
    for index, url in enumerate(urls, 1):
        where = describe(index, url)
        target = apprise.Apprise()
        if not target.add(url):
            log.warning("%s: not a URL apprise knows; nothing was sent to it", where)
            failed += 1
            continue
        result: list[bool] = []

        def send(target: apprise.Apprise = target, result: list[bool] = result) -> None:
            try:
                # The body is plain text: without body_format, apprise takes it for the plugin's own
                # format (HTML for mailto://) and drops what looks like a tag.
                result.append(bool(target.notify(body=body, title=title, notify_type=kind, body_format="text")))
            except Exception as exc:  # a plugin's bug must not end the run
                log.warning("apprise failed: %s", masker(f"{type(exc).__name__}: {exc}"))
                result.append(False)

        worker = threading.Thread(target=send, name=f"notify-{index}", daemon=True)
        worker.start()
        worker.join(deadline)
        if worker.is_alive():
            log.warning("%s: no answer within %.0f s; given up", where, deadline)
            failed += 1
        elif result and result[0]:
            sent += 1
        else:
            log.warning("%s: the notification could not be delivered (apprise's log lines above say why)", where)
            failed += 1
    return sent, failed
