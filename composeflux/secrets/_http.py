"""The small HTTPS client the Infisical and Bitwarden providers share.

Every failure becomes a SecretsError that names the provider and says why, without the
request's credentials or the response's values, and without exception chaining (a requests
exception can carry the request, headers included).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Mapping

import requests

import composeflux
from composeflux.errors import ConfigError, SecretsError
from composeflux.masking import Masker
from composeflux.rendered import JSON
from composeflux.settings import seconds

DEFAULT_TIMEOUT = 10.0  # seconds, per connection attempt and per read
MAX_SERVER_MESSAGE = 200  # characters of a server's error message worth quoting


def check_base_url(key: str, url: str) -> str:
    """Validate a service URL from the settings; return it without a trailing slash.

    https is required, except for loopback addresses (nothing crosses a network there).
    """
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigError(f"{key}: expected an https:// URL, got {url!r}")
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ConfigError(f"{key}: the URL must not contain credentials, a query or a fragment")
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise ConfigError(f"{key}: plain http is only allowed to localhost; use https://")
    return url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connection_settings(settings: Mapping[str, str]) -> tuple[float, str | bool]:
    """(timeout, requests' verify=) from SECRETS_TIMEOUT and SECRETS_CA_BUNDLE."""
    timeout = seconds(settings, "SECRETS_TIMEOUT", DEFAULT_TIMEOUT, allow_zero=False, maximum=300)
    ca_bundle = settings.get("SECRETS_CA_BUNDLE", "").strip()
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise ConfigError(f"SECRETS_CA_BUNDLE: {ca_bundle} is not a file")
    return timeout, (ca_bundle or True)


class HttpClient:
    """requests.Session wrapper: bounded timeouts, verification on, no redirects, no leaks."""

    def __init__(self, provider: str, timeout: float, verify: str | bool, masker: Masker):
        self.provider = provider
        self.timeout = timeout
        # Passed with each request: a Session.verify would lose to $REQUESTS_CA_BUNDLE.
        self.verify = verify
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"composeflux/{composeflux.__version__}"
        # The run's masker: credentials are in it already; the provider adds session tokens.
        self.masker = masker

    def request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one request; transport failures become SecretsError mentioning `what`."""
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=data,
                json=json,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError:
            raise self.error(
                f"{what}: TLS verification of {_origin(url)} failed "
                "(for a private CA, set SECRETS_CA_BUNDLE)"
            ) from None
        except requests.exceptions.Timeout:
            raise self.error(f"{what}: no answer from {_origin(url)} within {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError:
            raise self.error(f"{what}: cannot connect to {_origin(url)}") from None
        except requests.exceptions.RequestException as exc:
            raise self.error(f"{what}: request to {_origin(url)} failed ({type(exc).__name__})") from None
        if response.is_redirect:
            raise self.error(
                f"{what}: {_origin(url)} answered with a redirect (HTTP {response.status_code}); "
                "configure the final URL"
            )
        return response

    def json(self, response: requests.Response, what: str) -> dict[str, JSON]:
        """The JSON object in a successful response, or a SecretsError describing the failure."""
        if response.status_code >= 400:
            raise self.error(f"{what}: HTTP {response.status_code}{self.server_message(response)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self.error(f"{what}: the server's answer is not a JSON object")
        return body

    def server_message(self, response: requests.Response) -> str:
        """': <error>: <message>' from a JSON error body, shortened and scrubbed, or ''."""
        try:
            body = response.json()
        except ValueError:
            return ""
        if not isinstance(body, dict):
            return ""
        parts = [
            str(body[field])
            for field in ("error", "message", "error_description")
            if isinstance(body.get(field), (str, int)) and body.get(field) != ""
        ]
        if not parts:
            return ""
        text = self.masker(": ".join(parts))
        if len(text) > MAX_SERVER_MESSAGE:
            text = text[:MAX_SERVER_MESSAGE] + "..."
        return ": " + text

    def error(self, message: str) -> SecretsError:
        return SecretsError(f"{self.provider}: {self.masker(message)}")


def _origin(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc}"
