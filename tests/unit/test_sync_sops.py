"""A sync with SOPS-encrypted `.env` files, host-local env files and scoped secrets, in-process
(fake Compose): which value each stack's interpolation sees, what fails alone, what redeploys.
The SOPS files are the real `sops`'s, from ../shared/sops-vectors; tests/integration/test_sops.py
runs env_file, configs, secrets and bind mounts against the real Compose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from composeflux.errors import ConfigError, ExitStatus
from tests.conftest import REPO_ROOT, service_yaml

VECTORS = REPO_ROOT.parent / "shared" / "sops-vectors"
DOCO = VECTORS / "kimdre-doco-cd" / "internal" / "encryption" / "testdata"  # THIS_IS_ENCRYPTED=yes


@pytest.fixture
def age_key(tmp_path) -> Path:
    """The doco-cd vectors' identity, as the host's key file (0600)."""
    key = tmp_path / "age.key"
    shutil.copy(DOCO / "age-key.txt", key)
    key.chmod(0o600)
    return key


def deployed_env(cfx, stack: str) -> dict:
    return cfx.compose.projects[stack]["services"]["app"]["environment"]


def sops_stack(repo, name: str, source: Path = DOCO / "encrypted.env", target: str = ".env.sops") -> None:
    repo.add_stack(name, environment={"SEEN": "${THIS_IS_ENCRYPTED:-none}"})
    (repo.work / repo.stack_path / name / target).write_bytes(source.read_bytes())


@pytest.mark.parametrize("target", [".env.sops", ".env"])
def test_a_sops_dotenv_is_the_stacks_env_and_wins_over_the_shared_envs(cfx, repo, age_key, target):
    sops_stack(repo, "vault", target=target)
    repo.add_stack("plain", environment={"SEEN": "${THIS_IS_ENCRYPTED:-none}"})
    repo.write("stack.yml", "envs:\n  THIS_IS_ENCRYPTED: shared\n")
    repo.commit()
    assert cfx(SOPS_AGE_KEY_FILE=str(age_key)) is ExitStatus.OK
    assert deployed_env(cfx, "vault")["SEEN"] == "yes"
    assert deployed_env(cfx, "plain")["SEEN"] == "shared"  # another stack never sees it


def test_per_stack_envs_and_secrets_win_over_a_sops_env(cfx, repo, age_key, tmp_path):
    sops_stack(repo, "vault")
    repo.write("stack.yml", "stacks:\n  vault:\n    envs:\n      THIS_IS_ENCRYPTED: from-stack-yml\n")
    repo.commit()
    assert cfx(SOPS_AGE_KEY_FILE=str(age_key)) is ExitStatus.OK
    assert deployed_env(cfx, "vault")["SEEN"] == "from-stack-yml"


def test_without_an_identity_the_sops_stack_fails_alone_and_says_why(cfx, repo, caplog):
    sops_stack(repo, "vault")
    repo.add_stack("plain")
    repo.commit()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == ["plain"]
    assert "vault/.env.sops" in cfx.state().stacks["vault"].last_error
    assert "SOPS_AGE_KEY_FILE" in caplog.text


def test_a_tampered_sops_env_fails_its_stack_naming_the_file(cfx, repo, age_key):
    sops_stack(repo, "vault")
    path = repo.work / repo.stack_path / "vault" / ".env.sops"
    text = path.read_text()
    line = next(line for line in text.splitlines() if line.startswith("THIS_IS_ENCRYPTED="))
    start = line.index("data:") + len("data:")
    tampered = line[:start] + ("A" if line[start] != "A" else "B") + line[start + 1 :]
    path.write_text(text.replace(line, tampered))
    repo.add_stack("plain")
    repo.commit()
    assert cfx(SOPS_AGE_KEY_FILE=str(age_key)) is ExitStatus.STACKS_FAILED
    error = cfx.state().stacks["vault"].last_error
    assert "vault/.env.sops" in error and "THIS_IS_ENCRYPTED" in error
    assert "plain" in cfx.compose.projects


def test_a_plain_file_named_env_sops_is_refused(cfx, repo, age_key):
    repo.add_stack("vault")
    repo.write("vault/.env.sops", "A=1\n")
    repo.commit()
    assert cfx(SOPS_AGE_KEY_FILE=str(age_key)) is ExitStatus.STACKS_FAILED
    assert "not a SOPS-encrypted file" in cfx.state().stacks["vault"].last_error


def test_an_age_key_file_others_may_read_is_a_configuration_error(cfx, repo, age_key):
    repo.add_stack("vault")
    repo.commit()
    age_key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"SOPS_AGE_KEY_FILE: .* may be read by group or others"):
        cfx(SOPS_AGE_KEY_FILE=str(age_key))


def test_the_identity_from_the_credentials_directory(cfx, repo, age_key, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(age_key, credentials / "sops-age-key")
    (credentials / "sops-age-key").chmod(0o400)
    sops_stack(repo, "vault")
    repo.commit()
    assert cfx(CREDENTIALS_DIRECTORY=str(credentials)) is ExitStatus.OK
    assert deployed_env(cfx, "vault")["SEEN"] == "yes"


# -- host-local env files ---------------------------------------------------------------------------


def local_env(cfx, stack: str, text: str, mode: int = 0o600) -> Path:
    directory = Path(cfx.settings["LOCAL_ENV_DIR"])
    directory.mkdir(exist_ok=True)
    path = directory / f"{stack}.env"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_host_local_env_file_stands_where_the_env_would_and_a_change_redeploys(cfx, repo):
    repo.add_stack("web", environment={"SEEN": "${LOCAL:-none}"})
    repo.add_stack("db", environment={"SEEN": "${LOCAL:-none}"})
    repo.write("web/.env", "LOCAL=committed\n")
    repo.commit()
    local_env(cfx, "web", "LOCAL='host value'\n")
    assert cfx() is ExitStatus.OK
    assert deployed_env(cfx, "web")["SEEN"] == "host value"
    assert deployed_env(cfx, "db")["SEEN"] == "none"

    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == []
    local_env(cfx, "web", "LOCAL=changed\n")
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == ["web"]
    assert deployed_env(cfx, "web")["SEEN"] == "changed"


def test_a_host_local_env_file_others_may_read_fails_only_its_stack(cfx, repo, caplog):
    repo.add_stack("web")
    repo.add_stack("db")
    repo.commit()
    local_env(cfx, "web", "LOCAL=x\n", mode=0o644)
    local_env(cfx, "ghost", "LOCAL=x\n")
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == ["db"]
    assert "chmod 600" in cfx.state().stacks["web"].last_error
    assert "ghost.env: no stack of that name exists" in caplog.text


# -- scoped secrets --------------------------------------------------------------------------------


def test_a_scoped_secret_is_its_stacks_only_and_its_rotation_redeploys_only_that_stack(cfx, repo, tmp_path):
    for name in ("web", "db"):
        repo.add_stack(name, environment={"SEEN": "${TOKEN}"})
    repo.commit()
    secrets = tmp_path / "secrets.sh"

    def provide(scoped: str) -> dict:
        secrets.write_text(f"#!/bin/sh\nprintf 'TOKEN=global-token-1\\nweb/TOKEN={scoped}\\nghost/X=1\\n'\n")
        secrets.chmod(0o700)
        return {"SECRETS_PROVIDER": "command", "SECRETS_COMMAND": str(secrets)}

    assert cfx(**provide("web-token-1")) is ExitStatus.OK
    assert deployed_env(cfx, "web")["SEEN"] == "web-token-1"
    assert deployed_env(cfx, "db")["SEEN"] == "global-token-1"
    cfx.compose.calls.clear()
    assert cfx(**provide("web-token-2")) is ExitStatus.OK
    assert cfx.compose.called("up") == ["web"]
    assert deployed_env(cfx, "web")["SEEN"] == "web-token-2"
    assert "web-token-2" not in cfx.out


def test_a_scope_for_a_stack_that_does_not_exist_is_warned_about(cfx, repo, tmp_path, caplog):
    repo.add_stack("web", environment={"SEEN": "x"})
    repo.write("web/compose.yaml", service_yaml())
    repo.commit()
    assert cfx(SECRETS_PROVIDER="command", SECRETS_COMMAND="printf 'ghost/TOKEN=abcdefgh\\n'") is ExitStatus.OK
    assert "secrets scoped to ghost, but no stack of that name exists" in caplog.text


def test_a_host_local_env_file_that_is_a_symlink_is_refused(cfx, repo, tmp_path):
    repo.add_stack("web")
    repo.commit()
    target = local_env(cfx, "elsewhere", "LOCAL=x\n")
    (target.parent / "web.env").symlink_to(target)
    assert cfx() is ExitStatus.STACKS_FAILED
    assert "is a symlink" in cfx.state().stacks["web"].last_error
