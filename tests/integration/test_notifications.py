"""Notifications through Debian's apprise, from real syncs against the real engine, to real
receivers on 127.0.0.1: an HTTP server (apprise's json:// and ntfy:// plugins POST to it) and
an SMTP server (aiosmtpd; apprise's mailto://, plain SMTP without TLS or login).

What the operator must get: one notice when a stack starts failing (not one per timer run), one
when it recovers, a reminder every NOTIFY_REMIND while it lasts, one message per sync however
many stacks fail, no secret in any of it, and a run whose result does not depend on whether the
notice got through.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import json
import shlex
import socket
import threading
import urllib.parse

import pytest
from aiosmtpd.controller import Controller  # python3-aiosmtpd (scripts/setup-host.sh installs it, and apprise)

from tests.conftest import free_port, service_yaml
from tests.servers.notify_receiver import NotifyReceiver

pytestmark = pytest.mark.docker

HOST = socket.gethostname()
# Quick, and every failing stack is tried again on every sync (no failure backoff).
QUICK = {"RETRY_FAILED_MAX": "0", "HEALTH_STABLE": "0", "HEALTH_TIMEOUT": "30"}


@pytest.fixture
def receiver():
    with NotifyReceiver() as server:
        yield server


class Mailbox:
    """aiosmtpd's handler: every message it is given, parsed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def received(self):
        with self.lock:
            return list(self.messages)


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mailbox
    controller.stop()


def text_of(content: str) -> str:
    """A mail's text as composeflux wrote it: SMTP carries CRLF line ends, and apprise adds a last one."""
    return content.replace("\r\n", "\n").rstrip("\n")


def json_url(receiver: NotifyReceiver, path: str = "hook") -> str:
    return f"json://127.0.0.1:{receiver.port}/{path}"


def notices(receiver: NotifyReceiver, path: str = "/hook") -> list[dict]:
    """The JSON documents apprise's json:// plugin posted to this path, in order."""
    return [post.json() for post in receiver.posts if post.path == path]


def broken(repo, name: str) -> None:
    """A stack Compose refuses to render: it fails at once, without starting anything."""
    repo.write(f"{name}/compose.yaml", service_yaml() + "    cpus: not-a-number\n")


def unhealthy(repo, name: str) -> None:
    """A stack whose container starts and then fails its healthcheck: the health gate fails it."""
    repo.write(
        f"{name}/compose.yaml",
        service_yaml() + '    healthcheck:\n      test: ["CMD", "false"]\n      interval: 1s\n      retries: 1\n',
    )


def test_a_failure_is_told_once_however_many_syncs_it_lasts_and_its_recovery_once(cfx, repo, prefix, receiver):
    bad, good = f"{prefix}-bad", f"{prefix}-good"
    cfx.settings(NOTIFY_URLS=json_url(receiver), **QUICK)
    unhealthy(repo, bad)
    repo.add_stack(good)
    commit = repo.commit("an unhealthy stack and a healthy one")

    first = cfx.sync(expect=1)
    assert f"error: {bad}: Health gate failed: app: " in first.stderr  # the log says it once; the notice too
    [notice] = notices(receiver)
    assert notice["title"] == f"composeflux on {HOST}: {bad} failed"
    assert notice["type"] == "failure"
    assert notice["message"].startswith(f"{bad}: failed: failed its health gate: app: ")
    assert notice["message"].endswith(f"\n\nCommit {commit[:12]} an unhealthy stack and a healthy one")
    assert cfx.last_state()["stacks"][bad]["action"] == "failed"

    for _ in range(2):  # the same failure: the operator knows already
        cfx.sync(expect=1)
    assert len(receiver.posts) == 1
    alert = json.loads((cfx.state / "state.json").read_text())["alerts"][f"stack/{bad}"]
    assert alert["kind"] == "stack-failed" and alert["notified"] is not None

    repo.add_stack(bad)  # the healthcheck removed
    fixed = repo.commit("fix the healthcheck")
    cfx.sync()
    assert len(receiver.posts) == 2
    recovered = notices(receiver)[1]
    assert recovered["title"] == f"composeflux on {HOST}: {bad} recovered"
    assert recovered["type"] == "success"
    assert recovered["message"].startswith(f"{bad}: recovered: runs {fixed[:12]} (failing since ")
    assert json.loads((cfx.state / "state.json").read_text())["alerts"] == {}

    cfx.sync()  # all good, and nothing new
    assert len(receiver.posts) == 2
    assert not any(good in post.body.decode() for post in receiver.posts)


