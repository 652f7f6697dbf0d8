"""Secrets through a whole `composeflux sync`: real CLI, real Docker, real Git, fake managers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import container_ids, containers
from tests.secrets.conftest import BITWARDEN_DEPLOY_KEY_ID, INFISICAL_PROJECT, infisical_state

pytestmark = pytest.mark.docker


def deployed(stderr: str) -> list[str]:
    return re.findall(r"^(\S+): Deploying:", stderr, flags=re.MULTILINE)


def files_text(*roots: Path) -> str:
    """Everything composeflux left on disk (state and runtime directories), for leak checks."""
    texts = []
    for root in roots:
        for path in root.rglob("*") if root.exists() else ():
            if path.is_file() and ".git" not in path.parts:
                texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def use_infisical(cfx, fake, **more) -> None:
    cfx.settings(
        SECRETS_PROVIDER="infisical", INFISICAL_SITE_URL=fake.url, INFISICAL_CLIENT_ID="client-id-1",
        INFISICAL_CLIENT_SECRET="client-secret-s3cr3t-infisical", INFISICAL_PROJECT_ID=INFISICAL_PROJECT,
        INFISICAL_ENVIRONMENT="prod", SECRETS_TIMEOUT="2", **more,
    )


def test_rotation_redeploys_only_the_stacks_that_use_the_secret(cfx, repo, prefix, infisical_fake):
    use_infisical(cfx, infisical_fake, INFISICAL_SECRET_PATH="/,/app")
    repo.add_stack(f"{prefix}-db", environment={"PASSWORD": "${DB_PASSWORD}"})
    repo.add_stack(f"{prefix}-api", environment={"KEY": "${API_KEY}"})
    repo.add_stack(f"{prefix}-plain")
    repo.commit()
    first = cfx.sync("--log-level", "DEBUG")
    assert "PASSWORD=value-db-pw-1" in containers(f"{prefix}-db")["app"].env
    before = {name: container_ids(f"{prefix}-{name}") for name in ("db", "api", "plain")}

    state = infisical_state()
    state["projects"][INFISICAL_PROJECT]["prod"]["/"]["DB_PASSWORD"] = "value-db-pw-2"
    infisical_fake.set_state(state)
    second = cfx.sync("--log-level", "DEBUG")
    assert deployed(second.stderr) == [f"{prefix}-db"]
    assert "PASSWORD=value-db-pw-2" in containers(f"{prefix}-db")["app"].env
    assert container_ids(f"{prefix}-api") == before["api"]
    assert container_ids(f"{prefix}-plain") == before["plain"]

    # The values reached the containers, and nowhere else: not the logs, not the disk.
    everything = first.stdout + first.stderr + second.stdout + second.stderr + files_text(cfx.state, Path(cfx.env["RUNTIME_DIRECTORY"]))
    for value in ("value-db-pw-1", "value-db-pw-2", "value-api-key-1", "client-secret-s3cr3t"):
        assert value not in everything


def test_unreachable_provider_deploys_and_prunes_nothing(cfx, repo, prefix, infisical_fake, closed_port):
    use_infisical(cfx, infisical_fake)
    repo.add_stack(f"{prefix}-keep", environment={"PASSWORD": "${DB_PASSWORD}"})
    repo.add_stack(f"{prefix}-old")
    repo.commit()
    cfx.sync()
    before = {name: container_ids(f"{prefix}-{name}") for name in ("keep", "old")}

    # The next commit adds a stack, edits one and deletes one; the provider is down.
    repo.add_stack(f"{prefix}-new")
    repo.add_stack(f"{prefix}-keep", environment={"PASSWORD": "${DB_PASSWORD}", "V": "2"})
    repo.remove(f"{prefix}-old")
    repo.commit()
    cfx.settings(INFISICAL_SITE_URL=f"http://{closed_port}")
    result = cfx.sync(expect=5)
    assert f"login (universal auth): cannot connect to http://{closed_port}" in result.stderr
    assert {name: container_ids(f"{prefix}-{name}") for name in ("keep", "old")} == before
    assert container_ids(f"{prefix}-new") == {}

    # Same with a login the server refuses.
    cfx.settings(INFISICAL_SITE_URL=infisical_fake.url, INFISICAL_CLIENT_SECRET="client-secret-s3cr3t-wrong")
    result = cfx.sync(expect=5)
    assert "HTTP 401" in result.stderr and "client-secret-s3cr3t" not in result.stderr
    assert {name: container_ids(f"{prefix}-{name}") for name in ("keep", "old")} == before


def test_values_are_masked_in_compose_errors_and_dry_run(cfx, repo, prefix, tmp_path):
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("DB_PASSWORD=file-value-pw\nPORT_SPEC=file-value-port\n")
    secrets_file.chmod(0o600)
    cfx.settings(SECRETS_PROVIDER="file", SECRETS_FILE=secrets_file)
    repo.add_stack(f"{prefix}-ok", environment={"PASSWORD": "${DB_PASSWORD}"})
    # An invalid port: Compose's error message quotes the interpolated value.
    repo.add_stack(f"{prefix}-bad", extra="    ports: [\"${PORT_SPEC}\"]\n")
    repo.commit()
    dry = cfx.sync("--dry-run", "--log-level", "DEBUG", expect=None)
    real = cfx.sync("--log-level", "DEBUG", expect=1)
    assert "PASSWORD=file-value-pw" in containers(f"{prefix}-ok")["app"].env
    assert container_ids(f"{prefix}-bad") == {}
    output = dry.stdout + dry.stderr + real.stdout + real.stderr
    assert "file-value" not in output
    assert "***" in real.stderr  # the error is still there, with the value masked


@pytest.mark.parametrize("provider", ["infisical", "bitwarden"])
def test_deploy_key_from_the_secrets_manager_clones_over_ssh(
    cfx, repo, prefix, sshd, provider, infisical_fake, bitwarden_fake, bitwarden_account, bitwarden_settings
):
    private_key = sshd.client_key.read_text()
    if provider == "infisical":
        state = infisical_state()
        state["projects"][INFISICAL_PROJECT]["prod"]["/deploy"]["DEPLOY_KEY"] = private_key
        infisical_fake.set_state(state)
        use_infisical(cfx, infisical_fake, GIT_DEPLOY_KEY_SECRET_REF="/deploy/DEPLOY_KEY")
    else:
        state = bitwarden_account.state()
        for secret in state["secrets"]:
            if secret["id"] == BITWARDEN_DEPLOY_KEY_ID:
                secret["value"] = private_key
        bitwarden_fake.set_state(state)
        cfx.settings(**bitwarden_settings, GIT_DEPLOY_KEY_SECRET_REF=BITWARDEN_DEPLOY_KEY_ID)
    repo.add_stack(f"{prefix}-viassh")
    repo.commit()
    cfx.settings(GIT_REPO_URL=sshd.url(repo.remote), GIT_SSH_KNOWN_HOSTS=sshd.known_hosts)

    result = cfx.sync("--log-level", "DEBUG")
    assert container_ids(f"{prefix}-viassh")
    key_body = private_key.splitlines()[1]
    runtime = Path(cfx.env["RUNTIME_DIRECTORY"])
    assert key_body not in result.stdout + result.stderr
    assert key_body not in files_text(cfx.state, runtime)  # gone from the runtime dir after the run
    assert not (runtime / "deploy-key").exists()


def test_provider_errors_name_the_provider(cfx, repo, prefix, closed_port):
    cfx.settings(
        SECRETS_PROVIDER="infisical", INFISICAL_SITE_URL=f"http://{closed_port}", INFISICAL_CLIENT_ID="client-id-1",
        INFISICAL_CLIENT_SECRET="client-secret-s3cr3t", INFISICAL_PROJECT_ID=INFISICAL_PROJECT, INFISICAL_ENVIRONMENT="prod",
    )
    repo.add_stack(f"{prefix}-any")
    repo.commit()
    result = cfx.sync(expect=5)
    assert f"infisical: login (universal auth): cannot connect to http://{closed_port}" in result.stderr
