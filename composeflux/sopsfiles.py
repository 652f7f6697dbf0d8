"""A stack's SOPS-encrypted files: decrypted during the sync, handed to Compose without
writing a decrypted byte to disk.

Compose reads a stack's files itself, so each way a file is used gets its own way in:

    .env, .env.sops       their variables join the interpolation environment at the .env layer
                          (environment.py), in Compose's process environment
    env_file:             Compose reads the encrypted file and puts its ENC[...] strings into the
                          services' `environment`; each is replaced by its plaintext in the
                          rendered project (an exact match: every ENC[...] string is unique)
    configs: file:        becomes inline `content:`
    secrets: file:        becomes `environment: COMPOSEFLUX_SECRET_<n>`, a variable given to
                          `docker compose up` only (Compose has no inline content for secrets)
    a bind-mounted file   becomes a config with the bind's target

Compose copies configs and secrets into the container's own file system, which is what Docker
stores for the container anyway: they survive a reboot of the host with the container, without
composeflux. The rendered project holding the plaintext is hashed like any other (keyed HMAC):
re-encrypting the same content does not redeploy, a changed value does. Every decrypted secret
goes to the run's masker before anything can print it.

Only files inside the checkout are looked at: composeflux never reads a file outside the
repository on behalf of a compose file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from composeflux import sops
from composeflux.environment import DOTENV_LINE, parse_dotenv
from composeflux.inputs import UnknownInputs, render_inputs
from composeflux.masking import Masker
from composeflux.rendered import JSON
from composeflux.stacks import Stack

log = logging.getLogger(__name__)

ENCRYPTED = "ENC[AES256_GCM,"
MAX_FILE_SIZE = 16 << 20  # bytes: a bigger file is not a secret, and is not read into memory to find out
SECRET_VARIABLE = "COMPOSEFLUX_SECRET_"


class SopsFileError(Exception):
    """One of a stack's SOPS files cannot be used; the message names the file, never a value."""


@dataclasses.dataclass(frozen=True)
class Revealed:
    """A rendered project with every SOPS value in place."""

    project: dict[str, JSON] = dataclasses.field(repr=False)
    environment: dict[str, str] = dataclasses.field(repr=False)  # what `up` needs besides the render's variables
    sources: tuple[Path, ...]  # the SOPS files it took values from


