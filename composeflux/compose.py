"""The `docker compose` command line: the only place that decides Compose semantics.

Every call gets an explicit, minimal environment: the interpolation variables composeflux wants
the project to see (stack.yml envs + secrets) plus what the docker CLI needs to reach the engine.
The host's own environment (HOME, USER, ...) must not leak into the stacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from composeflux.errors import EngineError
from composeflux.processes import run_bounded
from composeflux.rendered import JSON

# What the docker CLI itself needs from our environment to find the engine and its plugins.
PASSTHROUGH = ("PATH", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_API_VERSION")
VERBS = ("config", "up", "down", "version")
RENDER_TIMEOUT = 60.0  # seconds for one `docker compose config` (it takes ~0.15 s)
RENDER_MEMORY = 2 << 30  # bytes of address space for one `docker compose config` (it needs ~0.3 GiB)
# What the docker CLI says when the engine is gone (the socket is missing or refuses).
ENGINE_GONE = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "error during connect")
UNSET_VARIABLE = re.compile(r'The \\?"(\w+)\\?" variable is not set')
# Variables the docker CLI or Compose read themselves: never given a made-up value (see unset_sentinels).
CLI_VARIABLE = re.compile(r"(?:DOCKER|COMPOSE|BUILDKIT|BUILDX)_\w*|HOME|PATH|TMPDIR|XDG_\w+")
SENTINEL_PREFIX = "cfx-unset-"
# Where the docker CLI looks for its plugins besides $DOCKER_CONFIG/cli-plugins (docker/cli's
# defaultSystemPluginDirs on Linux): a different docker-compose in any of them is another Compose.
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins",
)
VERSION_CACHE = "compose-version.json"


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class Compose:
    """`docker compose`, run as the Compose plugin binary itself where the docker CLI would find
    one (`plugin`): the CLI front-end only looks the plugin up and starts it, and that costs as
    much as a whole `config` (measured with docker 28: 89 ms a call through it, 41 ms direct).
    Compose run that way is Compose's documented standalone mode, with the same configuration,
    contexts and semantics. Without a plugin in those directories (Compose installed some other
    way), `docker compose` through the CLI. `plugin_dirs`: where to look (tests)."""

    def __init__(self, environ: Mapping[str, str] | None = None, plugin_dirs: Sequence[str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.base_env = {key: environ[key] for key in PASSTHROUGH if key in environ}
        docker = shutil.which("docker", path=self.base_env.get("PATH"))
        if docker is None:
            raise EngineError("the docker command was not found on PATH")
        self.docker = docker
        self.config_dir = self.base_env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
        self.plugin_dirs = list(self._plugin_dirs() if plugin_dirs is None else plugin_dirs)
        candidates = (os.path.join(directory, "docker-compose") for directory in self.plugin_dirs)
        self.plugin = next((path for path in candidates if os.path.isfile(path) and os.access(path, os.X_OK)), None)
        self.command = [self.plugin] if self.plugin else [self.docker, "compose"]
        self._version: str | None = None

    def version(self, cache: Path | None = None) -> str:
        """Compose's version (v2 or newer, else EngineError). `cache`: a directory where the
        answer is kept with a fingerprint of the files that decide it (`fingerprint`): while
        they are unchanged no `docker compose version` runs (it costs ~50 ms, a no-op sync's
        largest single step). A cache that cannot be read or written is only not used."""
        if self._version is not None:
            return self._version
        fingerprint = self.fingerprint() if cache is not None else ""
        if cache is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                known = json.loads((cache / VERSION_CACHE).read_text())
                if known.get("fingerprint") == fingerprint and isinstance(known.get("version"), str):
                    self._version = str(known["version"])
                    return self._version
        result = self._run(["version", "--short"], env={}, cwd=None, timeout=60)
        if result.returncode != 0:
            raise EngineError(f"`docker compose version` failed: {result.stderr.strip() or 'is the Compose v2 plugin installed?'}")
        version = result.stdout.strip()
        if not version.lstrip("v").startswith(tuple("23456789")):
            raise EngineError(f"Docker Compose v2 or newer is required, found {version}")
        self._version = version
        if cache is not None:
            from composeflux.atomic import replace_file

            with contextlib.suppress(OSError):
                known_now = json.dumps({"fingerprint": fingerprint, "version": version}) + "\n"
                replace_file(cache / VERSION_CACHE, known_now.encode(), 0o644)
        return version

    def _plugin_dirs(self) -> list[str]:
        """Where the docker CLI looks for plugins, in its order: the config directory's
        cli-plugins, config.json's cliPluginsExtraDirs, then the system directories."""
        extra: list[str] = []
        with contextlib.suppress(OSError, ValueError, AttributeError):
            listed = json.loads(Path(self.config_dir, "config.json").read_text()).get("cliPluginsExtraDirs") or []
            extra = [str(directory) for directory in listed if isinstance(directory, str)]
        return [os.path.join(self.config_dir, "cli-plugins"), *extra, *SYSTEM_PLUGIN_DIRS]

    def fingerprint(self) -> str:
        """What decides which Compose runs: the docker CLI, its config.json (cliPluginsExtraDirs)
        and every docker-compose plugin it could find, each by device, inode, size and
        modification time (an upgrade changes at least one of them)."""
        candidates = [self.docker, os.path.join(self.config_dir, "config.json")]
        candidates += [os.path.join(directory, "docker-compose") for directory in self.plugin_dirs]
        seen = []
        for candidate in candidates:
            try:
                info = os.stat(candidate)
            except OSError:
                continue
            seen.append([candidate, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns])
        return hashlib.sha256(json.dumps(seen).encode()).hexdigest()

    def config(
        self, project: str, directory: Path, files: tuple[Path, ...], env: Mapping[str, str], timeout: float = RENDER_TIMEOUT
    ) -> Result:
        """Render the project to JSON (paths made absolute, variables interpolated, $ escaped as $$).

        Bounded, because the files are whatever was pushed: `timeout` seconds and RENDER_MEMORY
        bytes of address space (a YAML bomb or a huge file fails its stack, not the host)."""
        arguments = ["-p", project, "--project-directory", str(directory)]
        for file in files:
            arguments += ["-f", str(file)]
        return self._run([*arguments, "config", "--format", "json"], env=env, cwd=directory, timeout=timeout, memory=RENDER_MEMORY)

    def up(
        self, project: str, directory: Path, rendered: dict[str, JSON], env: Mapping[str, str], remove_orphans: bool, timeout: float
    ) -> Result:
        """Deploy a rendered project fed on stdin: nothing is written to disk, no value is an argument."""
        arguments = ["-p", project, "--project-directory", str(directory), "-f", "-", "up", "--detach"]
        if remove_orphans:
            arguments.append("--remove-orphans")
        return self._run(arguments, env=env, cwd=directory, timeout=timeout, stdin=json.dumps(rendered))

    def down(self, project: str, timeout: float) -> Result:
        """Remove a project's containers and networks; named volumes are kept."""
        return self._run(["-p", project, "down", "--remove-orphans"], env={}, cwd=Path("/"), timeout=timeout)

    def _run(
        self,
        arguments: list[str],
        env: Mapping[str, str],
        cwd: Path | None,
        timeout: float,
        stdin: str | None = None,
        memory: int | None = None,
    ) -> Result:
        """Run `docker compose` in a process group of its own, so that a timeout kills the
        compose plugin too (the docker front-end runs it as a child, which would outlive it).
        `memory`: a limit of its address space, where this process may set one (composeflux.service
        forbids setrlimit and sets LimitAS= for the whole sync instead)."""
        verb = next((word for word in arguments if word in VERBS), "")
        return run_docker([*self.command, *arguments], {**env, **self.base_env}, cwd, timeout, "docker compose", verb, stdin, memory)


