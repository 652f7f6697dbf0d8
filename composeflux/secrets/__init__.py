"""Secrets providers: where the values substituted into Compose projects come from.

A provider is built from the merged settings (composeflux.conf < environment < systemd
credentials), validated up front, and asked once per sync for every secret it holds.
Values are only ever kept in memory: the sync masks them in logs and feeds them to
`docker compose` through its environment, never through arguments or files.

Each provider lives in its own module, imported only when selected, exposing:
    KEYS: frozenset of the settings keys it reads (so config validation knows them)
    from_settings(settings) -> SecretsProvider   (raises ConfigError naming the key)
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping

from composeflux.errors import ConfigError, SecretsError

# SECRETS_PROVIDER value -> module implementing it (None: built in here).
PROVIDER_MODULES = {
    "none": None,
    "infisical": "composeflux.secrets.infisical",
    "bitwarden": "composeflux.secrets.bitwarden",
    "file": "composeflux.secrets.file",
    "command": "composeflux.secrets.command",
}

# Keys shared by all providers.
COMMON_KEYS = frozenset(
    {"SECRETS_PROVIDER", "GIT_DEPLOY_KEY_SECRET_REF", "SECRETS_CA_BUNDLE", "SECRETS_TIMEOUT"}
)

# Settings whose values are credentials, to be masked wherever text is shown. (Matching key
# names by pattern would also hide harmless values such as SECRETS_PROVIDER=infisical.)
CREDENTIAL_KEYS = frozenset({"INFISICAL_CLIENT_ID", "INFISICAL_CLIENT_SECRET", "BITWARDEN_ACCESS_TOKEN"})


class SecretsProvider(abc.ABC):
    """Fetches secrets from one source. Errors are SecretsError naming the provider."""

    name: str = "?"

    @abc.abstractmethod
    def fetch(self) -> dict[str, str]:
        """Return every secret as {variable name: value}."""

    def fetch_deploy_key(self, ref: str) -> str:
        """Return the SSH private key the Git source should use (GIT_DEPLOY_KEY_SECRET_REF)."""
        secrets = self.fetch()
        if ref not in secrets:
            raise SecretsError(f"{self.name}: deploy key secret {ref!r} not found")
        return secrets[ref]


class NoSecrets(SecretsProvider):
    name = "none"

    def fetch(self) -> dict[str, str]:
        return {}

    def fetch_deploy_key(self, ref: str) -> str:
        raise SecretsError("none: GIT_DEPLOY_KEY_SECRET_REF needs a secrets provider (SECRETS_PROVIDER)")


def _provider_module(name: str):
    return importlib.import_module(PROVIDER_MODULES[name])


def all_keys() -> frozenset[str]:
    """Every settings key any provider reads."""
    keys = set(COMMON_KEYS)
    for name, module in PROVIDER_MODULES.items():
        if module is not None:
            try:
                keys |= _provider_module(name).KEYS
            except ImportError:
                continue
    return frozenset(keys)


def provider_from_settings(settings: Mapping[str, str]) -> SecretsProvider:
    name = settings.get("SECRETS_PROVIDER", "none").strip().lower() or "none"
    if name not in PROVIDER_MODULES:
        choices = ", ".join(sorted(PROVIDER_MODULES))
        raise ConfigError(f"SECRETS_PROVIDER: unknown provider {name!r} (choose one of: {choices})")
    if name == "none":
        return NoSecrets()
    return _provider_module(name).from_settings(settings)
