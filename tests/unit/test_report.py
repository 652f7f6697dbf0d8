"""Logging, masking, sd_notify and the state file."""

import json
import logging
import os
import socket

from composeflux import report
from composeflux.report import CommitField, Masker


def capture(level="INFO", log_format="text"):
    masker, commit = Masker(), CommitField()
    report.setup_logging(level, log_format, masker, commit)
    return masker, commit


def test_masker_hides_values_in_messages_arguments_and_tracebacks(capsys):
    masker, _ = capture()
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


def test_json_format_carries_the_structured_fields(capsys):
    _, commit = capture(log_format="json")
    commit.commit = "c0ffee"
    logging.getLogger("composeflux.test").info("Deploying", extra={report.STACK: "web", report.ACTION: "deploy"})
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["message"] == "Deploying"
    assert (entry["stack"], entry["action"], entry["commit"]) == ("web", "deploy", "c0ffee")


def test_journal_is_detected_only_when_stderr_is_that_stream(monkeypatch):
    info = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    assert report.stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
    assert not report.stderr_is_journal()  # inherited by a child whose stderr went elsewhere
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not report.stderr_is_journal()


def test_notify_sends_utf8_status_to_the_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        report.notify("déploiement 1/2: web ✓")
        assert server.recv(4096).decode() == "STATUS=déploiement 1/2: web ✓"


def test_notify_is_harmless_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    report.notify("nothing listens")


def test_state_file_is_replaced_atomically(tmp_path):
    report.write_state(tmp_path, {"result": "ok"})
    report.write_state(tmp_path, {"result": "failed"})
    assert report.read_state(tmp_path) == {"result": "failed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-sync.json"]
