"""A damaged state directory never crashes every later run: each case is repaired, or reported
with its own exit status and a message that says what to do."""

from __future__ import annotations

import json
import stat

import pytest

from composeflux import state
from composeflux.errors import ExitStatus


@pytest.fixture
def deployed(cfx, repo):
    repo.add_stack("web")
    repo.commit()
    assert cfx() is ExitStatus.OK
    cfx.compose.calls.clear()
    return cfx


@pytest.mark.parametrize("damage", ["empty", "junk", "short", "directory", "symlink"])
def test_a_damaged_hash_key_is_exit_9_and_changes_nothing(deployed, capsys, tmp_path, damage):
    key = deployed.state_dir / "hash.key"
    key.unlink()
    if damage == "empty":
        key.write_text("")
    elif damage == "junk":
        key.write_text("not hex at all\n")
    elif damage == "short":
        key.write_text("abcd\n")
    elif damage == "directory":
        key.mkdir()
    else:
        (tmp_path / "elsewhere").write_text("00" * 32)
        key.symlink_to(tmp_path / "elsewhere")
    deployed.repo.add_stack("web", environment={"NEW": "1"})
    deployed.repo.commit()
    assert deployed() is ExitStatus.STATE
    err = capsys.readouterr().err
    assert "hash.key" in err and "Traceback" not in err
    assert deployed.compose.called("up") == []
    assert deployed.state().last_sync.status == 9  # recorded: `status` does not say ok


def test_a_hash_key_readable_by_others_is_fixed(deployed, caplog):
    key = deployed.state_dir / "hash.key"
    key.chmod(0o644)
    assert deployed() is ExitStatus.OK
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "now 0600" in caplog.text


@pytest.mark.parametrize("damage", ["junk", "list", "directory", "symlink"])
def test_a_damaged_render_cache_only_costs_renders(deployed, damage, tmp_path):
    cache = deployed.state_dir / "render-cache.json"
    cache.unlink()
    if damage == "junk":
        cache.write_bytes(b"\x00\xff{")
    elif damage == "list":
        cache.write_text("[]")
    elif damage == "directory":
        cache.mkdir()
    else:
        cache.symlink_to(tmp_path / "nowhere.json")
    assert deployed() is ExitStatus.OK
    assert deployed.compose.called("config") == ["web"] and deployed.compose.called("up") == []


@pytest.mark.parametrize("damage", ["empty", "junk", "shape", "directory"])
def test_a_damaged_state_file_is_set_aside_and_the_sync_goes_on(deployed, damage):
    path = deployed.state_dir / state.STATE_FILE
    path.unlink()
    if damage == "empty":
        path.write_text("")
    elif damage == "junk":
        path.write_text("{{{")
    elif damage == "shape":
        path.write_text(json.dumps({"version": 1, "stacks": [1, 2], "last_sync": "x", "history": None}))
    else:
        path.mkdir()
    assert deployed() is ExitStatus.OK
    assert deployed.compose.called("up") == []
    assert deployed.state().last_sync.result == "ok"
    set_aside = any(p.name.startswith("state.json.damaged-") for p in deployed.state_dir.iterdir())
    assert set_aside == (damage != "shape")  # a valid file with odd fields is read, the odd fields ignored


@pytest.mark.parametrize("damage", ["directory", "symlink"])
def test_an_unusable_lock_file_is_exit_9(deployed, damage, tmp_path, capsys):
    lock = deployed.state_dir / "sync.lock"
    lock.unlink()
    if damage == "directory":
        lock.mkdir()
    else:
        lock.symlink_to(tmp_path / "elsewhere.lock")
    assert deployed() is ExitStatus.STATE
    err = capsys.readouterr().err
    assert "sync.lock" in err and "Traceback" not in err
    assert deployed.compose.calls == []


def test_a_state_directory_that_is_a_file_is_exit_9(cfx, repo, capsys):
    repo.add_stack("web")
    repo.commit()
    cfx.state_dir.write_text("oops")
    assert cfx() is ExitStatus.STATE
    assert "exists and is not a directory" in capsys.readouterr().err


def test_a_clone_path_that_is_a_file_or_foreign_is_a_named_error(cfx, repo, tmp_path, capsys):
    repo.add_stack("web")
    repo.commit()
    clone = tmp_path / "clone"
    clone.write_text("a file")
    assert cfx(GIT_CLONE_PATH=str(clone)) is ExitStatus.GIT
    assert "is not a directory" in capsys.readouterr().err
    clone.unlink()
    clone.mkdir()
    (clone / ".git").write_text("gitdir: /somewhere/else\n")
    assert cfx(GIT_CLONE_PATH=str(clone)) is ExitStatus.GIT
    assert "is not a clone composeflux made" in capsys.readouterr().err
    assert (clone / ".git").read_text() == "gitdir: /somewhere/else\n"
