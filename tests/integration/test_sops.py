"""SOPS-encrypted files in a stack, against the real engine and Compose: a SOPS `.env.sops`, a
SOPS `env_file`, SOPS `configs`/`secrets` files and a bind-mounted SOPS file reach the container
decrypted, the plaintext shows nowhere else, the container keeps it over a restart without
composeflux, re-encryption changes nothing, a new value redeploys, and tampering fails only
that stack. Files are encrypted by tests/sopsenc.py, their data keys wrapped by the real `age` CLI."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from composeflux.compose import Compose
from tests.conftest import TEST_IMAGE, containers, run
from tests.sopsenc import age_keygen, encrypt_file

DB_PASSWORD = "db-pa$word-4f9a1c"  # a literal $, which Compose must not interpolate
API_TOKEN = "api-token-77d0e2b5"
CONFIG = "listen 8080\nsecret_key = cfg-secret-a81f3d\n"
SECRET_FILE = "file-secret-c0ffee99"
BOUND = {"password": "bound-secret-5e5e5e", "user_unencrypted": "admin"}

COMPOSE = f"""\
services:
  app:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "while [ ! -f /die ]; do sleep 0.2; done; rm /die; exit 1"]
    restart: always
    stop_grace_period: 1s
    env_file: app.env
    environment:
      DB_PASSWORD: ${{DB_PASSWORD}}
      GREETING: ${{GREETING}}
    configs:
      - source: appconf
        target: /etc/app.conf
    secrets:
      - token
    volumes:
      - ./bound.yaml:/etc/bound.yaml:ro
configs:
  appconf:
    file: ./app.conf
secrets:
  token:
    file: ./token.txt
"""


@pytest.fixture
def age(tmp_path):
    key_file, recipient = age_keygen(tmp_path)
    return key_file, recipient


def write_sops(repo, path: str, content, fmt: str, recipient: str) -> None:
    target = repo.work / repo.stack_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encrypt_file(fmt, content, age_recipients=[recipient]))


def vault_stack(repo, name: str, recipient: str, token: str = API_TOKEN) -> None:
    repo.write(f"{name}/compose.yaml", COMPOSE)
    write_sops(repo, f"{name}/.env.sops", {"DB_PASSWORD": DB_PASSWORD, "GREETING": "hello"}, "dotenv", recipient)
    write_sops(repo, f"{name}/app.env", {"API_TOKEN": token}, "dotenv", recipient)
    write_sops(repo, f"{name}/app.conf", CONFIG.encode(), "binary", recipient)
    write_sops(repo, f"{name}/token.txt", SECRET_FILE.encode(), "binary", recipient)
    write_sops(repo, f"{name}/bound.yaml", BOUND, "yaml", recipient)


def exec_in(container_id: str, command: str) -> str:
    return run("docker", "exec", container_id, "sh", "-c", command).stdout


def docker_recorder(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Settings that put a recording wrapper in front of every docker program composeflux runs:
    the `docker` CLI (first on PATH) and the Compose plugin, which composeflux starts directly
    (a DOCKER_CONFIG whose cli-plugins holds a wrapper of the real plugin). Each records its
    argument list and runs the real program."""
    record = tmp_path / "docker-argv"
    bin_dir = tmp_path / "bin"
    plugins = tmp_path / "docker-config" / "cli-plugins"
    bin_dir.mkdir()
    plugins.mkdir(parents=True)
    real = Compose()  # the docker CLI and the Compose plugin as composeflux finds them
    assert real.plugin, "the test needs the Compose plugin installed as a docker CLI plugin"
    for shim, program in ((bin_dir / "docker", real.docker), (plugins / "docker-compose", real.plugin)):
        shim.write_text(f'#!/bin/sh\nprintf "%s %s\\n" "$(basename "$0")" "$*" >> {record}\nexec {program} "$@"\n')
        shim.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_CONFIG": str(plugins.parent)}, record


PLAINTEXTS = (DB_PASSWORD, DB_PASSWORD.replace("$", "$$"), API_TOKEN, "cfg-secret-a81f3d", SECRET_FILE, BOUND["password"])


def assert_nowhere(texts: list[str], where: str) -> None:
    for text in texts:
        for secret in PLAINTEXTS:
            assert secret not in text, f"a decrypted value shows in {where}"


def files_under(root: Path) -> list[str]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path.read_bytes().decode("utf-8", errors="replace"))
    return found


