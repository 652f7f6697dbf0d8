"""Data safety against the real engine: each stack runs from its own tree, files a stack uses
change only when that stack is deployed, data next to a compose file is never deleted, and a
dry run changes nothing."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests.conftest import container_ids, containers, free_port, run, service_yaml

pytestmark = pytest.mark.docker


def tree(cfx, name: str) -> Path:
    """The stack's directory in its own tree."""
    return cfx.state / "stacks" / name / "stacks" / name


def in_container(project: str, command: str) -> str:
    return run("docker", "exec", containers(project)["app"].id, "sh", "-c", command).stdout


def test_data_next_to_the_compose_file_survives_down_dry_run_prune_and_revert(cfx, repo, prefix):
    name = f"{prefix}-db"
    # A data directory whose name is full of glob characters (0.1 passed such names to git clean -e).
    repo.write(f"{name}/compose.yaml", service_yaml() + "    volumes:\n      - ./data[1]!:/data\n")
    repo.commit()
    cfx.sync()
    in_container(name, "echo precious > /data/db")
    data = tree(cfx, name) / "data[1]!" / "db"
    assert data.read_text() == "precious\n"

    run("docker", "compose", "-p", name, "down", cwd="/")  # by hand, then the timer's sync
    assert "1 deployed" in cfx.sync().stderr
    assert data.read_text() == "precious\n" and in_container(name, "cat /data/db") == "precious\n"

    repo.write(f"{name}/README", "a change elsewhere\n")
    repo.commit()
    cfx.sync("--dry-run")
    assert data.read_text() == "precious\n"

    commit = repo.git("rev-parse", "HEAD")
    repo.remove(name)
    repo.add_stack(f"{prefix}-other")  # so that the prune is not a prune of everything
    repo.commit("remove the stack")
    result = cfx.sync()
    assert "1 pruned" in result.stderr and container_ids(name) == {}
    archived = re.search(r"were moved to (\S+);", result.stderr).group(1)
    assert Path(archived, "stacks", name, "data[1]!", "db").read_text() == "precious\n"

    repo.git("revert", "--no-edit", "HEAD")
    repo.git("push", "-q", "origin", "HEAD:main")
    result = cfx.sync()
    assert f"restored its earlier files (data next to the compose file) from {archived}" in result.stderr
    assert in_container(name, "cat /data/db") == "precious\n"
    assert commit != repo.git("rev-parse", "HEAD")


