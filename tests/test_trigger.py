import os
import threading

import pytest

from composeflux import trigger


def test_request_then_drain(tmp_path):
    first = trigger.request_sync(tmp_path)
    second = trigger.request_sync(tmp_path)
    assert first != second
    assert first.parent == tmp_path and first.name.startswith("request-")
    assert first.stat().st_size == 0
    assert trigger.drain_requests(tmp_path) == 2
    assert list(tmp_path.iterdir()) == []
    assert trigger.drain_requests(tmp_path) == 0


def test_default_dir_is_the_path_units_spool():
    assert str(trigger.DEFAULT_TRIGGER_DIR) == "/var/spool/composeflux"


def test_drain_missing_directory_is_no_error(tmp_path):
    assert trigger.drain_requests(tmp_path / "missing") == 0


def test_drain_removes_stray_entries_so_the_path_unit_cannot_loop(tmp_path):
    (tmp_path / "stray").write_text("x")
    (tmp_path / "emptydir").mkdir()
    os.symlink("/etc/passwd", tmp_path / "link")
    trigger.request_sync(tmp_path)
    assert trigger.drain_requests(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []
    assert os.path.exists("/etc/passwd")  # the link was removed, not its target


def test_request_into_missing_directory_explains(tmp_path):
    with pytest.raises(trigger.TriggerError, match="does not exist"):
        trigger.request_sync(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_request_without_permission_names_the_group(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o770)
    tmp_path.chmod(0o755)
    pid = os.fork()
    if pid == 0:  # child: become nobody and try
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                trigger.request_sync(spool)
            except trigger.TriggerError as exc:
                code = 0 if "composeflux-trigger" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_concurrent_requests_never_collide(tmp_path):
    made = []

    def worker():
        for _ in range(50):
            made.append(trigger.request_sync(tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 200
    assert trigger.drain_requests(tmp_path) == 200


def test_cli_trigger_uses_trigger_dir(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from composeflux import cli

    monkeypatch.setenv("TRIGGER_DIR", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["--config", str(tmp_path / "missing.conf"), "trigger"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.iterdir())) == 1
    monkeypatch.setenv("TRIGGER_DIR", str(tmp_path / "missing"))
    result = CliRunner().invoke(cli.main, ["trigger"])
    assert result.exit_code == 1
