"""The fakes are faithful: the official SDKs and composeflux read the same secrets from them.

The SDKs (infisicalsdk, bitwarden-sdk from PyPI) are test-only and live in .venv-sdk, made by
tests/secrets/setup.sh; they run in their own process through tests/fakes/official_client.py.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from composeflux.secrets import provider_from_settings, split_scopes
from tests.secrets.conftest import (
    BITWARDEN_DEPLOY_KEY_ID,
    BITWARDEN_ORGANIZATION,
    BITWARDEN_PROJECT,
    INFISICAL_PROJECT,
    infisical_state,
)

ROOT = Path(__file__).resolve().parent.parent.parent
SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"
DRIVER = ROOT / "tests" / "fakes" / "official_client.py"


def official_client(kind: str, args: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    probe = None
    if SDK_PYTHON.exists():
        probe = subprocess.run([str(SDK_PYTHON), "-c", "import infisical_sdk, bitwarden_sdk"], capture_output=True, timeout=60)
    if probe is None or probe.returncode != 0:
        reason = (
            f"the official SDKs (PyPI: infisicalsdk, bitwarden-sdk) are not installed in {SDK_PYTHON.parent.parent}; "
            "run tests/secrets/setup.sh"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return subprocess.run(
        [str(SDK_PYTHON), str(DRIVER), kind, json.dumps(args)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize("v4", [True, False], ids=["v4-server", "v3-only-server"])
def test_infisical_sdk_and_composeflux_agree(infisical_fake, infisical_settings, v4):
    state = infisical_state(v4=v4)
    infisical_fake.set_state(state)
    paths = ["/", "/app"]
    result = official_client(
        "infisical",
        {"url": infisical_fake.url, "client_id": infisical_settings["INFISICAL_CLIENT_ID"],
         "client_secret": infisical_settings["INFISICAL_CLIENT_SECRET"], "project_id": INFISICAL_PROJECT,
         "environment": "prod", "paths": paths, "deploy_key": "/deploy/DEPLOY_KEY"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    official = json.loads(result.stdout)

    # The SDK reads the fake's recursive listing: every folder's secrets, each with its secretPath.
    folders = state["projects"][INFISICAL_PROJECT]["prod"]
    assert sorted(map(tuple, official["recursive"])) == sorted(
        (path, name, value) for path, secrets in folders.items() for name, value in secrets.items()
    )

    provider = provider_from_settings({**infisical_settings, "INFISICAL_SECRET_PATH": ",".join(paths)})
    scopes = split_scopes(provider.fetch())
    assert scopes.shared == official["secrets"]
    # /app is a configured path itself; /deploy, right below /, is the scope of a stack "deploy".
    assert scopes.stacks == {"deploy": {name: value for folder, name, value in official["recursive"] if folder == "/deploy"}}
    assert provider.fetch_deploy_key("/deploy/DEPLOY_KEY") == official["deploy_key"]
    assert official["secrets"]["SHARED"] == "value-shared-app"  # last path wins for both


def bitwarden_args(fake, account) -> dict:
    return {"api_url": f"{fake.url}/api", "identity_url": f"{fake.url}/identity",
            "access_token": account.access_token, "organization_id": BITWARDEN_ORGANIZATION,
            "project_id": BITWARDEN_PROJECT, "deploy_key_id": BITWARDEN_DEPLOY_KEY_ID}


def test_bitwarden_sdk_and_composeflux_agree(bitwarden_fake, bitwarden_account, bitwarden_settings, test_ca):
    # The SDK refuses plain http; it trusts the throwaway CA through SSL_CERT_FILE.
    result = official_client("bitwarden", bitwarden_args(bitwarden_fake, bitwarden_account), {"SSL_CERT_FILE": str(test_ca[0])})
    assert result.returncode == 0, result.stderr[-2000:]
    official = json.loads(result.stdout)

    provider = provider_from_settings(bitwarden_settings)
    assert provider.fetch() == official["secrets"]
    assert provider.fetch_deploy_key(BITWARDEN_DEPLOY_KEY_ID) == official["deploy_key"]
    assert official["secrets"]["DB_PASSWORD"] == "bw-value-db-pw"


def test_bitwarden_sdk_also_rejects_the_tampered_secret(bitwarden_fake, bitwarden_account, test_ca):
    """The fake's tampering is a real MAC failure, not something only composeflux notices."""
    state = bitwarden_account.state()
    state["tampered"] = [s["id"] for s in state["secrets"]]
    bitwarden_fake.set_state(state)
    result = official_client("bitwarden", bitwarden_args(bitwarden_fake, bitwarden_account), {"SSL_CERT_FILE": str(test_ca[0])})
    assert result.returncode != 0
    assert "bw-value" not in result.stdout
    assert "decryption operation failed" in result.stderr