def test_one_message_per_sync_names_every_failing_stack_and_ntfy_gets_the_same(cfx, repo, prefix, receiver):
    one, two, good = f"{prefix}-one", f"{prefix}-two", f"{prefix}-good"
    # ntfy:// is plain HTTP (ntfys:// is HTTPS): apprise POSTs {"topic", "title", "message"} to the host's root.
    cfx.settings(NOTIFY_URLS=f"{json_url(receiver)} ntfy://127.0.0.1:{receiver.port}/composeflux", **QUICK)
    broken(repo, one)
    broken(repo, two)
    repo.add_stack(good)
    repo.commit("two broken stacks")

    result = cfx.sync(expect=1)
    assert "1 deployed, 0 unchanged, 0 pruned, 2 failed" in result.stderr
    assert sorted(post.path for post in receiver.posts) == ["/", "/hook"]  # one message per URL, not one per stack
    [notice] = notices(receiver)
    assert notice["title"] == f"composeflux on {HOST}: {one}, {two} failed"
    paragraphs = notice["message"].split("\n\n")
    assert [p.split(":")[0] for p in paragraphs[:2]] == [one, two] and paragraphs[2].startswith("Commit ")
    assert all(": failed: " in p for p in paragraphs[:2])
    assert good not in notice["message"]

    [ntfy] = [post for post in receiver.posts if post.path == "/"]
    assert ntfy.headers["Content-Type"] == "application/json"
    assert ntfy.json() == {"topic": "composeflux", "title": notice["title"], "message": notice["message"]}

    cfx.sync(expect=1)
    assert len(receiver.posts) == 2

    # One of them fixed: one message for it; the other is still failing, and not told again.
    repo.add_stack(one)
    repo.commit("fix one")
    cfx.sync(expect=1)
    assert len(receiver.posts) == 4
    latest = notices(receiver)[-1]
    assert latest["title"] == f"composeflux on {HOST}: {one} recovered"
    assert two not in latest["message"]


def test_the_email_says_what_the_json_says(cfx, repo, prefix, receiver, smtp):
    port, mailbox = smtp
    name = f"{prefix}-mail"
    # mailto:// is plain SMTP (mailtos:// is STARTTLS or SSL); no user and password: no AUTH.
    # format=text: the mail has only a text part, to compare with the JSON (the default, HTML, is
    # the next test's).
    mail_url = f"mailto://127.0.0.1:{port}?from=composeflux@example.org&to=ops@example.org&format=text"
    cfx.settings(NOTIFY_URLS=f"{json_url(receiver)} {mail_url}", **QUICK)
    broken(repo, name)
    repo.commit("broken")

    cfx.sync(expect=1)
    cfx.sync(expect=1)
    [notice] = notices(receiver)
    [(sender, recipients, message)] = mailbox.received()
    assert (sender, recipients) == ("composeflux@example.org", ["ops@example.org"])
    assert message["Subject"] == notice["title"]
    assert message.get_content_type() == "text/plain"
    assert text_of(message.get_content()) == notice["message"]


def test_the_email_of_a_default_mailto_url_keeps_the_text(cfx, repo, prefix, receiver, smtp):
    """A plain mailto:// URL sends HTML mail: composeflux's text must come through it intact
    (apprise takes a body for the plugin's own format unless told it is text)."""
    port, mailbox = smtp
    name = f"{prefix}-mail"
    cfx.settings(NOTIFY_URLS=f"{json_url(receiver)} mailto://127.0.0.1:{port}?from=composeflux@example.org&to=ops@example.org",
                 **QUICK)
    broken(repo, name)
    repo.commit("broken <stack>")
    cfx.sync(expect=1)
    [notice] = notices(receiver)
    [(_, _, message)] = mailbox.received()
    assert message["Subject"] == notice["title"]
    assert text_of(message.get_body(preferencelist=("plain",)).get_content()) == notice["message"]


