"""Render a stack with Docker Compose and hash what would be deployed.

`docker compose config` decides every Compose semantic (include, extends, env_file, profiles,
interpolation, .env). We hash its output together with the content of the local files the
project references (bind-mount sources, build contexts, configs/secrets files inside the
checkout), so that editing a mounted config file redeploys its stack.

Hashes are HMAC-SHA256 with a random per-host key (state dir, mode 0600): the rendered project
contains secret values, and a plain hash in a container label would let anyone who can read
labels test guesses of those values.

Each service also gets its own hash, covering only what that service's containers depend on,
so that Compose recreates just the services that changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets as random
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from composeflux.checkout import Checkout
from composeflux.compose import UNSET_VARIABLE, Compose, Result, numeric_sentinels, revealed, unset_sentinels, unset_variables
from composeflux.errors import StateError, state_error
from composeflux.inputs import UnknownInputs, render_inputs
from composeflux.rendered import JSON, RenderedStack, StackHashes
from composeflux.sopsfiles import Decryptor, Revealed, SopsFileError
from composeflux.stacks import Stack

log = logging.getLogger(__name__)

HASH_KEY_FILE = "hash.key"


class RenderError(Exception):
    """This stack cannot be rendered; the message is safe to log (values already masked)."""


def load_hash_key(state_dir: Path) -> bytes:
    """The per-host HMAC key, created on first use."""
    path = state_dir / HASH_KEY_FILE
    try:
        return _read_hash_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise state_error(path, exc) from None
    key = random.token_bytes(32)
    temporary = path.with_suffix(".tmp")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise state_error(path, exc) from None
    return key


def _read_hash_key(path: Path) -> bytes:
    """The key, from a regular file that only its owner may read (fixed with a warning)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: not a regular file; move it away (a new key makes every stack redeploy once)")
        if info.st_mode & 0o077:
            os.fchmod(handle.fileno(), 0o600)
            log.warning("%s was readable by others (mode %04o); now 0600", path, stat.S_IMODE(info.st_mode))
        text = handle.read(200).decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise StateError(
            f"{path} is damaged (not a hex key of at least 16 bytes); remove it and composeflux makes a new one, "
            "with which every stack is redeployed once"
        )
    return key