def run_docker(
    command: list[str],
    env: Mapping[str, str],
    cwd: Path | str | None,
    timeout: float,
    program: str,
    verb: str,
    stdin: str | None = None,
    memory: int | None = None,
) -> Result:
    """Run one docker CLI command (`program` `verb`, as the messages name it: "docker compose",
    "up") bounded (processes.run_bounded: a timeout kills its whole process group), as a Result:
    exit status 124 at the timeout. `memory`: a limit of its address space
    (_limit_address_space). EngineError when it cannot be started at all."""
    limit = None if memory is None else functools.partial(_limit_address_space, memory)
    try:
        done = run_bounded(command, env=env, timeout=timeout, stdin=None if stdin is None else stdin.encode(), cwd=cwd, preexec_fn=limit)
    except OSError as exc:
        raise EngineError(f"cannot run {program}: {exc}") from None
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{program} {verb} did not finish within {timeout:g} s (killed)")
    return Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def _limit_address_space(limit: int) -> None:
    """In the child, before exec: lower RLIMIT_AS. Where setrlimit is forbidden (a seccomp
    filter), the limit the service manager set stays; nothing else is done between fork and exec."""
    with contextlib.suppress(OSError, ValueError):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def engine_unreachable(result: Result) -> bool:
    """Whether a failed call failed because the Docker engine cannot be reached at all."""
    return result.returncode != 0 and any(marker in result.stderr for marker in ENGINE_GONE)


def unset_variables(stderr: str) -> list[str]:
    """Variables Compose warned about ("... variable is not set. Defaulting to a blank string.")."""
    return sorted(set(UNSET_VARIABLE.findall(stderr)))


def unset_sentinels(names: Collection[str]) -> dict[str, str]:
    """A made-up value for each of `names`, unique and unguessable (`cfx-unset-<random hex>-NAME`),
    to render the project once more with: where one shows up in that render, its variable really
    reaches the project. The variables the docker CLI or Compose read themselves (DOCKER_*,
    COMPOSE_*, HOME, ...) get none: they would change how the CLI works, not what it renders."""
    return {name: f"{SENTINEL_PREFIX}{secrets.token_hex(8)}-{name}" for name in names if not CLI_VARIABLE.fullmatch(name)}


def numeric_sentinels(names: Collection[str]) -> dict[str, str]:
    """Distinct random numbers (10000-65535, valid as a port) for the variables whose made-up text
    Compose rejected: it validates a port number even in a service that is not deployed."""
    numbers = secrets.SystemRandom().sample(range(10000, 65536), len(names))
    return {name: str(number) for name, number in zip(sorted(names), numbers, strict=True)}


def revealed(text: str, sentinels: Mapping[str, str]) -> set[str]:
    """The variables whose made-up value appears in `text` (Compose output, any letter case)."""
    lowered = text.lower()
    found = set()
    for name, value in sentinels.items():
        if value.isdigit():
            if re.search(rf"(?<!\d){value}(?!\d)", text):
                found.add(name)
        elif value.lower() in lowered:
            found.add(name)
    return found