def test_an_unreachable_target_changes_no_exit_status_and_is_logged(cfx, repo, prefix, receiver):
    bad, good = f"{prefix}-bad", f"{prefix}-good"
    password = "hook-password-" + prefix
    closed = f"json://bot:{password}@127.0.0.1:{free_port()}/hook"  # nothing listens there
    cfx.settings(NOTIFY_URLS=closed, **QUICK)
    broken(repo, bad)
    repo.add_stack(good)
    repo.commit()

    result = cfx.sync(expect=1)  # what the stacks did, not what the notification did
    assert "NOTIFY_URLS #1 (json://): the notification could not be delivered" in result.stderr
    assert password not in result.stderr + result.stdout + (cfx.state / "state.json").read_text()
    saved = json.loads((cfx.state / "state.json").read_text())
    assert saved["alerts"][f"stack/{bad}"]["notified"] is None  # not told yet
    assert saved["counters"]["notifications_failed"] == 1

    # The target is back (and a dead one next to it): the notice not delivered is delivered now, once.
    cfx.settings(NOTIFY_URLS=f"{closed} {json_url(receiver)}")
    result = cfx.sync(expect=1)
    assert "NOTIFY_URLS #1 (json://): the notification could not be delivered" in result.stderr
    [notice] = notices(receiver)
    assert notice["title"] == f"composeflux on {HOST}: {bad} failed"
    cfx.sync(expect=1)
    assert len(receiver.posts) == 1

    # An all-good sync whose one notice (the recovery) cannot be delivered anywhere still exits 0.
    cfx.settings(NOTIFY_URLS=closed)
    repo.add_stack(bad)
    repo.commit("fixed")
    result = cfx.sync(expect=0)
    assert "0 failed" in result.stderr
    assert "NOTIFY_URLS #1 (json://): the notification could not be delivered" in result.stderr
    assert password not in result.stderr + result.stdout
    assert len(receiver.posts) == 1
    assert json.loads((cfx.state / "state.json").read_text())["counters"]["notifications_failed"] == 3


def escaped(value: str) -> set[str]:
    """The forms a value takes on its way into a notification: as it is, JSON- (twice: a Go-quoted
    error inside a JSON body), Go-, Python-, URL- and shell-quoted."""
    go = value.replace("\\", "\\\\").replace('"', '\\"')
    forms = {value, go, json.dumps(value)[1:-1], json.dumps(go)[1:-1], repr(value)[1:-1], shlex.quote(value)}
    forms |= {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), urllib.parse.quote(value)}
    return forms


def test_a_secret_in_the_failure_never_reaches_the_notification(cfx, repo, prefix, receiver, tmp_path):
    secret = 'no"tif\\y-se cret' + prefix
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"S='{secret}'\n")
    secrets_file.chmod(0o600)
    cfx.settings(SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file), NOTIFY_URLS=f"{json_url(receiver)} "
                 f"ntfy://127.0.0.1:{receiver.port}/composeflux", **QUICK)
    # Compose quotes the value it cannot use in its error: the stack's failure reason holds the secret.
    names = [f"{prefix}-{key.replace('_', '-')}" for key in ("cpus", "mem_limit")]
    for name, key in zip(names, ("cpus", "mem_limit"), strict=True):
        repo.write(f"{name}/compose.yaml", service_yaml() + f"    {key}: ${{S}}\n")
    repo.commit(f"use {secret} in two stacks")  # the subject goes into the notice too

    result = cfx.sync(expect=1)
    assert "***" in result.stderr
    assert len(receiver.posts) == 2
    [notice] = notices(receiver)
    assert notice["title"] == f"composeflux on {HOST}: {', '.join(names)} failed"
    assert notice["message"].count("***") >= 3, notice["message"]  # the reasons and the subject are there, masked
    assert notice["message"].endswith(" use *** in two stacks")
    for post in receiver.posts:
        shown = [post.body.decode(), *post.headers.values()]
        decoded = post.json()
        shown += [decoded.get("title", ""), decoded.get("message", "")]
        for form in escaped(secret):
            assert not any(form in text for text in shown), (form, shown)


def test_a_reminder_when_it_is_due_then_quiet_again(cfx, repo, prefix, receiver):
    name = f"{prefix}-stuck"
    cfx.settings(NOTIFY_URLS=json_url(receiver), NOTIFY_REMIND="24h", **QUICK)
    broken(repo, name)
    repo.commit()
    cfx.sync(expect=1)
    cfx.sync(expect=1)
    assert len(receiver.posts) == 1

    # A day and a bit after the first notice, instead of waiting for it.
    state_file = cfx.state / "state.json"
    saved = json.loads(state_file.read_text())
    alert = saved["alerts"][f"stack/{name}"]
    told = datetime.datetime.fromisoformat(alert["notified"])
    alert["notified"] = (told - datetime.timedelta(hours=25)).isoformat(timespec="seconds")
    state_file.write_text(json.dumps(saved))

    cfx.sync(expect=1)
    assert len(receiver.posts) == 2
    reminder = notices(receiver)[1]
    assert reminder["title"] == f"composeflux on {HOST}: {name} still failing"
    assert reminder["type"] == "failure"
    assert reminder["message"].startswith(f"{name}: still failing since {alert['since']}: ")
    again = json.loads(state_file.read_text())["alerts"][f"stack/{name}"]
    assert datetime.datetime.fromisoformat(again["notified"]) >= told

    cfx.sync(expect=1)  # the next reminder is a day away again
    assert len(receiver.posts) == 2