class Decryptor:
    """Decrypts one sync's SOPS files with the host's identities; every secret it sees goes to
    `masker` before anything can print it."""

    def __init__(self, identities: sops.Identities, masker: Masker) -> None:
        self.identities = identities
        self.masker = masker

    def file(self, path: Path, root: Path) -> sops.Decrypted | None:
        """The decrypted file, or None when it is not a SOPS file (or lies outside `root`, or is
        not there). SopsFileError, naming the file relative to `root`, when it cannot be opened."""
        shown = _shown(path, root)
        if shown is None:
            return None
        try:
            # Non-blocking: a FIFO among a stack's files must not hang the sync.
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_SIZE:
                    return None
                data = handle.read(MAX_FILE_SIZE + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise SopsFileError(f"{shown}: cannot read: {exc.strerror}") from None
        if len(data) > MAX_FILE_SIZE or not sops.looks_encrypted(data) or sops.detect_format(data, path.name) is None:
            return None
        try:
            decrypted = sops.decrypt(data, shown, self.identities)
        except sops.SopsError as exc:
            message = str(exc)
            if "no age identity" in message and not self.identities.age:
                message += " (this host has no age identity: see SOPS_AGE_KEY_FILE in composeflux.conf(5))"
            raise SopsFileError(message) from None
        secrets = list(decrypted.secrets)
        if decrypted.format == "binary":
            secrets.append(decrypted.content().decode("utf-8", errors="replace"))
        # A multi-line secret (a PEM key) may be quoted a line at a time.
        self.masker.add([*secrets, *(line.strip() for secret in secrets for line in secret.splitlines())])
        return decrypted

    def dotenv(self, directory: Path, root: Path) -> dict[str, str]:
        """The variables of the stack's `.env` when it is SOPS-encrypted, and of its `.env.sops`
        (which wins), for the .env layer; {} when it has neither."""
        values: dict[str, str] = {}
        for name in (".env", ".env.sops"):
            path = directory / name
            decrypted = self.file(path, root)
            if decrypted is None:
                if name == ".env.sops" and path.is_file():
                    raise SopsFileError(f"{_shown(path, root)} is not a SOPS-encrypted file")
                continue
            values.update(_variables(decrypted, _shown(path, root) or name))
        return values

    def reveal(self, stack: Stack, project: dict[str, JSON], root: Path, hmac: Callable[[str, JSON], str]) -> Revealed:
        """`project` (rendered in `root`, changed in place) with the plaintext of each SOPS file
        it uses. `hmac(purpose, value)`: the run's keyed hash, for what the project cannot hold
        (a secret's content). SopsFileError when a file cannot be decrypted or an encrypted value
        would reach a container as it is."""
        sources: list[Path] = []
        environment: dict[str, str] = {}
        services = project.get("services") or {}
        self._env_files(stack, services, root, sources)
        definitions: dict[str, dict[str, JSON]] = {kind: project.get(kind) or {} for kind in ("configs", "secrets")}
        for kind, entries in definitions.items():
            for name, definition in sorted(entries.items()):
                file = definition.get("file") if isinstance(definition, dict) else None
                decrypted = self.file(Path(file), root) if isinstance(file, str) else None
                if decrypted is None:
                    continue
                text = _text(decrypted, _shown(Path(str(file)), root) or name)
                sources.append(Path(str(file)))
                del definition["file"]
                if kind == "configs":
                    definition["content"] = _escaped(text)
                else:
                    variable = f"{SECRET_VARIABLE}{len(environment)}"
                    definition["environment"] = variable
                    # Compose ignores x- fields; this one puts the value into the hashes.
                    definition["x-composeflux-content"] = hmac("sops-secret", text)
                    environment[variable] = text
        configs = definitions["configs"]
        for service_name, service in sorted(services.items()):
            kept = []
            for volume in service.get("volumes") or []:
                source = volume.get("source") if isinstance(volume, dict) and volume.get("type") == "bind" else None
                decrypted = self.file(Path(source), root) if isinstance(source, str) else None
                if decrypted is None:
                    kept.append(volume)
                    continue
                text = _text(decrypted, _shown(Path(str(source)), root) or str(source))
                sources.append(Path(str(source)))
                name = f"composeflux-sops-{service_name}-{len(kept)}-{hmac('sops-bind', volume.get('target'))[:8]}"
                configs[name] = {"content": _escaped(text)}
                service.setdefault("configs", []).append({"source": name, "target": volume.get("target")})
            if "volumes" in service:
                service["volumes"] = kept
        if configs:
            project["configs"] = configs
        _refuse_encrypted(services)
        return Revealed(project, environment, tuple(dict.fromkeys(sources)))

    def _env_files(self, stack: Stack, services: dict[str, JSON], root: Path, sources: list[Path]) -> None:
        """Replace the ENC[...] strings Compose took from SOPS env_files with their plaintext,
        and drop the sops_* metadata variables those files also set."""
        try:
            inputs = render_inputs(stack)
        except UnknownInputs:
            return  # an env_file path built from a variable: _refuse_encrypted catches what leaks
        replacements: dict[str, str] = {}
        metadata: set[str] = set()
        for path in dict.fromkeys(inputs):
            if path.name == ".env":
                continue  # the .env layer (dotenv), not an env_file
            decrypted = self.file(path, root)
            if decrypted is None:
                continue
            sources.append(path)
            plain = _variables(decrypted, _shown(path, root) or path.name)
            for key, raw in _raw_pairs(path):
                if key.startswith("sops_"):
                    metadata.add(key.strip())
                elif raw.startswith(ENCRYPTED) and key in plain:
                    replacements[raw] = plain[key]
        if not replacements and not metadata:
            return
        for service in services.values():
            env = service.get("environment") if isinstance(service, dict) else None
            if not isinstance(env, dict):
                continue
            for key in [k for k in env if k in metadata]:
                del env[key]
            for key, value in env.items():
                if isinstance(value, str) and value in replacements:
                    env[key] = _escaped(replacements[value])


def _shown(path: Path, root: Path) -> str | None:
    """`path` relative to `root` (as the log shows it), None when it lies outside."""
    real = Path(os.path.realpath(path))
    real_root = Path(os.path.realpath(root))
    if real != real_root and not real.is_relative_to(real_root):
        return None
    try:
        return Path(os.path.normpath(path)).relative_to(root).as_posix()
    except ValueError:
        return real.relative_to(real_root).as_posix()


def _variables(decrypted: sops.Decrypted, shown: str) -> dict[str, str]:
    """A decrypted file's variables, for use as a .env or env_file."""
    if decrypted.format == "binary":  # `sops -e .env` by another name: the whole .env encrypted
        return parse_dotenv(decrypted.content().decode("utf-8", errors="replace"))
    try:
        return decrypted.variables()
    except sops.SopsError as exc:
        raise SopsFileError(f"{shown}: {exc}") from None


def _text(decrypted: sops.Decrypted, shown: str) -> str:
    content = decrypted.content()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if "\0" in text or (content and not text):
        raise SopsFileError(f"{shown}: its decrypted content is binary; Compose takes only text as config or secret content")
    return text


def _raw_pairs(path: Path) -> list[tuple[str, str]]:
    """The KEY=value lines of an encrypted dotenv file, as they are (sops writes no quotes)."""
    pairs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if DOTENV_LINE.match(line) or key.startswith("sops_"):
            pairs.append((key, value.strip()))
    return pairs


def _escaped(text: str) -> str:
    """As `docker compose config` writes values: `$` doubled, so `up` does not interpolate it."""
    return text.replace("$", "$$")


def _refuse_encrypted(services: dict[str, JSON]) -> None:
    """No ENC[...] string may reach a container's environment: that is a SOPS file composeflux
    could not follow (an env_file named through a variable), not a value anyone wants."""
    for name, service in services.items():
        env = service.get("environment") if isinstance(service, dict) else None
        keys = sorted(k for k, v in env.items() if isinstance(v, str) and v.startswith(ENCRYPTED)) if isinstance(env, dict) else []
        if keys:
            raise SopsFileError(
                f"service {name}: {', '.join(keys)} would get a value still encrypted with SOPS "
                "(from an env_file composeflux cannot follow, e.g. one named through a variable)"
            )