def canonical(value: JSON) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Renderer:
    def __init__(
        self,
        compose: Compose,
        checkout: Checkout,
        hash_key: bytes,
        interpolation_env: Mapping[str, str],
        mask: Callable[[str], str],
        tree_root: Callable[[str], Path] | None = None,
        decryptor: Decryptor | None = None,
    ) -> None:
        """`tree_root(stack name)`: where that stack's own tree will be (trees.py). Compose
        renders in the checkout; every path of the rendered project that points into the
        checkout is then moved to the stack's tree, which is where it is deployed from. So the
        hashes do not depend on where the render happened (a dry run renders elsewhere).
        `decryptor`: puts the plaintext of the stack's SOPS files into the rendered project."""
        self.compose = compose
        self.checkout = checkout
        self.root = checkout.path.resolve()
        self.hash_key = hash_key
        self.env = dict(interpolation_env)
        self.mask = mask
        self.tree_root = tree_root
        self.decryptor = decryptor

    def hmac(self, purpose: str, value: JSON) -> str:
        return hmac.new(self.hash_key, purpose.encode() + b"\0" + canonical(value), hashlib.sha256).hexdigest()

    # -- rendering -----------------------------------------------------------------------------

    def render(self, stack: Stack) -> RenderedStack:
        self._check_inputs(stack)
        result = self._config(stack, {})
        warned = unset_variables(result.stderr)
        if result.returncode != 0:
            error = f"docker compose config failed: {self.mask(_compose_error(result.stderr))}"
            culprits = self._blank_culprits(stack, result, warned) if warned else []
            raise RenderError(f"{_unset_message(culprits)}; {error}" if culprits else error)
        try:
            project = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise RenderError("docker compose config did not print a JSON project") from None
        if warned:
            used = self._unset_in_use(stack, project, warned)
            if used:
                raise RenderError(_unset_message(used))
            log.debug("%s: variable(s) %s not set, but not used by what is deployed", stack.name, ", ".join(warned))
        # The first render is what is hashed and deployed: Compose's own, with blanks where the
        # unused variables were. The renders with sentinels are only searched (_unset_in_use).
        revealed = None
        if self.decryptor is not None:
            try:
                revealed = self.decryptor.reveal(stack, project, self.root, self.hmac)
            except SopsFileError as exc:
                raise RenderError(self.mask(str(exc))) from None
            project = revealed.project
        if self.tree_root is None:
            return self._hash(stack, project, self.root, revealed)
        tree = self.tree_root(stack.name)
        return self._hash(stack, relocate(project, self.root, tree), tree, revealed)

    def _config(self, stack: Stack, made_up: Mapping[str, str]) -> Result:
        return self.compose.config(stack.name, stack.directory, stack.compose_files, {**self.env, **made_up})

    # Compose warns about every ${VAR} without a value in the files, also in a service of an
    # inactive profile or an `extends` variant nobody extends. Which of them reach the project is
    # found by rendering once more with a unique made-up value (a sentinel) for each: where a
    # sentinel shows up, its variable is used. That render's output and errors contain sentinels:
    # they are only searched, never deployed, logged or quoted.

    def _unset_in_use(self, stack: Stack, project: dict[str, JSON], warned: list[str]) -> list[str]:
        """Of the variables Compose warned about, those whose blank reaches the rendered project
        (or may: whatever cannot be told apart counts as used, as before)."""
        sentinels = unset_sentinels(warned)
        used = {name for name in warned if name not in sentinels}  # the CLI's own variables
        probe = self._config(stack, sentinels)
        if probe.returncode != 0:
            # A made-up text where Compose wants a number (a port, validated even in a service
            # that is not deployed): try numbers for the variables named in the error.
            rejected = revealed(probe.stderr, sentinels)
            if not rejected:
                return warned
            sentinels = {**sentinels, **numeric_sentinels(rejected)}
            probe = self._config(stack, sentinels)
            if probe.returncode != 0:
                return sorted(revealed(probe.stderr, sentinels) | used) or warned
        still_unset = set(unset_variables(probe.stderr)) & set(sentinels)  # Compose did not see the value
        used |= revealed(probe.stdout, sentinels) | still_unset
        if used:
            return sorted(used)
        try:
            probed = json.loads(probe.stdout)
        except json.JSONDecodeError:
            return warned
        # No sentinel shows, so the values may only have changed the project's shape (a variable
        # in `profiles:`): then, and only then, is it the same project as the first render.
        return [] if probed == project else warned

    def _blank_culprits(self, stack: Stack, failed: Result, warned: list[str]) -> list[str]:
        """Of the variables Compose warned about, those that made it fail (a volume
        `${DATA_DIR}:/data` is `:/data`): none if the render with sentinels fails the same way."""
        sentinels = unset_sentinels(warned)
        unprobed = {name for name in warned if name not in sentinels}
        probe = self._config(stack, sentinels)
        if probe.returncode != 0 and _error_lines(probe.stderr) == _error_lines(failed.stderr):
            return sorted(unprobed)  # not the blanks' doing (the CLI's own variables cannot be told)
        if probe.returncode == 0:
            return warned  # values for all of them make it render: the blanks together broke it
        return sorted(revealed(probe.stderr, sentinels) | unprobed) or warned

    def _check_inputs(self, stack: Stack) -> None:
        """Refuse a stack whose compose files would make Compose read a file from outside the
        repository (an `env_file: /etc/shadow`, an include through a symlink out of the checkout)
        or from the stack's own tree, before Compose reads it. The message does not quote the
        path: it might itself be sensitive. Paths built from variables cannot be followed here;
        Compose reads those as they are."""
        try:
            inputs = render_inputs(stack)
        except UnknownInputs:
            return
        allowed = [self.root] + ([self.tree_root(stack.name).resolve()] if self.tree_root else [])
        for path in inputs:
            real = Path(os.path.realpath(path))
            if not any(real == root or real.is_relative_to(root) for root in allowed):
                raise RenderError(
                    "a file its compose files read (an include, extends, env_file or .env) lies outside the repository; "
                    "composeflux reads only files from Git and from the stack's own directory"
                )

    def deploy_directory(self, stack: Stack) -> Path:
        """The project directory `docker compose up` runs in: the stack's directory in its tree."""
        if self.tree_root is None:
            return stack.directory
        return self.tree_root(stack.name) / (self.relative_path(stack.directory) or ".")

    def _hash(self, stack: Stack, project: dict[str, JSON], base: Path, revealed: Revealed | None = None) -> RenderedStack:
        services = project.get("services") or {}
        # A secret or config that takes its value from a variable (`environment:`, a secrets
        # provider's value): the project holds only the variable's name, so the value goes into
        # the hashes as its keyed hash (Compose ignores x- fields). A new value redeploys the
        # services using it; with Swarm it is a new secret.
        for kind in ("configs", "secrets"):
            for definition in (project.get(kind) or {}).values():
                variable = definition.get("environment") if isinstance(definition, dict) else None
                if isinstance(variable, str) and "x-composeflux-content" not in definition and variable in self.env:
                    definition["x-composeflux-content"] = self.hmac("environment-secret", self.env[variable])
        service_hashes = {}
        all_files: dict[str, str] = {}
        for name, service in services.items():
            files = self._service_files(project, service, base)
            all_files.update(files)
            if _replicas(service) == 0:
                continue  # scaled to zero: no container will ever carry its hash
            service_hashes[name] = self.hmac(
                "service",
                {"service": service, "files": files, "resources": _service_resources(project, service)},
            )
        stack_hash = self.hmac("stack", {"project": project, "files": all_files})
        stack_dir = self.relative_path(stack.directory)
        # The SOPS files it took plaintext from count by their Git content for the render cache
        # (a change renders again), not in the hashes: re-encrypting the same values changes nothing.
        sources = [self.relative_path(path) for path in revealed.sources] if revealed else []
        used = set(all_files) | {path for path in sources if path is not None}
        dependencies = sorted(path for path in used if not _inside(path, stack_dir))
        # Networks and named volumes it creates, and the external ones it needs (volumes as
        # "volume:NAME"): who is deployed before whom (plan.network_order, plan.schedule).
        creates, needs = [], []
        for kind, prefix in (("networks", ""), ("volumes", "volume:")):
            for key, item in (project.get(kind) or {}).items():
                if isinstance(item, dict):
                    if item.get("external"):
                        needs.append(prefix + str(item.get("name") or key))
                    else:
                        creates.append(prefix + str(item.get("name") or f"{stack.name}_{key}"))
        creates.sort()
        needs.sort()
        hashes = StackHashes(stack.name, stack_hash, service_hashes, tuple(dependencies), tuple(creates), tuple(needs))
        return RenderedStack(hashes, project, revealed.environment if revealed else {})

    def _service_files(self, project: dict[str, JSON], service: dict[str, JSON], base: Path) -> dict[str, str]:
        """Checkout-relative path -> content id of the tracked local files this service uses."""
        paths = []
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict) and volume.get("type") == "bind" and volume.get("source"):
                paths.append(volume["source"])
        build = service.get("build")
        if isinstance(build, dict) and build.get("context"):
            paths.append(build["context"])
        for kind in ("configs", "secrets"):
            definitions = project.get(kind) or {}
            for reference in service.get(kind) or []:
                name = reference.get("source") if isinstance(reference, dict) else reference
                file = (definitions.get(name) or {}).get("file")
                if file:
                    paths.append(file)
        files = {}
        ids = self.checkout.object_ids
        for path in paths:
            relative = self.relative_path(Path(path), base)
            if relative is None:
                continue
            # Untracked paths (runtime data a container writes into the checkout) are not hashed:
            # they would redeploy the stack on every sync.
            if relative in ids:
                files[relative] = ids[relative]
            # Behind a tracked symlink (the path itself, or a directory on the way), what counts is
            # the target's content: editing it must redeploy, and the stack's tree needs it too.
            target = self.relative_path(Path(os.path.realpath(self.root / relative)))
            if target is not None and target != relative and target in ids:
                files[target] = ids[target]
        return files

    def relative_path(self, path: Path, base: Path | None = None) -> str | None:
        """`path` relative to the checkout (or to `base`, laid out like it), or None outside it."""
        try:
            relative = Path(os.path.normpath(path)).relative_to(base or self.root)
        except ValueError:
            return None
        return relative.as_posix() if relative.parts else "."


