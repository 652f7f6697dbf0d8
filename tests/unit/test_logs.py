"""Logging (text, JSON, journald detection) and sd_notify."""

import json
import logging
import os
import socket

from composeflux import logs
from composeflux.masking import Masker
from composeflux.sdnotify import Notifier


def test_masker_hides_values_in_messages_arguments_and_tracebacks(capsys):
    masker = Masker()
    logs.setup_logging("INFO", "text", masker)
    masker.add(["hunter22", "abc", "hunter22-extended"])
    log = logging.getLogger("composeflux.test")
    log.info("token %s and %s", "hunter22", "hunter22-extended")
    try:
        raise RuntimeError("failed with hunter22")
    except RuntimeError:
        log.exception("boom")
    err = capsys.readouterr().err
    assert "hunter22" not in err
    assert "token *** and ***" in err and "RuntimeError: failed with ***" in err
    assert masker("abc is too short to mask") == "abc is too short to mask"


def test_json_format_carries_the_structured_fields_and_is_masked(capsys):
    masker = Masker(["s3cr3t-\"quoted\""])
    commit = logs.setup_logging("INFO", "json", masker)
    commit.commit = "c0ffee"
    logging.getLogger("composeflux.test").info("Deploying s3cr3t-\"quoted\"", extra={logs.STACK: "web", logs.ACTION: "deploy"})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["message"] == "Deploying ***"
    assert "s3cr3t" not in line
    assert (entry["stack"], entry["action"], entry["commit"]) == ("web", "deploy", "c0ffee")


def test_setting_up_again_replaces_our_handler_only():
    other = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(other)
    try:
        logs.setup_logging("INFO", "text", Masker())
        logs.setup_logging("DEBUG", "text", Masker())
        ours = [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]
        assert len(ours) == 1 and other in root.handlers
    finally:
        root.removeHandler(other)


def test_journal_is_detected_only_when_stderr_is_that_stream(monkeypatch):
    info = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    assert logs.stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
    assert not logs.stderr_is_journal()  # inherited by a child whose stderr went elsewhere
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not logs.stderr_is_journal()


def test_notify_sends_masked_utf8_status_to_the_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)  # never hang the suite: no datagram is a failure, not a wait
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        Notifier(Masker(["hunter22"]))("déploiement 1/2: web ✓ hunter22")
        assert server.recv(4096).decode() == "STATUS=déploiement 1/2: web ✓ ***"


def test_notify_is_harmless_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    Notifier(Masker())("nothing listens")
