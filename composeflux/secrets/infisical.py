"""Infisical, with a Universal Auth machine identity.

    POST {site}/api/v1/auth/universal-auth/login  {"clientId", "clientSecret"} -> accessToken
    GET  {site}/api/v4/secrets?projectId=&environment=&secretPath=&recursive=true&...   (Bearer)
    GET  {site}/api/v3/secrets/raw?workspaceId=&...   the same, for servers without v4

One recursive listing per INFISICAL_SECRET_PATH folder; each secret's `secretPath` says where
it lives: in the folder itself it is global (NAME), in a folder `<folder>/<stack>` it belongs
to that stack (STACK/NAME), anywhere deeper it is not used. A folder in or below another,
deeper INFISICAL_SECRET_PATH folder is left to that path's own listing.

A plain client on requests rather than an SDK: `infisical-python` is archived and a native
wheel Debian doesn't ship, `infisicalsdk` pulls in boto3; these two calls are all we need.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Literal, overload

import requests

from composeflux.envfile import is_valid_name
from composeflux.errors import ConfigError, SecretsError
from composeflux.masking import Masker
from composeflux.rendered import JSON
from composeflux.secrets import SecretsProvider, is_valid_stack_name, scoped_key
from composeflux.secrets._http import HttpClient, check_base_url, connection_settings

log = logging.getLogger("composeflux.secrets")

DEFAULT_SITE_URL = "https://app.infisical.com"


_REQUIRED = ("INFISICAL_CLIENT_ID", "INFISICAL_CLIENT_SECRET", "INFISICAL_PROJECT_ID", "INFISICAL_ENVIRONMENT")


def from_settings(settings: Mapping[str, str], masker: Masker) -> InfisicalProvider:
    for key in _REQUIRED:
        if not settings.get(key, "").strip():
            raise ConfigError(f"{key}: required when SECRETS_PROVIDER=infisical")
    site_url = check_base_url("INFISICAL_SITE_URL", settings.get("INFISICAL_SITE_URL") or DEFAULT_SITE_URL)
    paths = parse_paths(settings.get("INFISICAL_SECRET_PATH", ""))
    timeout, verify = connection_settings(settings)
    return InfisicalProvider(
        site_url=site_url,
        client_id=settings["INFISICAL_CLIENT_ID"].strip(),
        client_secret=settings["INFISICAL_CLIENT_SECRET"].strip(),
        project_id=settings["INFISICAL_PROJECT_ID"].strip(),
        environment=settings["INFISICAL_ENVIRONMENT"].strip(),
        paths=paths,
        timeout=timeout,
        verify=verify,
        masker=masker,
    )


def parse_paths(raw: str) -> list[str]:
    """INFISICAL_SECRET_PATH: comma-separated folder paths, '/' when empty."""
    paths = []
    for item in raw.split(","):
        path = item.strip()
        if not path:
            continue
        if not path.startswith("/"):
            raise ConfigError(f"INFISICAL_SECRET_PATH: {path!r} must start with /")
        paths.append(path.rstrip("/") or "/")
    return paths or ["/"]


class InfisicalProvider(SecretsProvider):
    name = "infisical"

    def __init__(
        self,
        *,
        site_url: str,
        client_id: str,
        client_secret: str,
        project_id: str,
        environment: str,
        paths: list[str],
        timeout: float,
        verify: str | bool,
        masker: Masker,
    ) -> None:
        self.site_url = site_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.project_id = project_id
        self.environment = environment
        self.paths = paths
        self.http = HttpClient(self.name, timeout, verify, masker)
        self.http.masker.add([client_secret])
        self._token: str | None = None
        # Set once v4 turned out to be missing, so the rest of this sync goes straight to v3.
        self._use_v3 = False

    def fetch(self) -> dict[str, str]:
        """Every secret of every configured path (NAME) and of its stack folders (STACK/NAME);
        on a duplicate key the last path wins."""
        secrets: dict[str, str] = {}
        for path in self.paths:
            body = self._get_secrets("", path, f"listing secrets in {path}")
            entries = body.get("secrets")
            if not isinstance(entries, list):
                raise self.http.error(f"listing secrets in {path}: the answer has no 'secrets' list")
            found = self._secrets_of(path, entries)
            if not found:
                log.warning("infisical: no secrets in %s of environment %s (does that folder exist?)", path, self.environment)
            secrets.update(found)
        return secrets

    def _secrets_of(self, base: str, entries: list[JSON]) -> dict[str, str]:
        """{NAME or STACK/NAME: value} from the recursive listing of the configured path `base`."""
        found: dict[str, str] = {}
        ignored: set[str] = set()
        for entry in entries:
            folder = self._folder_of(entry, base)
            if self._owner(folder) != base:
                continue  # another configured path's listing takes these
            if folder == base:
                name, value = self._name_and_value(entry, folder)
                found[name] = value
                continue
            stack = folder.removeprefix(base).lstrip("/")
            if "/" in stack or not is_valid_stack_name(stack):
                ignored.add(folder)
                continue
            name, value = self._name_and_value(entry, folder)
            found[scoped_key(stack, name)] = value
        for folder in sorted(ignored):
            log.debug(
                "infisical: ignoring the secrets in %s: only %s itself and its folders named after a stack are read",
                folder,
                base,
            )
        return found

    def _folder_of(self, entry: JSON, base: str) -> str:
        """The folder a listed secret lives in (its secretPath), normalized like parse_paths()."""
        if not isinstance(entry, dict):
            raise self.http.error(f"secrets in {base}: unexpected answer (a secret is not an object)")
        folder = entry.get("secretPath")
        if not isinstance(folder, str) or not folder.startswith("/"):
            raise self.http.error(f"secrets in {base}: unexpected answer (a secret without secretPath)")
        return folder.rstrip("/") or "/"

    def _owner(self, folder: str) -> str | None:
        """The configured path whose listing `folder` belongs to: the deepest one it is in."""
        owners = [path for path in self.paths if path == "/" or folder == path or folder.startswith(path + "/")]
        return max(owners, key=len, default=None)

    def fetch_deploy_key(self, ref: str) -> str:
        """One secret by name: 'NAME' (searched in the configured paths, last first) or '/folder/NAME'."""
        if "/" in ref:
            folder, _, name = ref.rpartition("/")
            candidates = [folder or "/"]
        else:
            name, candidates = ref, list(reversed(self.paths))
        for path in candidates:
            body = self._get_secrets(name, path, f"getting deploy key {ref}", missing_ok=True)
            if body is not None:
                # Any name will do here: it never becomes a variable.
                return self._name_and_value(body.get("secret"), path, check_name=False)[1]
        raise self.http.error(f"deploy key secret {ref!r} not found in {', '.join(candidates)}")

    def _login(self) -> str:
        if self._token is None:
            what = "login (universal auth)"
            response = self.http.request(
                "POST",
                f"{self.site_url}/api/v1/auth/universal-auth/login",
                what,
                json={"clientId": self.client_id, "clientSecret": self.client_secret},
            )
            token = self.http.json(response, what).get("accessToken")
            if not isinstance(token, str) or not token:
                raise self.http.error(f"{what}: the answer has no access token")
            self.http.masker.add([token])
            self._token = token
        return self._token

    @overload
    def _get_secrets(self, name: str, path: str, what: str, missing_ok: Literal[False] = False) -> dict[str, JSON]: ...
    @overload
    def _get_secrets(self, name: str, path: str, what: str, missing_ok: bool) -> dict[str, JSON] | None: ...

    def _get_secrets(self, name: str, path: str, what: str, missing_ok: bool = False) -> dict[str, JSON] | None:
        """GET the list (name == '') or one secret in `path`, v4 first, v3 where v4 is missing.

        With missing_ok, a secret that doesn't exist gives None instead of an error.
        """
        token = self._login()
        params = {
            "environment": self.environment,
            "secretPath": path,
            # Infisical wants these booleans as the literal strings true/false.
            "expandSecretReferences": "true",
            "include_imports": "false",
        }
        if not name:
            # One request for the folder and its stack folders: each secret says its secretPath.
            params["recursive"] = "true"
        headers = {"Authorization": f"Bearer {token}"}
        quoted = urllib.parse.quote(name, safe="")
        if not self._use_v3:
            response = self.http.request(
                "GET",
                f"{self.site_url}/api/v4/secrets" + (f"/{quoted}" if name else ""),
                what,
                params={"projectId": self.project_id, **params},
                headers=headers,
            )
            if response.status_code != 404 or self._is_missing_secret(response):
                return self._body(response, what, missing_ok)
            # Any other 404: this server may lack the v4 routes (a wrong project or
            # environment is reported by v3 just as well), so try v3.
            log.debug("infisical: %s/api/v4/secrets answered 404, using /api/v3/secrets/raw", self.site_url)
            self._use_v3 = True
        response = self.http.request(
            "GET",
            f"{self.site_url}/api/v3/secrets/raw" + (f"/{quoted}" if name else ""),
            what,
            params={"workspaceId": self.project_id, **params},
            headers=headers,
        )
        return self._body(response, what, missing_ok)

    def _is_missing_secret(self, response: requests.Response) -> bool:
        """Whether a 404 is Infisical saying that one secret doesn't exist."""
        try:
            body = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and str(body.get("message", "")).startswith("Secret with name")

    def _body(self, response: requests.Response, what: str, missing_ok: bool) -> dict[str, JSON] | None:
        if missing_ok and response.status_code == 404 and self._is_missing_secret(response):
            return None
        return self.http.json(response, what)

    def _name_and_value(self, entry: object, path: str, check_name: bool = True) -> tuple[str, str]:
        if not isinstance(entry, dict):
            raise self.http.error(f"secrets in {path}: unexpected answer (a secret is not an object)")
        name, value = entry.get("secretKey"), entry.get("secretValue")
        if not isinstance(name, str) or not isinstance(value, str):
            raise self.http.error(f"secrets in {path}: unexpected answer (no secretKey/secretValue)")
        if check_name and not is_valid_name(name):
            raise SecretsError(
                f"infisical: secret {name!r} in {path} is not a valid variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        return name, value