def test_a_stack_that_fails_keeps_its_mounted_files_while_the_others_move_on(cfx, repo, prefix):
    good, bad = f"{prefix}-good", f"{prefix}-bad"
    mount = "    volumes:\n      - ../../shared/app.conf:/etc/app.conf:ro\n"
    repo.write("../shared/app.conf", "version 1\n")  # outside STACK_PATH, used by both stacks
    for name in (good, bad):
        repo.write(f"{name}/compose.yaml", service_yaml() + mount)
    repo.commit()
    cfx.sync()
    assert in_container(bad, "cat /etc/app.conf") == "version 1\n"

    repo.write("../shared/app.conf", "version 2\n")
    repo.write(f"{bad}/compose.yaml", service_yaml(environment={"X": "${NOT_SET_ANYWHERE}"}) + mount)
    repo.commit("a new config, and a broken stack")
    result = cfx.sync(expect=1)
    assert "1 deployed, 0 unchanged, 0 pruned, 1 failed" in result.stderr
    assert in_container(good, "cat /etc/app.conf") == "version 2\n"
    # The failed stack's containers still read the file they were deployed with.
    assert in_container(bad, "cat /etc/app.conf") == "version 1\n"
    assert (cfx.state / "stacks" / bad / "shared" / "app.conf").read_text() == "version 1\n"


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under root with its type, mode and content (or link target)."""
    entries: dict[str, object] = {}
    for directory, dirs, files in os.walk(root):
        for item in dirs + files:
            path = Path(directory, item)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                entries[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return entries


def test_a_dry_run_changes_nothing_but_git_objects_and_the_render_cache(cfx, repo, prefix):
    for name in ("keep", "edit", "gone"):
        repo.write(f"{prefix}-{name}/compose.yaml", service_yaml() + "    volumes:\n      - ./conf:/conf\n")
        repo.write(f"{prefix}-{name}/conf/setting", "old\n")
    repo.commit()
    cfx.sync()
    repo.write(f"{prefix}-edit/conf/setting", "new\n")
    repo.remove(f"{prefix}-gone")
    repo.add_stack(f"{prefix}-new")
    repo.commit("edit one, remove one, add one")
    engine_before = {name: container_ids(f"{prefix}-{name}") for name in ("keep", "edit", "gone")}

    def state_directory() -> dict[str, object]:
        # Git's own objects and refs may change (the fetch), and the render cache may.
        entries = snapshot(cfx.state)
        return {path: entry for path, entry in entries.items() if not path.startswith("repo/.git") and path != "render-cache.json"}

    before = state_directory()
    result = cfx.sync("--dry-run")
    assert state_directory() == before
    assert {name: container_ids(f"{prefix}-{name}") for name in ("keep", "edit", "gone")} == engine_before
    planned = dict(line.split()[1::-1] for line in result.stdout.splitlines())

    cfx.sync()
    done = {name: stack["action"] for name, stack in cfx.last_state()["stacks"].items()}
    assert planned == done == {
        f"{prefix}-keep": "unchanged", f"{prefix}-edit": "deploy", f"{prefix}-gone": "prune", f"{prefix}-new": "deploy",
    }
    assert in_container(f"{prefix}-edit", "cat /conf/setting") == "new\n"


def test_a_renamed_stack_that_publishes_a_host_port_comes_up(cfx, repo, prefix):
    port = free_port()
    published = f'    ports: ["127.0.0.1:{port}:8080"]\n'
    repo.write(f"{prefix}-old/compose.yaml", service_yaml() + published)
    repo.add_stack(f"{prefix}-other")
    repo.commit()
    cfx.sync()
    repo.git("mv", f"stacks/{prefix}-old", f"stacks/{prefix}-new")
    repo.commit("rename")
    result = cfx.sync()
    assert "1 deployed, 1 unchanged, 1 pruned, 0 failed" in result.stderr
    assert container_ids(f"{prefix}-old") == {} and containers(f"{prefix}-new")["app"].state == "running"


def test_an_installation_of_0_1_moves_over_without_losing_a_file(cfx, repo, prefix):
    name = f"{prefix}-app"
    repo.write(f"{name}/compose.yaml", service_yaml() + "    volumes:\n      - ./data:/data\n")
    repo.write(f"{name}/.gitignore", ".env.local\n")
    repo.commit()
    cfx.sync()
    # What 0.1 left behind: one clone that the stacks ran from, holding their untracked data,
    # no per-stack trees, and last-sync.json.
    clone = cfx.state / "repo"
    (clone / ".git" / "composeflux-render-checkout").unlink()
    own = cfx.state / "stacks" / name
    (own / "stacks" / name / "data").rename(clone / "stacks" / name / "data")
    (clone / "stacks" / name / "data" / "db").write_text("precious\n")
    (clone / "stacks" / name / ".env.local").write_text("TOKEN=local\n")
    (clone / "notes.txt").write_text("the admin's notes\n")
    run("rm", "-r", str(cfx.state / "stacks"))
    state = json.loads((cfx.state / "state.json").read_text())
    (cfx.state / "state.json").unlink()
    (cfx.state / "last-sync.json").write_text(json.dumps({**state["last_sync"], "stacks": {name: {"action": "deploy", "reason": "new"}}}))

    result = cfx.sync()
    assert "Moving to per-stack working trees" in result.stderr
    assert (tree(cfx, name) / "data" / "db").read_text() == "precious\n"
    assert (tree(cfx, name) / ".env.local").read_text() == "TOKEN=local\n"
    archived = re.search(r"moved notes.txt to (\S+)", result.stderr).group(1)
    assert Path(archived).read_text() == "the admin's notes\n"
    assert in_container(name, "cat /data/db") == "precious\n"
    assert not (cfx.state / "last-sync.json").exists() and json.loads((cfx.state / "state.json").read_text())["version"] == 1


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_state_file_system_is_exit_9_and_leaves_no_half_written_file(cfx, repo, prefix):
    name = f"{prefix}-web"
    cfx.state.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(cfx.state))
    try:
        repo.add_stack(name)
        repo.commit()
        cfx.sync()
        before = (cfx.state / "state.json").read_text()
        filler = fill(cfx.state)

        result = cfx.sync(expect=9)  # nothing new in Git, but the sync cannot be recorded
        assert "the file system is full" in result.stderr and "Traceback" not in result.stderr
        assert "re-initialising" not in result.stderr  # a full disk is no reason to rebuild the clone
        assert (cfx.state / "state.json").read_text() == before
        assert not [p.name for p in cfx.state.iterdir() if p.name.endswith(".tmp")]

        repo.add_stack(name, environment={"CHANGED": "yes"})
        repo.commit()
        result = cfx.sync(expect=9)  # the fetch itself needs room
        assert "full" in result.stderr and "Traceback" not in result.stderr
        assert (cfx.state / "state.json").read_text() == before
        status = run("/usr/bin/python3", "-m", "composeflux", "--config", str(cfx.config_file), "status", env=cfx.env, check=False)
        assert "result: ok" in status.stdout  # the last sync that was recorded

        filler.unlink()
        assert "1 deployed" in cfx.sync().stderr
        assert "CHANGED=yes" in containers(name)["app"].env
    finally:
        run("umount", "-l", str(cfx.state), check=False)


def test_a_config_behind_a_tracked_symlink_redeploys_when_its_target_changes(cfx, repo, prefix):
    name = f"{prefix}-web"
    repo.write("../shared/conf/app.conf", "version 1\n")
    repo.write(f"{name}/compose.yaml", service_yaml() + "    volumes:\n      - ./conf/app.conf:/app.conf:ro\n")
    os.symlink("../../shared/conf", repo.work / "stacks" / name / "conf")
    repo.commit()
    cfx.sync()
    assert in_container(name, "cat /app.conf") == "version 1\n"
    repo.write("../shared/conf/app.conf", "version 2\n")  # only the target of the link changes
    repo.commit()
    assert "1 deployed" in cfx.sync().stderr
    assert in_container(name, "cat /app.conf") == "version 2\n"


def test_the_name_of_a_new_stack_is_claimed_atomically_and_released_when_pruned(cfx, repo, prefix):
    mine, theirs = f"{prefix}-mine", f"{prefix}-theirs"
    # Another instance has claimed `theirs` and is about to deploy it (no container yet).
    run("docker", "volume", "create", "--label", "compose.stack.managed-by=composeflux",
        "--label", "compose.stack.instance=0123456789abcdef", f"{theirs}_composeflux-claim")
    repo.add_stack(mine)
    repo.add_stack(theirs)
    repo.commit()
    result = cfx.sync(expect=1)
    assert "claimed by another composeflux instance (0123456789abcdef" in result.stderr
    assert container_ids(theirs) == {} and container_ids(mine)
    labels = json.loads(run("docker", "volume", "inspect", f"{mine}_composeflux-claim").stdout)[0]["Labels"]
    assert labels["compose.stack.instance"] == containers(mine)["app"].labels["compose.stack.instance"]

    repo.remove(theirs)
    repo.remove(mine)
    repo.add_stack(f"{prefix}-other")
    repo.commit()
    cfx.sync()
    assert run("docker", "volume", "inspect", f"{mine}_composeflux-claim", check=False).returncode != 0
    assert run("docker", "volume", "inspect", f"{theirs}_composeflux-claim", check=False).returncode == 0  # not ours


def test_a_secret_in_the_forms_compose_quotes_it_never_shows(cfx, repo, prefix, tmp_path):
    secret = 'se"cr\\et va=lue9'
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"S='{secret}'\n")
    secrets_file.chmod(0o600)
    cfx.settings(SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file))
    # Compose quotes the value Go-style (\" and \\), or as it is, in its errors.
    for key in ("cpus", "stop_grace_period", "mem_limit"):
        repo.write(f"{prefix}-{key.replace('_', '-')}/compose.yaml", service_yaml() + f"    {key}: ${{S}}\n")
    repo.commit()
    result = cfx.sync(expect=1)
    assert "0 deployed, 0 unchanged, 0 pruned, 3 failed" in result.stderr and "***" in result.stderr
    shown = result.stderr + result.stdout + (cfx.state / "state.json").read_text()
    for form in (secret, json.dumps(secret)[1:-1], 'se\\"cr\\\\et va=lue9', "se%22cr%5Cet"):
        assert form not in shown, form


def test_damaged_state_files_against_the_real_engine(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-web")
    repo.commit()
    cfx.sync()
    (cfx.state / "render-cache.json").write_text("[junk")
    (cfx.state / "state.json").write_text("{junk")
    assert "0 deployed, 1 unchanged" in cfx.sync().stderr
    assert any(p.name.startswith("state.json.damaged-") for p in cfx.state.iterdir())
    (cfx.state / "hash.key").write_text("not a key\n")
    result = cfx.sync(expect=9)
    assert "hash.key is damaged" in result.stderr and "Traceback" not in result.stderr
    assert containers(f"{prefix}-web")["app"].state == "running"  # nothing was touched