def test_sops_files_reach_the_container_decrypted_and_nothing_else(cfx, repo, prefix, age, tmp_path):
    key_file, recipient = age
    vault, plain = f"{prefix}-vault", f"{prefix}-plain"
    vault_stack(repo, vault, recipient)
    repo.add_stack(plain)
    repo.commit("sops stack")
    recording, argv_record = docker_recorder(tmp_path)
    cfx.settings(SOPS_AGE_KEY_FILE=key_file, **recording)

    result = cfx.sync()

    app = containers(vault)["app"]
    env = dict(item.split("=", 1) for item in app.env)
    assert env["DB_PASSWORD"] == DB_PASSWORD
    assert env["GREETING"] == "hello"
    assert env["API_TOKEN"] == API_TOKEN
    assert not [name for name in env if name.startswith("sops_")]
    assert exec_in(app.id, "cat /etc/app.conf") == CONFIG
    assert exec_in(app.id, "cat /run/secrets/token") == SECRET_FILE
    bound = exec_in(app.id, "cat /etc/bound.yaml")
    assert BOUND["password"] in bound and "sops" not in bound
    assert containers(plain)["app"].state == "running"

    # Nowhere else: the log, labels, the state directory (state, cache, the stack's tree),
    # the arguments of every docker command composeflux ran.
    assert_nowhere([result.stdout, result.stderr], "the log")
    labels = json.loads(run("docker", "inspect", app.id).stdout)[0]["Config"]["Labels"]
    assert_nowhere([json.dumps(labels)], "the labels")
    assert_nowhere(files_under(cfx.state), "the state directory")
    argv = argv_record.read_text()
    assert any(line.startswith(f"docker-compose -p {vault} ") and " up --detach" in line for line in argv.splitlines()), argv
    assert_nowhere([argv], "process arguments")
    # Compose itself wrote no decrypted file next to the project (it copies into the container).
    assert_nowhere(files_under(repo.work), "the repository")

    # The container keeps its files when it restarts without composeflux (as after a reboot,
    # the restart policy brings it back).
    exec_in(app.id, "echo > /die")
    deadline = time.monotonic() + 30
    while json.loads(run("docker", "inspect", app.id).stdout)[0]["RestartCount"] < 1:
        assert time.monotonic() < deadline, "the container was not restarted by its restart policy"
        time.sleep(0.2)
    while containers(vault)["app"].state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert exec_in(app.id, "cat /etc/app.conf") == CONFIG
    assert exec_in(app.id, "cat /run/secrets/token") == SECRET_FILE


def test_reencrypting_changes_nothing_a_new_value_redeploys_and_tampering_fails_only_that_stack(cfx, repo, prefix, age):
    key_file, recipient = age
    vault, plain = f"{prefix}-vault", f"{prefix}-plain"
    vault_stack(repo, vault, recipient)
    repo.add_stack(plain)
    repo.commit("sops stack")
    cfx.settings(SOPS_AGE_KEY_FILE=key_file)
    cfx.sync()
    first = containers(vault)["app"].id
    plain_id = containers(plain)["app"].id

    vault_stack(repo, vault, recipient)  # the same values, encrypted anew (new data key, IVs, MAC)
    repo.commit("re-encrypted")
    cfx.sync()
    assert containers(vault)["app"].id == first

    vault_stack(repo, vault, recipient, token="api-token-rotated-1234")
    repo.commit("rotated")
    cfx.sync()
    rotated = containers(vault)["app"]
    assert rotated.id != first
    assert "API_TOKEN=api-token-rotated-1234" in rotated.env
    assert containers(plain)["app"].id == plain_id

    conf = repo.work / repo.stack_path / vault / "app.conf"
    document = json.loads(conf.read_text())
    data = document["data"]
    start = data.index("data:") + len("data:")
    flipped = "A" if data[start] != "A" else "B"
    document["data"] = data[:start] + flipped + data[start + 1 :]
    conf.write_text(json.dumps(document))
    repo.add_stack(plain, environment={"CHANGED": "yes"})
    repo.commit("tampered")
    result = cfx.sync(expect=1)
    assert f"{vault}/app.conf" in result.stderr
    assert containers(vault)["app"].id == rotated.id  # left running as it was
    assert containers(vault)["app"].state == "running"
    assert containers(plain)["app"].id != plain_id  # the other stack deployed


def test_without_the_identity_the_stack_fails_clearly_and_keeps_running(cfx, repo, prefix, age, tmp_path):
    key_file, recipient = age
    vault = f"{prefix}-vault"
    vault_stack(repo, vault, recipient)
    repo.commit("sops stack")
    cfx.settings(SOPS_AGE_KEY_FILE=key_file)
    cfx.sync()
    running = containers(vault)["app"].id

    (tmp_path / "other").mkdir()
    other_key, _ = age_keygen(tmp_path / "other")
    cfx.settings(SOPS_AGE_KEY_FILE=other_key)
    repo.write(f"{vault}/README", "touch\n")
    repo.commit("another commit")
    result = cfx.sync(expect=1)
    assert "no age identity matched" in result.stderr
    assert containers(vault)["app"].id == running
