"""Secrets providers: where the values substituted into Compose projects come from.

A provider is built once, while the configuration is loaded (so its settings are validated
before anything is touched), carried on Config, and asked once per sync for every secret it
holds. Values are only ever kept in memory: they go into the run's Masker as soon as they are
fetched, and reach `docker compose` through its environment, never through arguments or files.

The registry below knows every provider's settings keys and which of them are credentials
without importing any provider: a provider module (and what it needs: requests, cryptography)
is imported only when it is selected. Each module exposes

    from_settings(settings, masker) -> SecretsProvider   (raises ConfigError naming the key)

Scopes: fetch() returns one flat mapping. A plain `NAME` key is a global secret, for every
stack; a `STACK/NAME` key is a secret of the stack whose directory is named STACK only, as
the variable NAME. Each provider maps its own convention (a folder, a key prefix, a file per
stack) onto that form; split_scopes() turns the mapping into shared and per-stack parts.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import re
from collections.abc import Mapping

from composeflux.envfile import VARIABLE_NAMES, NameRule, is_valid_name
from composeflux.errors import ConfigError, SecretsError
from composeflux.masking import Masker


@dataclasses.dataclass(frozen=True)
class ProviderInfo:
    module: str | None  # None: built in here
    keys: frozenset[str]  # the settings it reads
    credentials: frozenset[str] = frozenset()  # those of them whose values must be masked


# Keys shared by all providers.
COMMON_KEYS = frozenset({"SECRETS_PROVIDER", "GIT_DEPLOY_KEY_SECRET_REF", "SECRETS_CA_BUNDLE", "SECRETS_TIMEOUT"})

PROVIDERS: dict[str, ProviderInfo] = {
    "none": ProviderInfo(None, frozenset()),
    "infisical": ProviderInfo(
        "composeflux.secrets.infisical",
        frozenset(
            {
                "INFISICAL_CLIENT_ID",
                "INFISICAL_CLIENT_SECRET",
                "INFISICAL_PROJECT_ID",
                "INFISICAL_ENVIRONMENT",
                "INFISICAL_SITE_URL",
                "INFISICAL_SECRET_PATH",
            }
        ),
        credentials=frozenset({"INFISICAL_CLIENT_ID", "INFISICAL_CLIENT_SECRET"}),
    ),
    "bitwarden": ProviderInfo(
        "composeflux.secrets.bitwarden",
        frozenset(
            {
                "BITWARDEN_ACCESS_TOKEN",
                "BITWARDEN_ORGANIZATION_ID",
                "BITWARDEN_PROJECT_ID",
                "BITWARDEN_API_URL",
                "BITWARDEN_IDENTITY_URL",
            }
        ),
        credentials=frozenset({"BITWARDEN_ACCESS_TOKEN"}),
    ),
    "file": ProviderInfo("composeflux.secrets.file", frozenset({"SECRETS_FILE", "SECRETS_DIR"})),
    "command": ProviderInfo("composeflux.secrets.command", frozenset({"SECRETS_COMMAND", "SECRETS_COMMAND_TIMEOUT"})),
}


# --- Scopes ----------------------------------------------------------------------------------

SCOPE_SEPARATOR = "/"
# A stack's directory name, as a scope may name it.
STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
STACK_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"


def is_valid_stack_name(name: str) -> bool:
    return bool(STACK_NAME.match(name))


def scoped_key(stack: str, name: str) -> str:
    """The key under which fetch() returns the secret `name` of the stack `stack`."""
    return f"{stack}{SCOPE_SEPARATOR}{name}"


def key_problem(key: str) -> str | None:
    """What is wrong with a key of fetch()'s mapping (NAME or STACK/NAME), or None if nothing.

    The text does not quote the key: the caller names it (keys are not secret) or, where the
    "key" might be a value pasted without its name, doesn't.
    """
    if SCOPE_SEPARATOR not in key:
        return None if is_valid_name(key) else f"is not a valid variable name ({VARIABLE_NAMES.description})"
    stack, _, name = key.partition(SCOPE_SEPARATOR)
    if SCOPE_SEPARATOR in name:
        return f"has more than one {SCOPE_SEPARATOR} (expected NAME or STACK{SCOPE_SEPARATOR}NAME)"
    if not is_valid_stack_name(stack):
        return f"has no valid stack name before the {SCOPE_SEPARATOR} ({STACK_NAME_RULE})"
    if not is_valid_name(name):
        return f"has no valid variable name after the {SCOPE_SEPARATOR} ({VARIABLE_NAMES.description})"
    return None


def is_valid_key(key: str) -> bool:
    return key_problem(key) is None


# For the KEY=VALUE parser, where the file or command may hold scoped secrets.
SECRET_KEYS = NameRule(
    is_valid_key, f"NAME or STACK{SCOPE_SEPARATOR}NAME; NAME: {VARIABLE_NAMES.description}; STACK: {STACK_NAME_RULE}"
)


@dataclasses.dataclass(frozen=True)
class Scopes:
    """fetch()'s mapping, split: the global secrets and, per stack name, that stack's own."""

    shared: dict[str, str]
    stacks: dict[str, dict[str, str]]


def split_scopes(values: Mapping[str, str]) -> Scopes:
    """Split {NAME or STACK/NAME: value} into shared and per-stack {NAME: value} mappings.

    A malformed key is a SecretsError naming the key (never the value).
    """
    shared: dict[str, str] = {}
    stacks: dict[str, dict[str, str]] = {}
    for key, value in values.items():
        problem = key_problem(key)
        if problem is not None:
            raise SecretsError(f"secrets: the key {key!r} {problem}")
        stack, separator, name = key.partition(SCOPE_SEPARATOR)
        if separator:
            stacks.setdefault(stack, {})[name] = value
        else:
            shared[key] = value
    return Scopes(shared, stacks)


def all_keys() -> frozenset[str]:
    """Every settings key any provider reads."""
    return COMMON_KEYS.union(*(info.keys for info in PROVIDERS.values()))


def credential_keys() -> frozenset[str]:
    """Settings of any provider whose values are credentials. (Matching key names by pattern
    would also hide harmless values such as SECRETS_PROVIDER=infisical.)"""
    return frozenset().union(*(info.credentials for info in PROVIDERS.values()))


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


def provider_from_settings(settings: Mapping[str, str], masker: Masker | None = None) -> SecretsProvider:
    """Build the selected provider. `masker`: the run's masker, which the provider feeds with
    what it learns on the way (session tokens) and uses for its own error messages."""
    name = settings.get("SECRETS_PROVIDER", "none").strip().lower() or "none"
    if name not in PROVIDERS:
        choices = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"SECRETS_PROVIDER: unknown provider {name!r} (choose one of: {choices})")
    module = PROVIDERS[name].module
    if module is None:
        return NoSecrets()
    masker = masker if masker is not None else Masker(settings[key] for key in credential_keys() if key in settings)
    provider: SecretsProvider = importlib.import_module(module).from_settings(settings, masker)
    return provider
