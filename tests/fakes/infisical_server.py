"""A fake Infisical server: Universal Auth login and reading secrets, v4 and v3 (raw) API.

State (JSON):
    {"identities": {"<client id>": {"client_secret": "...", "projects": ["<project id>", ...]}},
     "projects": {"<project id>": {"<environment slug>": {"/folder/path": {"NAME": "value"}}}},
     "v4": true,        # false: behave like an older server without the /api/v4 routes
     "omit_secret_path": false}   # true: list secrets without their secretPath
Folders are the keys of an environment ("/", "/app", "/app/web"); a listing with recursive=true
also returns the secrets of every folder below the requested one, each with its own secretPath,
as Infisical does (folders first by depth, then by name).
Responses and errors have the shapes Infisical's API documents ({reqId, statusCode, message,
error} for errors); the official `infisicalsdk` reads from it in tests/secrets.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
import uuid

from _common import FakeHandler, serve

TOKENS: dict[str, str] = {}  # access token -> client id
BOOLEAN_PARAMS = ("recursive", "include_imports", "expandSecretReferences", "viewSecretValue")
TIMESTAMP = "2026-01-01T00:00:00.000Z"


class InfisicalHandler(FakeHandler):
    def error(self, status: int, error: str, message: str) -> None:
        self.reply(status, {"reqId": f"req-{secrets.token_hex(6)}", "statusCode": status, "message": message, "error": error})

    def handle_request(self, state: dict, body: bytes) -> None:
        route = self.route
        if self.command == "POST" and route == "/api/v1/auth/universal-auth/login":
            return self.login(state, body)
        v4 = state.get("v4", True)
        if self.command == "GET" and route == "/api/v3/secrets/raw":
            return self.list_secrets(state, self.query.get("workspaceId"))
        if self.command == "GET" and route.startswith("/api/v3/secrets/raw/"):
            return self.get_secret(state, self.query.get("workspaceId"), urllib.parse.unquote(route.rsplit("/", 1)[1]))
        if v4 and self.command == "GET" and route == "/api/v4/secrets":
            return self.list_secrets(state, self.query.get("projectId"))
        if v4 and self.command == "GET" and route.startswith("/api/v4/secrets/"):
            return self.get_secret(state, self.query.get("projectId"), urllib.parse.unquote(route.rsplit("/", 1)[1]))
        # What Infisical's web framework answers for an unknown route.
        self.reply(404, {"message": f"Route {self.command}:{self.path} not found", "error": "Not Found", "statusCode": 404})

    def login(self, state: dict, body: bytes) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            return self.error(400, "BadRequest", "Invalid JSON body")
        identity = state["identities"].get(str(request.get("clientId")))
        if identity is None or identity["client_secret"] != request.get("clientSecret"):
            return self.error(401, "UnauthorizedError", "Invalid credentials")
        token = secrets.token_urlsafe(32)
        TOKENS[token] = request["clientId"]
        self.reply(200, {"accessToken": token, "expiresIn": 7200, "accessTokenMaxTTL": 2592000, "tokenType": "Bearer"})

    def folder(self, state: dict, project_id: str | None) -> tuple[dict | None, str]:
        """The requested environment's folders ({path: {name: value}}) and the requested path,
        or None after an error reply."""
        client_id = TOKENS.get(self.bearer() or "")
        if client_id is None:
            self.error(401, "UnauthorizedError", "Token missing or invalid")
            return None, ""
        query = self.query
        for param in BOOLEAN_PARAMS:
            if param in query and query[param] not in ("true", "false"):
                self.error(422, "ValidationFailure", f"{param}: expected 'true' or 'false'")
                return None, ""
        if not project_id or "environment" not in query:
            self.error(422, "ValidationFailure", "projectId and environment are required")
            return None, ""
        project = state["projects"].get(project_id)
        if project is None:
            self.error(404, "NotFound", f"Project with ID '{project_id}' not found")
            return None, ""
        if project_id not in state["identities"][client_id]["projects"]:
            self.error(403, "PermissionDenied", "You are not allowed to read secrets in this project")
            return None, ""
        environment = query["environment"]
        if environment not in project:
            self.error(404, "NotFound", f"Environment with slug '{environment}' in project with ID '{project_id}' not found")
            return None, ""
        # Infisical normalizes the path it is given: "/app/" is "/app".
        path = query.get("secretPath", "/").rstrip("/") or "/"
        return project[environment], path

    def secret_object(self, project_id: str, path: str, name: str, value: str) -> dict:
        secret_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project_id}{self.query['environment']}{path}/{name}"))
        return {
            "id": secret_id, "_id": secret_id, "workspace": project_id, "environment": self.query["environment"],
            "version": 1, "type": "shared", "secretKey": name, "secretValue": value, "secretComment": "",
            "secretPath": path, "createdAt": TIMESTAMP, "updatedAt": TIMESTAMP, "tags": [],
            "secretMetadata": [], "skipMultilineEncoding": False, "secretValueHidden": False,
            "secretReminderNote": None, "secretReminderRepeatDays": None,
        }

    def list_secrets(self, state: dict, project_id: str | None) -> None:
        folders, path = self.folder(state, project_id)
        if folders is None:
            return
        # A folder that doesn't exist lists nothing here (Infisical may answer so, too).
        chosen = [path] if path in folders else []
        if self.query.get("recursive") == "true":
            prefix = path.rstrip("/") + "/"
            below = [folder for folder in folders if folder.startswith(prefix) and folder != path]
            chosen += sorted(below, key=lambda folder: (folder.count("/"), folder))
        entries = [self.secret_object(project_id, f, k, v) for f in chosen for k, v in folders[f].items()]
        if state.get("omit_secret_path"):
            for entry in entries:
                del entry["secretPath"]
        self.reply(200, {"secrets": entries, "imports": []})

    def get_secret(self, state: dict, project_id: str | None, name: str) -> None:
        folders, path = self.folder(state, project_id)
        if folders is None:
            return
        folder = folders.get(path, {})
        if name not in folder:
            return self.error(404, "NotFound", f"Secret with name '{name}' not found")
        self.reply(200, {"secret": self.secret_object(project_id, path, name, folder[name])})


if __name__ == "__main__":
    serve(InfisicalHandler)
