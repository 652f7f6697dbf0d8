"""A fake Bitwarden Secrets Manager (identity + API) for machine account access tokens.

Serve it over HTTPS (--tls): the official `bitwarden-sdk` refuses plain http. Routes live under
/identity (BITWARDEN_IDENTITY_URL) and /api (BITWARDEN_API_URL), as on a self-hosted server.

State (JSON):
    {"organization_id": "<uuid>", "org_key": "<base64, 64 bytes>",
     "machine_accounts": {"<access token id>": {"client_secret": "...", "seed": "<base64, 16 bytes>",
                                                "projects": ["<project id>", ...]}},
     "projects": {"<project id>": "<name>"},
     "secrets": [{"id", "key", "value", "note", "project_id"}],
     "tampered": ["<secret id>", ...]}     # these values are served with a flipped ciphertext bit
Every name and value is encrypted afresh per response (new IV), as a type-2 EncString.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from _common import FakeHandler, serve

TOKENS: dict[str, str] = {}  # bearer token -> access token id
TIMESTAMP = "2026-01-01T00:00:00.000Z"
NOT_FOUND = {"message": "Resource not found.", "validationErrors": None, "exceptionMessage": None,
             "exceptionStackTrace": None, "innerExceptionMessage": None, "object": "error"}


def encrypt(plaintext: bytes, key: bytes, tamper: bool = False) -> str:
    """Type-2 EncString under a 64-byte key (32 AES ‖ 32 HMAC)."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).encryptor()
    data = encryptor.update(padded) + encryptor.finalize()
    mac = hmac.new(key[32:], iv + data, hashlib.sha256).digest()
    if tamper:
        data = bytes([data[0] ^ 1]) + data[1:]
    return "2." + "|".join(base64.b64encode(part).decode() for part in (iv, data, mac))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class BitwardenHandler(FakeHandler):
    def handle_request(self, state: dict, body: bytes) -> None:
        route, method = self.route, self.command
        if method == "POST" and route == "/identity/connect/token":
            return self.token(state, body)
        if not route.startswith("/api/"):
            return self.reply(404, NOT_FOUND)
        account_id = TOKENS.get(self.bearer() or "")
        if account_id is None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            return self.end_headers()
        account = state["machine_accounts"][account_id]
        org_key = base64.b64decode(state["org_key"])
        visible = [s for s in state["secrets"] if s["project_id"] in account["projects"]]
        parts = route.split("/")[2:]
        org = state["organization_id"]

        if method == "GET" and parts[:1] == ["projects"] and parts[2:] == ["secrets"]:
            if parts[1] not in account["projects"] or parts[1] not in state["projects"]:
                return self.reply(404, NOT_FOUND)
            in_project = [s for s in visible if s["project_id"] == parts[1]]
            return self.reply(200, self.listing(state, in_project, org_key))
        if method == "GET" and parts == ["organizations", org, "secrets"]:
            return self.reply(200, self.listing(state, visible, org_key))
        if method == "GET" and parts == ["organizations", org, "secrets", "sync"]:
            data = [self.full(state, s, org_key) for s in visible]
            return self.reply(200, {"hasChanges": True, "secrets": {"data": data, "object": "list"}, "object": "secretsSync"})
        if method == "POST" and parts == ["secrets", "get-by-ids"]:
            ids = set(json.loads(body)["ids"])
            data = [self.full(state, s, org_key) for s in visible if s["id"] in ids]
            return self.reply(200, {"data": data, "object": "list", "continuationToken": None})
        if method == "GET" and len(parts) == 2 and parts[0] == "secrets":
            for secret in visible:
                if secret["id"] == parts[1]:
                    return self.reply(200, self.full(state, secret, org_key))
            return self.reply(404, NOT_FOUND)
        self.reply(404, NOT_FOUND)

    def token(self, state: dict, body: bytes) -> None:
        form = dict(urllib.parse.parse_qsl(body.decode()))
        account = state["machine_accounts"].get(form.get("client_id", ""))
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("scope") != "api.secrets"
            or account is None
            or not hmac.compare_digest(account["client_secret"], form.get("client_secret", ""))
        ):
            return self.reply(400, {"error": "invalid_client"})
        # The JWT's signature isn't checked by clients; its claims are read (organization).
        now = int(time.time())
        claims = {"nbf": now, "exp": now + 3600, "iss": "http://localhost", "client_id": form["client_id"],
                  "sub": form["client_id"], "organization": state["organization_id"], "scope": ["api.secrets"]}
        jwt = ".".join([b64url(json.dumps({"alg": "RS256", "typ": "at+jwt"}).encode()),
                        b64url(json.dumps(claims).encode()), b64url(secrets.token_bytes(32))])
        TOKENS[jwt] = form["client_id"]
        token_key = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"bitwarden-accesstoken",
                         info=b"sm-access-token").derive(base64.b64decode(account["seed"]))
        payload = json.dumps({"encryptionKey": state["org_key"]}).encode()
        self.reply(200, {"access_token": jwt, "expires_in": 3600, "token_type": "Bearer",
                         "scope": "api.secrets", "encrypted_payload": encrypt(payload, token_key)})

    def projects_of(self, state: dict, secret: dict, org_key: bytes) -> list[dict]:
        pid = secret["project_id"]
        return [{"id": pid, "name": encrypt(state["projects"][pid].encode(), org_key)}]

    def listing(self, state: dict, chosen: list[dict], org_key: bytes) -> dict:
        entries = [
            {"id": s["id"], "organizationId": state["organization_id"], "key": encrypt(s["key"].encode(), org_key),
             "creationDate": TIMESTAMP, "revisionDate": TIMESTAMP,
             "projects": self.projects_of(state, s, org_key), "read": True, "write": False}
            for s in chosen
        ]
        projects = {p["id"]: p for e in entries for p in e["projects"]}
        return {"secrets": entries, "projects": list(projects.values()), "object": "SecretsWithProjectsList"}

    def full(self, state: dict, secret: dict, org_key: bytes) -> dict:
        return {
            "id": secret["id"], "organizationId": state["organization_id"],
            "key": encrypt(secret["key"].encode(), org_key),
            "value": encrypt(secret["value"].encode(), org_key, tamper=secret["id"] in state.get("tampered", [])),
            "note": encrypt(secret.get("note", "").encode(), org_key),
            "creationDate": TIMESTAMP, "revisionDate": TIMESTAMP,
            "projects": self.projects_of(state, secret, org_key), "object": "secret",
        }


if __name__ == "__main__":
    serve(BitwardenHandler)
