"""The webhook receiver's pure parts: signatures, events and payloads of each forge, repository and
branch matching, the HTTP head, the prepared file, the secret; the spool's result file."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from composeflux import trigger, webhook
from composeflux.config import repository_identity
from composeflux.errors import ConfigError
from tests.fakes import forges

SECRET = b"0f8e7c2b9d4a61e53f2c8b7a9d0e1f2a"


def lower(headers):
    return {name.lower(): value for name, value in headers.items()}


def event_of(forge, payload, **options):
    headers, body = forges.delivery(forge, payload, SECRET, **options)
    headers = lower(headers)
    return webhook.parse_event(headers, webhook.decode_payload(headers, body))


def decision(forge, payload=None, *, repository=None, branch="main", **options):
    event = event_of(forge, payload or forges.push_payload(forge), **options)
    return webhook.decide(event, repository or repository_identity(forges.repo_url(forge)), branch)


# -- signatures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("forge", forges.FORGES)
def test_each_forges_signature_is_accepted(forge):
    headers, body = forges.delivery(forge, forges.push_payload(forge), SECRET)
    assert webhook.signature_valid(lower(headers), body, SECRET)


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_wrong_secret_is_refused(forge):
    headers, body = forges.delivery(forge, forges.push_payload(forge), b"not the secret at all")
    assert not webhook.signature_valid(lower(headers), body, SECRET)


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_webhook_without_a_secret_is_refused(forge):
    headers, body = forges.delivery(forge, forges.push_payload(forge), None)
    assert not webhook.signature_valid(lower(headers), body, SECRET)


@pytest.mark.parametrize("forge", ["github", "gitea", "forgejo", "gogs"])
def test_the_signature_covers_the_raw_body(forge):
    """A body changed after signing fails, even when it is the same JSON."""
    headers, body = forges.delivery(forge, forges.push_payload(forge), SECRET)
    same_json = json.dumps(json.loads(body)).encode()
    assert same_json != body
    assert not webhook.signature_valid(lower(headers), same_json, SECRET)
    assert not webhook.signature_valid(lower(headers), body + b" ", SECRET)


@pytest.mark.parametrize(("name", "value"), [
    ("X-Hub-Signature-256", "{hex}"),  # no sha256= prefix
    ("X-Hub-Signature-256", "sha1={hex}"),
    ("X-Hub-Signature-256", "sha256={hex}00"),
    ("X-Hub-Signature-256", "sha256="),
    ("X-Gitea-Signature", "sha256={hex}"),  # Gitea's has no prefix
    ("X-Gitea-Signature", "{half}"),
    ("X-Gogs-Signature", "\u00e9{hex}"),  # not ASCII: refused, not an error
    ("X-Gitlab-Token", "{hex}"),  # the token is the secret itself, not a signature
    ("X-Gitlab-Token", ""),
    ("X-Hub-Signature", "sha1={hex}"),  # SHA-1 is not taken
])
def test_malformed_or_misplaced_signatures_are_refused(name, value):
    body = b'{"ref": "refs/heads/main"}'
    digest = forges.hmac_hex(SECRET, body)
    value = value.replace("{hex}", digest).replace("{half}", digest[:32])
    assert not webhook.signature_valid({name.lower(): value}, body, SECRET)


def test_signature_variants_that_are_valid():
    body = b"{}"
    digest = forges.hmac_hex(SECRET, body)
    assert webhook.signature_valid({"x-hub-signature-256": f"SHA256={digest.upper()}"}, body, SECRET)
    assert webhook.signature_valid({"x-forgejo-signature": f" {digest} "}, body, SECRET)
    assert webhook.signature_valid({"x-gitlab-token": SECRET.decode()}, body, SECRET)


def test_the_first_signature_header_decides():
    """Forgejo sends four signatures; a wrong first one is not rescued by a right later one."""
    body = b"{}"
    good = forges.hmac_hex(SECRET, body)
    assert not webhook.signature_valid({"x-hub-signature-256": "sha256=" + "0" * 64, "x-gitea-signature": good}, body, SECRET)
    assert not webhook.signature_valid({"x-gitea-signature": "0" * 64, "x-gitlab-token": SECRET.decode()}, body, SECRET)


def test_no_secret_accepts_nothing():
    assert not webhook.signature_valid({"x-gitlab-token": ""}, b"{}", b"")
    assert not webhook.signature_valid({"x-hub-signature-256": "sha256=" + forges.hmac_hex(b"", b"{}")}, b"{}", b"")


# -- events and payloads ----------------------------------------------------------------------------


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_push_to_the_branch_asks_for_a_sync(forge):
    event = event_of(forge, forges.push_payload(forge))
    assert event.forge == forge
    assert event.kind == "push"
    assert event.ref == "refs/heads/main"
    assert event.commit == forges.COMMIT
    assert repository_identity(forges.repo_url(forge)) in event.repositories
    result = webhook.decide(event, repository_identity(forges.repo_url(forge)), "main")
    assert (result.status, result.sync, result.message) == (202, True, "sync requested")


@pytest.mark.parametrize("forge", ["github", "gitea", "gogs"])
def test_a_form_encoded_push_is_read_too(forge):
    assert decision(forge, form=True).sync


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_push_to_another_branch_is_ignored(forge):
    result = decision(forge, forges.push_payload(forge, ref="refs/heads/dev"))
    assert (result.status, result.sync) == (202, False)
    assert result.message == "ignored: refs/heads/dev is not refs/heads/main"
    assert "dev" not in result.logged


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_tag_is_ignored(forge):
    event = "Tag Push Hook" if forge == "gitlab" else None
    result = decision(forge, forges.push_payload(forge, ref="refs/tags/v1.2"), event=event)
    assert (result.status, result.sync) == (202, False)
    assert result.message.startswith("ignored: a tag (refs/tags/v1.2)")


@pytest.mark.parametrize("forge", forges.FORGES)
def test_deleting_the_branch_is_ignored(forge):
    result = decision(forge, forges.push_payload(forge, deleted=True))
    assert (result.status, result.sync, result.message) == (202, False, "ignored: refs/heads/main was deleted")


@pytest.mark.parametrize("forge", forges.FORGES)
def test_a_push_for_another_repository_is_ignored_and_named_in_the_answer_only(forge):
    web = forges.REPOSITORIES[forge][0].replace("/home/stacks", "/home/website")
    result = decision(forge, forges.push_payload(forge, web=web))
    assert (result.status, result.sync) == (202, False)
    assert "/home/website" in result.message and "WEBHOOK_REPOSITORY" in result.message
    assert "website" not in result.logged  # the log says nothing of the payload's repository


def test_a_branch_of_the_same_name_elsewhere_on_the_host_is_another_repository():
    result = decision("gitea", forges.push_payload("gitea", web="https://git.example.org/other/stacks"))
    assert not result.sync


@pytest.mark.parametrize("url", [
    "https://github.com/home/stacks.git", "https://github.com/home/stacks", "git@github.com:home/stacks.git",
    "ssh://git@github.com/home/stacks.git", "ssh://git@github.com:22/home/stacks", "https://x-access-token:ghp_abc@github.com/home/stacks.git",
    "https://GitHub.com/Home/Stacks.git", "github.com/home/stacks",
])
def test_every_spelling_of_the_repository_matches(url):
    assert decision("github", repository=repository_identity(url)).sync


def test_github_ping_answers_200():
    headers, body = forges.delivery("github", forges.ping_payload(), SECRET, event="ping")
    headers = lower(headers)
    event = webhook.parse_event(headers, webhook.decode_payload(headers, body))
    assert event.kind == "ping"
    result = webhook.decide(event, "somewhere/else", "main")
    assert (result.status, result.sync) == (200, False)


@pytest.mark.parametrize(("forge", "event"), [
    ("github", "issues"), ("github", "pull_request"), ("gitea", "create"), ("forgejo", "release"), ("gogs", "delete"),
    ("gitlab", "Merge Request Hook"), ("gitlab", "Pipeline Hook"), ("gitlab", "System Hook"),
])
def test_other_events_are_ignored(forge, event):
    payload = {"object_kind": "merge_request"} if forge == "gitlab" else {"action": "opened"}
    result = decision(forge, payload, event=event)
    assert (result.status, result.sync) == (202, False)
    assert result.message == f"ignored: a {event} event is not a push"


def test_json_with_the_forms_content_type_is_read_as_json():
    """What `curl -d` sends from a CI job."""
    body = json.dumps(forges.push_payload("github")).encode()
    headers = {"content-type": "application/x-www-form-urlencoded", "x-github-event": "push"}
    assert webhook.parse_event(headers, webhook.decode_payload(headers, body)).ref == "refs/heads/main"


def test_gitlab_system_hook_push_counts_as_a_push():
    payload = forges.push_payload("gitlab")
    assert decision("gitlab", payload, event="System Hook").sync
    tag = forges.push_payload("gitlab", ref="refs/tags/v1")
    assert not decision("gitlab", tag, event="System Hook").sync


def test_gitlab_commit_is_the_checkout_sha():
    payload = forges.push_payload("gitlab")
    payload["checkout_sha"] = "a" * 40
    assert event_of("gitlab", payload).commit == "a" * 40


@pytest.mark.parametrize(("body", "content_type"), [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"[" * 100000 + b"]" * 100000, "application/json"),
    (b"payload=%7B&payload=%7B", "application/x-www-form-urlencoded"),
    (b"other=1", "application/x-www-form-urlencoded"),
    (b"\xff", "application/x-www-form-urlencoded"),
])
def test_malformed_payloads_are_bad_requests(body, content_type):
    headers = {"content-type": content_type, "x-github-event": "push"}
    with pytest.raises(webhook.BadRequest):
        webhook.parse_event(headers, webhook.decode_payload(headers, body))


@pytest.mark.parametrize("change", [
    lambda p: p.pop("ref"), lambda p: p.update(ref=7), lambda p: p.pop("repository"),
    lambda p: p.update(repository={"name": "stacks"}), lambda p: p.update(repository={"clone_url": 7, "ssh_url": " "}),
])
def test_a_push_without_ref_or_repository_is_a_bad_request(change):
    payload = forges.push_payload("github")
    change(payload)
    with pytest.raises(webhook.BadRequest):
        event_of("github", payload)


def test_no_event_header_or_an_unreadable_one_is_a_bad_request():
    with pytest.raises(webhook.BadRequest, match="no event header"):
        webhook.parse_event({"content-type": "application/json"}, {})
    with pytest.raises(webhook.BadRequest):
        webhook.parse_event({"x-github-event": "push\x00"}, {})


def test_a_url_that_is_no_url_names_no_repository():
    payload = forges.push_payload("github")
    payload["repository"] = {"clone_url": "https://[::1/broken", "html_url": "https://github.com/home/stacks"}
    assert event_of("github", payload).repositories == {"github.com/home/stacks"}


def test_odd_refs_and_commits_are_not_repeated_as_they_are():
    payload = forges.push_payload("github", ref="refs/heads/x\nforged log line")
    result = decision("github", payload)
    assert "\n" not in result.message and not result.sync
    payload = forges.push_payload("github", after="not-a-commit")
    assert event_of("github", payload).commit is None


# -- the HTTP head ------------------------------------------------------------------------------------


def test_parse_head():
    head = webhook.parse_head(b"POST /hooks/composeflux?wait=1 HTTP/1.1\r\nHost: x\r\nX-GitHub-Event:  push \r\nAccept: a\r\naccept: b")
    assert (head.method, head.target, head.version) == ("POST", "/hooks/composeflux?wait=1", "HTTP/1.1")
    assert head.headers == {"host": "x", "x-github-event": "push", "accept": "a, b"}


@pytest.mark.parametrize(("head", "status"), [
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1", 400),
    (b"POST / HTTP/1.1\r\nX-Hub-Signature-256: a\r\nx-hub-signature-256: b", 400),
    (b"POST / HTTP/1.1\r\nX-A: a\r\n folded", 400),
    (b"POST / HTTP/1.1\r\nX-A : a", 400),
    (b"POST / HTTP/1.1\r\nX-A: a\nb", 400),
    (b"POST / HTTP/1.1\r\nno colon", 400),
    (b"POST / HTTP/2.0", 400),
    (b"POST  / HTTP/1.1", 400),
    (b"POST http://x/ HTTP/1.1", 400),
    (b"", 400),
    (b"POST / HTTP/1.1" + b"\r\nX-A: a" * 101, 431),
])
def test_malformed_heads(head, status):
    with pytest.raises(webhook.HttpError) as caught:
        webhook.parse_head(head)
    assert caught.value.status == status


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 411),
    ({"transfer-encoding": "chunked"}, 411),
    ({"transfer-encoding": "chunked", "content-length": "10"}, 411),
    ({"content-length": "-1"}, 400),
    ({"content-length": "1e3"}, 400),
    ({"content-length": "1, 1"}, 400),
    ({"content-length": str((1 << 20) + 1)}, 413),
    ({"content-length": "9" * 30}, 400),
])
def test_body_length_refusals(headers, status):
    with pytest.raises(webhook.HttpError) as caught:
        webhook.body_length(webhook.Head("POST", "/", "HTTP/1.1", headers), 1 << 20)
    assert caught.value.status == status


def test_body_length_accepts_up_to_the_limit():
    assert webhook.body_length(webhook.Head("POST", "/", "HTTP/1.1", {"content-length": str(1 << 20)}), 1 << 20) == 1 << 20
    assert webhook.body_length(webhook.Head("POST", "/", "HTTP/1.1", {"content-length": "0"}), 1 << 20) == 0


@pytest.mark.parametrize(("target", "wait"), [
    ("/", False), ("/?wait=1", True), ("/?wait", True), ("/?wait=true", True), ("/?wait=0", False), ("/x?a=b&wait=yes", True),
    ("/?" + "&".join(["a=1"] * 40), False),
])
def test_wants_wait(target, wait):
    assert webhook.wants_wait(target) is wait


def test_result_answers():
    ok = webhook._result_response({"result": "ok", "status": 0, "summary": "1 deployed, 3 unchanged", "failed": {}})
    assert (ok.status, ok.text) == (200, "sync ok: 1 deployed, 3 unchanged")
    failed = webhook._result_response({"result": "failed", "status": 1, "summary": "1 failed (web: x)",
                                       "failed": {"web": "health gate: unhealthy", "db": "render: ${PW} unset"}})
    assert failed.status == 500
    assert failed.text.splitlines() == ["sync failed (exit status 1): 1 failed (web: x)", "db: render: ${PW} unset",
                                        "web: health gate: unhealthy"]


# -- the prepared file, the secret, the sockets ----------------------------------------------------------


def test_prepare_writes_no_credential(tmp_path):
    conf = tmp_path / "composeflux.conf"
    conf.write_text("GIT_REPO_URL=https://deploy:glpat-s3cr3tt0ken@gitlab.example.org/home/stacks.git\n"
                    "GIT_TOKEN=another-s3cret-token\nGIT_BRANCH=production\nSTACK_PATH=stacks\nTRIGGER_DIR=/srv/spool\n"
                    "INFISICAL_CLIENT_SECRET=infisical-s3cret\n")
    run = tmp_path / "run"
    run.mkdir()
    path = webhook.prepare(conf, {"RUNTIME_DIRECTORY": str(run)})
    assert path == run / "webhook.json"
    text = path.read_text()
    assert "s3cr" not in text and "deploy" not in text
    assert json.loads(text) == {"repository": "gitlab.example.org/home/stacks", "branch": "production",
                                "trigger_dir": "/srv/spool", "result_dir": str(trigger.DEFAULT_RESULT_DIR)}
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in run.iterdir()] == ["webhook.json"]
    assert webhook.read_prepared({"RUNTIME_DIRECTORY": str(run)})["branch"] == "production"


def test_prepare_replaces_a_planted_link_without_following_it(tmp_path):
    conf = tmp_path / "composeflux.conf"
    conf.write_text("GIT_REPO_URL=git@github.com:home/stacks.git\n")
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (run / "webhook.json").symlink_to(victim)
    webhook.prepare(conf, {"RUNTIME_DIRECTORY": str(run)})
    assert victim.read_text() == "keep me"
    assert not (run / "webhook.json").is_symlink()


def test_webhook_repository_overrides_the_identity(tmp_path):
    settings = {"GIT_REPO_URL": "http://192.168.1.10:3000/home/stacks.git"}
    target = webhook.target_from_settings(settings, {"WEBHOOK_REPOSITORY": "https://git.home.example/home/stacks"})
    assert target["repository"] == "git.home.example/home/stacks"
    assert webhook.target_from_settings(settings, {})["repository"] == "192.168.1.10/home/stacks"


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "GIT_REPO_URL: required"), ({"GIT_REPO_URL": "-oProxyCommand=x"}, "GIT_REPO_URL"),
    ({"GIT_REPO_URL": "https://[::1/x"}, "GIT_REPO_URL"), ({"GIT_REPO_URL": "a:b", "GIT_BRANCH": "../x"}, "GIT_BRANCH"),
])
def test_prepare_refuses_what_the_sync_would_refuse(settings, message):
    with pytest.raises(ConfigError, match=message):
        webhook.target_from_settings(settings, {})


def test_prepared_file_missing_or_damaged(tmp_path):
    with pytest.raises(ConfigError, match="--prepare"):
        webhook.read_prepared({"RUNTIME_DIRECTORY": str(tmp_path)})
    (tmp_path / "webhook.json").write_text('{"repository": "x"}')
    with pytest.raises(ConfigError, match="--prepare"):
        webhook.read_prepared({"RUNTIME_DIRECTORY": str(tmp_path)})


def test_prepare_without_its_directory_says_so(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("GIT_REPO_URL=git@h:a/b\n")
    with pytest.raises(ConfigError, match="RuntimeDirectory"):
        webhook.prepare(conf, {"RUNTIME_DIRECTORY": str(tmp_path / "missing")})


def test_the_secret_comes_from_the_credential(tmp_path):
    (tmp_path / "WEBHOOK_SECRET").write_bytes(b"from-the-credential\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "WEBHOOK_SECRET": "from-the-environment"}
    assert webhook.load_secret(environ, from_environment=False) == b"from-the-credential"
    assert webhook.load_secret(environ, from_environment=True) == b"from-the-credential"


def test_the_environment_is_only_for_listen_mode(tmp_path):
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "WEBHOOK_SECRET": "from-the-environment"}
    assert webhook.load_secret(environ, from_environment=True) == b"from-the-environment"
    with pytest.raises(ConfigError, match="LoadCredential=WEBHOOK_SECRET"):
        webhook.load_secret(environ, from_environment=False)
    with pytest.raises(ConfigError, match="not set"):
        webhook.load_secret({"WEBHOOK_SECRET": "\n"}, from_environment=True)


def test_receiver_settings_from_the_environment():
    target = {"repository": "h/a/b", "branch": "main", "trigger_dir": "/s", "result_dir": "/r"}
    settings = webhook.settings_for(target, b"x", {"WEBHOOK_IDLE": "5min", "WEBHOOK_WAIT_TIMEOUT": "0"})
    assert (settings.idle, settings.wait_timeout) == (300.0, 0.0)
    assert "b'x'" not in repr(settings)
    assert webhook.settings_for(target, b"x", {}).idle == 120.0
    with pytest.raises(ConfigError, match="WEBHOOK_IDLE"):
        webhook.settings_for(target, b"x", {"WEBHOOK_IDLE": "soon"})


def test_sockets_passed_to_another_process_are_not_taken():
    assert webhook.listen_sockets({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) == []
    assert webhook.listen_sockets({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) == []
    assert webhook.listen_sockets({}) == []


@pytest.mark.parametrize("address", ["9417", "localhost", ":9417", "127.0.0.1:99999", "127.0.0.1:http"])
def test_listen_needs_host_and_port(address):
    with pytest.raises(ConfigError, match="--listen"):
        webhook.bind(address)


def test_listen_on_ipv4_and_ipv6_loopback():
    listener = webhook.bind("127.0.0.1:0")
    try:
        assert webhook._address(listener).startswith("127.0.0.1:")
    finally:
        listener.close()
    if socket.has_ipv6:
        try:
            listener = webhook.bind("[::1]:0")
        except ConfigError:
            pytest.skip("no IPv6 loopback here")
        try:
            assert webhook._address(listener).startswith("[::1]:")
        finally:
            listener.close()


def test_cli_refuses_listen_with_prepare():
    from click.testing import CliRunner

    from composeflux import cli

    result = CliRunner().invoke(cli.main, ["webhook", "--listen", "127.0.0.1:0", "--prepare"])
    assert result.exit_code == 2


def test_cli_prepare(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from composeflux import cli

    conf = tmp_path / "c.conf"
    conf.write_text("GIT_REPO_URL=git@github.com:home/stacks.git\n")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["--config", str(conf), "webhook", "--prepare"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "webhook.json").read_text())["repository"] == "github.com/home/stacks"


def test_cli_without_a_socket_or_a_secret(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from composeflux import cli

    for name in ("LISTEN_FDS", "LISTEN_PID", "CREDENTIALS_DIRECTORY", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    assert CliRunner().invoke(cli.main, ["webhook"]).exit_code == 3  # no secret
    (tmp_path / "WEBHOOK_SECRET").write_text("s3cret-value")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert CliRunner().invoke(cli.main, ["webhook"]).exit_code == 3  # no webhook.json
    (tmp_path / "webhook.json").write_text(json.dumps({"repository": "h/a/b", "branch": "main", "trigger_dir": "/s",
                                                       "result_dir": "/r"}))
    assert CliRunner().invoke(cli.main, ["webhook"]).exit_code == 2  # no socket


# -- the spool's side: pending requests, the result file ---------------------------------------------------


def test_pending_request(tmp_path):
    assert not trigger.has_pending_request(tmp_path)
    assert not trigger.has_pending_request(tmp_path / "missing")
    trigger.request_sync(tmp_path)
    assert trigger.has_pending_request(tmp_path)
    trigger.drain_requests(tmp_path)
    assert not trigger.has_pending_request(tmp_path)


def result(started, outcome="ok", **extra):
    return {"started": started, "finished": started + 1.5, "status": 0 if outcome == "ok" else 1, "result": outcome,
            "summary": "2 unchanged", "failed": {}, **extra}


def test_publish_and_read_a_result(tmp_path):
    assert trigger.read_result(tmp_path) is None
    path = trigger.publish_result(tmp_path, result(100.0))
    assert path == tmp_path / "last-sync.json"
    assert path.stat().st_mode & 0o777 == 0o644
    assert trigger.read_result(tmp_path) == result(100.0)
    trigger.publish_result(tmp_path, result(200.0, "failed", failed={"web": "x"}))
    assert trigger.read_result(tmp_path)["failed"] == {"web": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["last-sync.json"]  # no temporary file left


def test_publish_into_a_missing_directory_is_no_error(tmp_path):
    assert trigger.publish_result(tmp_path / "missing", result(1.0)) is None


@pytest.mark.parametrize("bad", [{"result": "ok"}, result(float("nan")), result(True), result(1.0, "maybe")])
def test_publish_refuses_a_result_that_cannot_be_waited_for(tmp_path, bad):
    with pytest.raises(ValueError):
        trigger.publish_result(tmp_path, bad)


def test_publish_where_it_cannot_write_explains(tmp_path):
    """A result directory that cannot take the file (here a regular file: as root, permissions
    would not stop the write) is an error that says where, not a crash."""
    where = tmp_path / "results"
    where.write_text("not a directory")
    with pytest.raises(trigger.TriggerError, match=r"cannot publish the sync's result in .*results: Not a directory"):
        trigger.publish_result(where, result(1.0))


@pytest.mark.parametrize("text", ["", "{", "[]", '{"started": "x"}', '{"started": true}'])
def test_a_damaged_result_is_none(tmp_path, text):
    (tmp_path / "last-sync.json").write_text(text)
    assert trigger.read_result(tmp_path) is None


def test_wait_for_a_result_of_a_sync_that_started_after_the_request(tmp_path):
    requested_at = time.time()
    trigger.publish_result(tmp_path, result(requested_at - 10))  # an earlier sync's: not the answer
    threading.Timer(0.2, trigger.publish_result, (tmp_path, result(requested_at + 0.1, summary="1 deployed"))).start()
    answer = trigger.wait_for_result(tmp_path, requested_at, timeout=30, poll=0.02)
    assert answer is not None and answer["summary"] == "1 deployed"


def test_wait_for_a_result_gives_up(tmp_path):
    requested_at = time.time()
    trigger.publish_result(tmp_path, result(requested_at - 10))
    assert trigger.wait_for_result(tmp_path, requested_at, timeout=0.1, poll=0.02) is None
    assert trigger.wait_for_result(tmp_path, requested_at, timeout=30, poll=0.02, cancelled=lambda: True) is None
    assert trigger.wait_for_result(tmp_path / "missing", requested_at, timeout=0) is None
