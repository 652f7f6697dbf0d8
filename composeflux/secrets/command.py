"""Secrets from any command (SECRETS_COMMAND): SOPS, bws, op, vault, pass and friends.

The command runs through /bin/sh -c, with no standard input, in its own process group (so a
timeout kills its children too). Its standard output is either a JSON object of strings or
KEY=VALUE lines (see envfile.py). A key is NAME (a global secret) or STACK/NAME (a secret of
that stack only). Its standard error goes to the log, with every value it returned masked.

Environment: the command inherits composeflux's environment, which is how tools get their own
settings (BWS_ACCESS_TOKEN, SOPS_AGE_KEY_FILE, VAULT_ADDR, $CREDENTIALS_DIRECTORY, ...), minus
composeflux's own settings (credentials such as INFISICAL_CLIENT_SECRET or GIT_TOKEN must not
leak into a third-party tool) and systemd's NOTIFY_SOCKET (only composeflux reports status).
The settings composeflux shares with `sops` (SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, GNUPGHOME) mean the
same to the command and are passed on, from composeflux.conf too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Mapping

from composeflux.envfile import parse_env_text
from composeflux.errors import ConfigError, SecretsError
from composeflux.masking import Masker
from composeflux.secrets import SECRET_KEYS, SecretsProvider, all_keys, is_valid_key
from composeflux.settings import seconds

log = logging.getLogger("composeflux.secrets")

# composeflux's settings that are sops's too: the command may well be `sops -d`.
SHARED_WITH_SOPS = frozenset({"SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY", "GNUPGHOME"})
DEFAULT_TIMEOUT = 30.0  # seconds; CLIs like bws or op make a network round trip or two


def from_settings(settings: Mapping[str, str], masker: Masker) -> CommandProvider:
    command = settings.get("SECRETS_COMMAND", "").strip()
    if not command:
        raise ConfigError("SECRETS_COMMAND: required when SECRETS_PROVIDER=command")
    timeout = seconds(settings, "SECRETS_COMMAND_TIMEOUT", DEFAULT_TIMEOUT, allow_zero=False, maximum=3600)
    hidden = (set(settings) | all_keys() | {"NOTIFY_SOCKET"}) - SHARED_WITH_SOPS
    shared = {key: settings[key] for key in SHARED_WITH_SOPS if settings.get(key)}
    return CommandProvider(command, timeout, hidden, masker, shared)


class CommandProvider(SecretsProvider):
    name = "command"

    def __init__(
        self, command: str, timeout: float, hidden_variables: set[str], masker: Masker, shared: Mapping[str, str] | None = None
    ) -> None:
        self.command = command
        self.masker = masker
        self.timeout = timeout
        self.hidden_variables = hidden_variables
        self.shared = dict(shared or {})
        self._fetched: dict[str, str] | None = None  # this sync's result, for fetch_deploy_key

    def fetch(self) -> dict[str, str]:
        env = {**{k: v for k, v in os.environ.items() if k not in self.hidden_variables}, **self.shared}
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise SecretsError(f"command: cannot start /bin/sh: {exc.strerror}") from None
        try:
            stdout, stderr = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise SecretsError(f"command: SECRETS_COMMAND gave no result within {self.timeout:g} s (killed)") from None

        secrets, problem = self._parse(stdout)
        self.masker.add(secrets.values())
        self._log_stderr(stderr)
        if process.returncode < 0:
            raise SecretsError(f"command: SECRETS_COMMAND was killed by signal {-process.returncode}")
        if process.returncode > 0:
            raise SecretsError(
                f"command: SECRETS_COMMAND exited with status {process.returncode} (its stderr is in the log)"
            )
        if problem:
            raise SecretsError(f"command: {problem}")
        self._fetched = secrets
        return secrets

    def fetch_deploy_key(self, ref: str) -> str:
        # The sync has just run the command for fetch(): don't run it (and its network calls) again.
        secrets = self._fetched if self._fetched is not None else self.fetch()
        if ref not in secrets:
            raise SecretsError(f"command: deploy key secret {ref!r} not found in the output of SECRETS_COMMAND")
        return secrets[ref]

    def _parse(self, stdout: bytes) -> tuple[dict[str, str], str | None]:
        """(secrets, None) or ({}, what is wrong). The problem text never quotes a value."""
        try:
            text = stdout.decode("utf-8")
        except UnicodeDecodeError:
            return {}, "the output of SECRETS_COMMAND is not UTF-8 text"
        if text.lstrip().startswith("{"):
            return self._parse_json(text)
        try:
            return parse_env_text(text, "SECRETS_COMMAND output", SECRET_KEYS), None
        except ValueError as exc:
            return {}, f"{exc} (expected KEY=VALUE lines or a JSON object)"

    @staticmethod
    def _parse_json(text: str) -> tuple[dict[str, str], str | None]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # Only the position: json's messages don't quote the document, but stay sure.
            return {}, f"SECRETS_COMMAND output: invalid JSON at line {exc.lineno} column {exc.colno}"
        except ValueError:
            # Not a syntax error, so no position: e.g. an integer longer than Python converts.
            return {}, "SECRETS_COMMAND output: invalid JSON"
        if not isinstance(data, dict):
            return {}, "SECRETS_COMMAND output: the JSON is not an object"
        for number, (name, value) in enumerate(data.items(), start=1):
            if not is_valid_key(name):
                # The key itself is not quoted: it might be a value that landed there.
                return {}, (
                    f"SECRETS_COMMAND output: key number {number} of the JSON object is not a valid "
                    f"variable name ({SECRET_KEYS.description})"
                )
            if not isinstance(value, str):
                return {}, f"SECRETS_COMMAND output: the value of {name} is not a string"
        return data, None

    def _log_stderr(self, stderr: bytes) -> None:
        text = self.masker(stderr.decode("utf-8", errors="replace"))
        for line in text.splitlines():
            if line.strip():
                log.warning("command: stderr: %s", line)
