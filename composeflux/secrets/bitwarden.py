"""Bitwarden Secrets Manager, with a machine account access token.

The official SDK is a native wheel Debian doesn't ship, so this speaks the protocol itself:

    access token   0.<access token id>.<client secret>:<base64 16-byte seed>
    token key      HKDF-SHA256(ikm=seed, salt="bitwarden-accesstoken", info="sm-access-token"),
                   64 bytes: AES-256 key ‖ HMAC-SHA256 key
    login          POST {identity}/connect/token (client credentials, scope api.secrets)
                   -> access_token (a JWT; claim "organization") and encrypted_payload, which
                   the token key decrypts to {"encryptionKey": base64 org key (64 bytes)}
    list           GET  {api}/projects/{project}/secrets        ids and encrypted names
    read           POST {api}/secrets/get-by-ids {"ids": [...]}  names and values, encrypted
    one            GET  {api}/secrets/{id}                      (the deploy key)

Names and values are type-2 EncStrings, "2.<iv>|<ciphertext>|<mac>" (base64): AES-256-CBC with
PKCS#7 padding, MAC = HMAC-SHA256(mac key, iv ‖ ciphertext), checked before decrypting.

A secret named NAME is global; one named STACK/NAME is a secret of that stack only (returned
under that key, as composeflux.secrets expects).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, overload

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from composeflux.errors import ConfigError
from composeflux.masking import Masker
from composeflux.secrets import SecretsProvider, key_problem
from composeflux.secrets._http import HttpClient, check_base_url, connection_settings

DEFAULT_API_URL = "https://api.bitwarden.com"
DEFAULT_IDENTITY_URL = "https://identity.bitwarden.com"
DEVICE_TYPE_SDK = "21"  # Bitwarden's DeviceType for SDK clients, sent with the login



class CryptoError(Exception):
    """Decryption failed. The message never contains key material or plaintext."""


@dataclass(frozen=True)
class SymmetricKey:
    enc_key: bytes  # AES-256
    mac_key: bytes  # HMAC-SHA256

    @classmethod
    def from_bytes(cls, raw: bytes) -> SymmetricKey:
        if len(raw) != 64:
            raise CryptoError(f"expected a 64-byte key, got {len(raw)} bytes")
        return cls(raw[:32], raw[32:])


@dataclass(frozen=True)
class AccessToken:
    access_token_id: str
    client_secret: str
    encryption_key: SymmetricKey


def parse_access_token(token: str) -> AccessToken:
    """Split a machine account access token and derive its key; ValueError if malformed."""
    head, sep, seed_b64 = token.strip().partition(":")
    parts = head.split(".")
    if not sep or len(parts) != 3 or parts[0] != "0":
        raise ValueError("expected 0.<id>.<secret>:<key>")
    _, token_id, client_secret = parts
    try:
        uuid.UUID(token_id)
        seed = base64.b64decode(seed_b64, validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("malformed id or key") from None
    if len(seed) != 16 or not client_secret:
        raise ValueError("malformed secret or key")
    return AccessToken(token_id, client_secret, derive_token_key(seed))


def derive_token_key(seed: bytes) -> SymmetricKey:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"bitwarden-accesstoken", info=b"sm-access-token")
    return SymmetricKey.from_bytes(hkdf.derive(seed))


def decrypt_enc_string(enc_string: str, key: SymmetricKey) -> bytes:
    """Decrypt a type-2 EncString; CryptoError if it is malformed or its MAC doesn't match."""
    enc_type, dot, rest = enc_string.partition(".")
    if not dot or enc_type != "2":
        raise CryptoError(f"unsupported EncString type {enc_type[:8]!r} (expected 2)")
    pieces = rest.split("|")
    if len(pieces) != 3:
        raise CryptoError("malformed EncString (expected iv|data|mac)")
    try:
        iv, data, mac = (base64.b64decode(piece, validate=True) for piece in pieces)
    except binascii.Error:
        raise CryptoError("malformed EncString (bad base64)") from None
    if len(iv) != 16 or len(mac) != 32 or not data or len(data) % 16:
        raise CryptoError("malformed EncString (wrong lengths)")
    expected = hmac.new(key.mac_key, iv + data, hashlib.sha256).digest()
    # Authenticate before touching the ciphertext: a mismatch is an error, never garbage.
    if not hmac.compare_digest(mac, expected):
        raise CryptoError("MAC mismatch (altered data or wrong key)")
    decryptor = Cipher(algorithms.AES(key.enc_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError("bad padding") from None


def from_settings(settings: Mapping[str, str], masker: Masker) -> BitwardenProvider:
    raw_token = settings.get("BITWARDEN_ACCESS_TOKEN", "").strip()
    if not raw_token:
        raise ConfigError("BITWARDEN_ACCESS_TOKEN: required when SECRETS_PROVIDER=bitwarden")
    try:
        token = parse_access_token(raw_token)
    except ValueError as exc:
        raise ConfigError(f"BITWARDEN_ACCESS_TOKEN: not a machine account access token ({exc})") from None
    project_id = _uuid_setting(settings, "BITWARDEN_PROJECT_ID", required=True)
    organization_id = _uuid_setting(settings, "BITWARDEN_ORGANIZATION_ID", required=False)
    api_url = check_base_url("BITWARDEN_API_URL", settings.get("BITWARDEN_API_URL") or DEFAULT_API_URL)
    identity_url = check_base_url(
        "BITWARDEN_IDENTITY_URL", settings.get("BITWARDEN_IDENTITY_URL") or DEFAULT_IDENTITY_URL
    )
    deploy_key_ref = settings.get("GIT_DEPLOY_KEY_SECRET_REF", "").strip()
    if deploy_key_ref:
        _deploy_key_id(deploy_key_ref)
    timeout, verify = connection_settings(settings)
    return BitwardenProvider(
        token=token,
        project_id=project_id,
        organization_id=organization_id,
        api_url=api_url,
        identity_url=identity_url,
        timeout=timeout,
        verify=verify,
        masker=masker,
    )


@overload
def _uuid_setting(settings: Mapping[str, str], key: str, required: Literal[True]) -> str: ...
@overload
def _uuid_setting(settings: Mapping[str, str], key: str, required: bool) -> str | None: ...


def _uuid_setting(settings: Mapping[str, str], key: str, required: bool) -> str | None:
    value = settings.get(key, "").strip()
    if not value:
        if required:
            raise ConfigError(f"{key}: required when SECRETS_PROVIDER=bitwarden")
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigError(f"{key}: expected a UUID, got {value!r}") from None


def _deploy_key_id(ref: str) -> str:
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        raise ConfigError(f"GIT_DEPLOY_KEY_SECRET_REF: expected a Bitwarden secret id (UUID), got {ref!r}") from None


class BitwardenProvider(SecretsProvider):
    name = "bitwarden"

    def __init__(
        self,
        *,
        token: AccessToken,
        project_id: str,
        organization_id: str | None,
        api_url: str,
        identity_url: str,
        timeout: float,
        verify: str | bool,
        masker: Masker,
    ) -> None:
        self.token = token
        self.project_id = project_id
        self.organization_id = organization_id
        self.api_url = api_url
        self.identity_url = identity_url
        self.http = HttpClient(self.name, timeout, verify, masker)
        self.http.masker.add([token.client_secret])
        self._session: tuple[str, SymmetricKey] | None = None  # (bearer token, org key)

    def fetch(self) -> dict[str, str]:
        """Every secret in BITWARDEN_PROJECT_ID, name (NAME or STACK/NAME) -> value."""
        bearer, org_key = self._login()
        headers = {"Authorization": f"Bearer {bearer}"}
        what = f"listing project {self.project_id}"
        response = self.http.request("GET", f"{self.api_url}/projects/{self.project_id}/secrets", what, headers=headers)
        if response.status_code == 404:
            raise self.http.error(f"{what}: no such project, or this machine account has no access to it")
        listed = self.http.json(response, what).get("secrets")
        if not isinstance(listed, list):
            raise self.http.error(f"{what}: the answer has no 'secrets' list")
        ids = [entry["id"] for entry in listed if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
        if not ids:
            return {}

        what = f"reading the secrets of project {self.project_id}"
        response = self.http.request(
            "POST", f"{self.api_url}/secrets/get-by-ids", what, headers=headers, json={"ids": ids}
        )
        data = self.http.json(response, what).get("data")
        if not isinstance(data, list):
            raise self.http.error(f"{what}: the answer has no 'data' list")
        secrets: dict[str, str] = {}
        for entry in data:
            name, value = self._decrypt_secret(entry, org_key)
            if name in secrets:
                raise self.http.error(f"project {self.project_id} has two secrets named {name!r}")
            secrets[name] = value
        return secrets

    def fetch_deploy_key(self, ref: str) -> str:
        """The value of the secret whose id is `ref`."""
        secret_id = _deploy_key_id(ref)
        bearer, org_key = self._login()
        what = f"getting deploy key secret {secret_id}"
        response = self.http.request(
            "GET", f"{self.api_url}/secrets/{secret_id}", what, headers={"Authorization": f"Bearer {bearer}"}
        )
        if response.status_code == 404:
            raise self.http.error(f"{what}: no such secret, or this machine account has no access to it")
        return self._decrypt_secret(self.http.json(response, what), org_key, check_name=False)[1]

    def _login(self) -> tuple[str, SymmetricKey]:
        if self._session is not None:
            return self._session
        what = "login (machine account access token)"
        response = self.http.request(
            "POST",
            f"{self.identity_url}/connect/token",
            what,
            data={
                "scope": "api.secrets",
                "client_id": self.token.access_token_id,
                "client_secret": self.token.client_secret,
                "grant_type": "client_credentials",
            },
            headers={"Device-Type": DEVICE_TYPE_SDK, "Accept": "application/json"},
        )
        body = self.http.json(response, what)
        bearer, payload = body.get("access_token"), body.get("encrypted_payload")
        if not isinstance(bearer, str) or not isinstance(payload, str):
            raise self.http.error(f"{what}: the answer lacks access_token or encrypted_payload")
        self.http.masker.add([bearer])
        try:
            org_key_b64 = json.loads(decrypt_enc_string(payload, self.token.encryption_key))["encryptionKey"]
            org_key = SymmetricKey.from_bytes(base64.b64decode(org_key_b64, validate=True))
        except CryptoError as exc:
            raise self.http.error(f"{what}: cannot decrypt the organization key: {exc}") from None
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise self.http.error(f"{what}: the decrypted payload holds no valid encryptionKey") from None
        self._check_organization(bearer)
        self._session = (bearer, org_key)
        return self._session

    def _check_organization(self, bearer: str) -> None:
        """If BITWARDEN_ORGANIZATION_ID is set, the token must belong to that organization."""
        if self.organization_id is None:
            return
        try:
            claims_b64 = bearer.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
            organization = str(uuid.UUID(claims["organization"]))
        except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
            raise self.http.error("login: the access token names no organization") from None
        if organization != self.organization_id:
            raise self.http.error(
                f"the access token belongs to organization {organization}, "
                f"not BITWARDEN_ORGANIZATION_ID {self.organization_id}"
            )

    def _decrypt_secret(self, entry: object, org_key: SymmetricKey, check_name: bool = True) -> tuple[str, str]:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("value"), str):
            raise self.http.error("unexpected answer (a secret without key and value)")
        secret_id = entry.get("id", "?")
        try:
            name = decrypt_enc_string(entry["key"], org_key).decode("utf-8")
            value = decrypt_enc_string(entry["value"], org_key).decode("utf-8")
        except CryptoError as exc:
            raise self.http.error(f"secret {secret_id}: cannot decrypt: {exc}") from None
        except UnicodeDecodeError:
            raise self.http.error(f"secret {secret_id}: decrypted text is not UTF-8") from None
        problem = key_problem(name) if check_name else None
        if problem is not None:
            raise self.http.error(f"secret {secret_id} is named {name!r}, which {problem}")
        return name, value