def relocate(value: JSON, source: Path, target: Path) -> JSON:
    """`value` with every string that is `source` or a path below it moved to `target`."""
    if isinstance(value, str):
        prefix = str(source)
        if value == prefix or value.startswith(prefix + "/"):
            return str(target) + value[len(prefix) :]
        return value
    if isinstance(value, dict):
        return {key: relocate(item, source, target) for key, item in value.items()}
    if isinstance(value, list):
        return [relocate(item, source, target) for item in value]
    return value


def _inside(path: str, directory: str | None) -> bool:
    return directory is not None and (directory == "." or path == directory or path.startswith(directory + "/"))


def _replicas(service: dict[str, JSON]) -> int | None:
    if service.get("scale") is not None:
        return int(service["scale"])
    replicas = (service.get("deploy") or {}).get("replicas")
    return None if replicas is None else int(replicas)


def _service_resources(project: dict[str, JSON], service: dict[str, JSON]) -> dict[str, JSON]:
    """The top-level networks, volumes, configs and secrets this service refers to."""
    used = {
        "networks": list(service.get("networks") or {}),
        "volumes": [v.get("source") for v in service.get("volumes") or [] if isinstance(v, dict) and v.get("type") == "volume"],
        "configs": [c.get("source") if isinstance(c, dict) else c for c in service.get("configs") or []],
        "secrets": [s.get("source") if isinstance(s, dict) else s for s in service.get("secrets") or []],
    }
    return {
        kind: {name: (project.get(kind) or {}).get(name) for name in names if name}
        for kind, names in used.items()
    }


def _unset_message(names: list[str]) -> str:
    return (
        f"variable(s) {', '.join(names)} used without a value or default "
        "(define them in stack.yml envs, the secrets provider or the stack's .env)"
    )


def _error_lines(stderr: str) -> list[str]:
    """Compose's error, without its warnings (an unset variable's is named by composeflux)."""
    return [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and "level=warning" not in line and not UNSET_VARIABLE.search(line)
    ]


def _compose_error(stderr: str) -> str:
    return "; ".join(_error_lines(stderr)[-5:]) or "no error message"
