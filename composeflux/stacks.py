"""Stack discovery: which Compose projects the checkout describes, and the shared stack.yml.

Layout (see composeflux-stack.yml(5)):

    <STACK_PATH>/stack.yml         optional: startup_order and shared envs
    <STACK_PATH>/<name>/compose.yaml   one directory per stack, one level deep

A directory without a compose file is not a stack (it may hold shared files). A stack whose
directory is unusable (a name Compose refuses, a symlink leading out of the checkout) becomes a
StackProblem for that stack only; the others carry on.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path, PurePath, PurePosixPath

import yaml

from composeflux.environment import read_dotenv
from composeflux.errors import ConfigError
from composeflux.rendered import StackProblem
from composeflux.settings import DURATION, UNITS

log = logging.getLogger(__name__)

# In Compose's order of preference; the override file goes with the main file's spelling.
COMPOSE_FILES = (
    ("compose.yaml", "compose.override.yaml"),
    ("compose.yml", "compose.override.yml"),
    ("docker-compose.yaml", "docker-compose.override.yaml"),
    ("docker-compose.yml", "docker-compose.override.yml"),
)

# Compose's own rule for project names.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Stack:
    name: str
    directory: Path
    compose_files: tuple[Path, ...]


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """stack.yml `stacks.<name>`: settings of one stack. Later capabilities add keys here."""

    envs: dict[str, str] = dataclasses.field(default_factory=dict)
    health_timeout: float | None = None  # seconds; None: HEALTH_TIMEOUT
    health_stable: float | None = None  # seconds; None: HEALTH_STABLE
    rollback: bool | None = None  # None: ROLLBACK
    suspended: bool = False  # a pause declared in Git: not deployed, healed or pruned
    image_updates: str | None = None  # off, notify, apply; None: IMAGE_UPDATES


STACK_SETTING_KEYS = ("envs", "health_timeout", "health_stable", "rollback", "suspended", "image_updates")
IMAGE_UPDATE_POLICIES = ("off", "notify", "apply")
MAX_HEALTH_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """The contents of stack.yml."""

    startup_order: tuple[str, ...] = ()
    envs: dict[str, str] = dataclasses.field(default_factory=dict)
    stacks: dict[str, StackSettings] = dataclasses.field(default_factory=dict)

    def settings(self, name: str) -> StackSettings:
        return self.stacks.get(name) or StackSettings()


@dataclasses.dataclass(frozen=True)
class Discovery:
    stacks: list[Stack]
    problems: list[StackProblem]
    stack_config: StackConfig

    def ordered(self) -> list[Stack]:
        """startup_order first, in that order, then the rest by name."""
        by_name = {stack.name: stack for stack in self.stacks}
        first = [by_name[name] for name in self.stack_config.startup_order if name in by_name]
        ordered = set(self.stack_config.startup_order)
        rest = sorted((s for s in self.stacks if s.name not in ordered), key=lambda s: s.name)
        return first + rest


def discover(
    checkout: Path,
    stack_paths: str | PurePath | Sequence[str | PurePath],
    config_file_name: str,
    submodules: Collection[str] = (),
) -> Discovery:
    """Find the stacks under each of checkout/stack_paths. Raises ConfigError for a broken stack.yml.

    Each directory may have its stack.yml; their settings add up, and a stack, a variable or a
    startup_order entry given in two of them is an error. A stack name found under two of the
    directories fails both stacks.
    `submodules`: repository-relative paths that are Git submodules; one of them in place of a
    stack directory is a problem of that stack (its files are not in this repository), never
    a stack that silently vanished."""
    paths = [stack_paths] if isinstance(stack_paths, (str, PurePath)) else list(stack_paths)
    checkout_real = checkout.resolve()
    stacks: list[Stack] = []
    problems: list[StackProblem] = []
    configs: list[tuple[str, StackConfig]] = []
    for stack_path in paths:
        root = checkout / stack_path
        config_path = root / config_file_name
        if config_path.exists() and not config_path.resolve().is_relative_to(checkout_real):
            raise ConfigError(f"{config_file_name}: a symlink leading outside the repository")
        configs.append((str(PurePosixPath(stack_path) / config_file_name), load_stack_config(config_path)))
        _scan(root, PurePosixPath(stack_path), checkout_real, submodules, stacks, problems)
    stack_config = _merge(configs)
    stacks, clashes = _unique(stacks)
    problems += clashes
    if not stacks and not problems:
        for stack_path in paths:
            _say_where_stacks_are(checkout, checkout / stack_path)

    known = {s.name for s in stacks} | {p.name for p in problems}
    for name in stack_config.startup_order:
        if name not in known:
            log.warning("%s: startup_order names %r, but there is no such stack directory", config_file_name, name)
    for name in sorted(set(stack_config.stacks) - known):
        log.warning("%s: stacks names %r, but there is no such stack directory", config_file_name, name)
    return Discovery(stacks=stacks, problems=problems, stack_config=stack_config)


def _merge(configs: list[tuple[str, StackConfig]]) -> StackConfig:
    """The stack.yml files of several STACK_PATH directories as one; nothing may be given twice."""
    if len(configs) == 1:
        return configs[0][1]
    order: list[str] = []
    envs: dict[str, str] = {}
    stacks: dict[str, StackSettings] = {}
    origin: dict[tuple[str, str], str] = {}
    for file, config in configs:
        for kind, names in (("startup_order", config.startup_order), ("envs", config.envs), ("stacks", config.stacks)):
            for name in names:
                if (kind, name) in origin:
                    raise ConfigError(f"{file}: {kind}: {name} is given in {origin[kind, name]} too")
                origin[kind, name] = file
        order += config.startup_order
        envs.update(config.envs)
        stacks.update(config.stacks)
    return StackConfig(tuple(order), envs, stacks)


def _scan(
    root: Path,
    stack_path: PurePosixPath,
    checkout_real: Path,
    submodules: Collection[str],
    stacks: list[Stack],
    problems: list[StackProblem],
) -> None:
    """The stacks directly under one STACK_PATH directory, appended to `stacks` and `problems`."""
    if not root.is_dir():
        return
    prefix = "" if str(stack_path) in ("", ".") else f"{stack_path.as_posix()}/"
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if f"{prefix}{entry.name}" in submodules:
            problems.append(StackProblem(entry.name, f"{entry.name} is a Git submodule: composeflux deploys only files "
                                         "that are in this repository (make it a directory of it)"))
            continue
        found = _stack_from_directory(entry, checkout_real)
        if found is None and any((entry / override).is_file() for _, override in COMPOSE_FILES):
            log.warning("%s holds only a Compose override file, no compose.yaml: not a stack", entry.name)
        elif found is None:
            log.debug("%s holds no compose file: not a stack", entry.name)
        elif isinstance(found, StackProblem):
            problems.append(found)
        else:
            stacks.append(found)


def _stack_from_directory(directory: Path, checkout_real: Path) -> Stack | StackProblem | None:
    """The stack in this directory; None when it holds no compose file (then it is no stack)."""
    name = directory.name
    dotenv = read_dotenv(directory / ".env")
    if dotenv.get("COMPOSE_FILE"):
        # As Compose does: the project's .env may list its files (a base and a host override).
        separator = dotenv.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        files = [directory / entry for entry in dotenv["COMPOSE_FILE"].split(separator) if entry]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            return StackProblem(name, f"COMPOSE_FILE in its .env names {', '.join(missing)}, which is not there")
    else:
        for main, override in COMPOSE_FILES:
            if (directory / main).is_file():
                files = [directory / main]
                if (directory / override).is_file():
                    files.append(directory / override)
                break
        else:
            return None
    if not directory.resolve().is_relative_to(checkout_real):
        return StackProblem(name, f"{name} is a symlink leading outside the checkout")
    for file in files:
        if not file.resolve().is_relative_to(checkout_real):
            return StackProblem(name, f"{file.name} is a symlink leading outside the checkout")
        if is_lfs_pointer(file):
            return StackProblem(name, f"{file.name} is a Git LFS pointer: composeflux does not fetch LFS content")
    declared = _declared_name(files)
    if declared is not None and declared != name:
        if PROJECT_NAME.match(declared):
            log.info("Directory %s is deployed as the Compose project %s, the name its compose file gives", name, declared)
            return Stack(name=declared, directory=directory, compose_files=tuple(files))
        log.warning("%s: the name %r in its compose file is no valid Compose project name; using the directory's", name, declared)
    if not PROJECT_NAME.match(name):
        normalized = project_name(name)
        if not normalized:
            return StackProblem(
                name,
                f"directory name {name!r} gives no valid Compose project name "
                "(lowercase letters, digits, '-' and '_', starting with a letter or digit)",
            )
        log.warning("Directory %s is deployed as the Compose project %s (the name Compose gives it)", name, normalized)
        name = normalized
    return Stack(name=name, directory=directory, compose_files=tuple(files))


def _declared_name(files: list[Path]) -> str | None:
    """The top-level `name:` of the compose files (the last one that sets it wins, as in Compose's
    merge), which `docker compose up` would use as the project name; None if none sets it, or
    if it is built from a variable (then the directory name is used, and the log says so)."""
    declared = None
    for file in files:
        try:
            document = yaml.load(file.read_text(encoding="utf-8"), Loader=_SafeLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None  # Compose will say what is wrong with it
        if isinstance(document, dict) and isinstance(document.get("name"), str):
            declared = document["name"]
    if declared is not None and "$" in declared:
        log.warning("The project name %r in %s comes from a variable; the directory name is used", declared, files[0].parent.name)
        return None
    return declared


def _say_where_stacks_are(checkout: Path, root: Path, depth: int = 4) -> None:
    """No stack under STACK_PATH is never silent: say where compose files are, if anywhere."""
    names = {main for main, _ in COMPOSE_FILES}
    found: list[Path] = []
    base_depth = len(root.parts)
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        if len(Path(directory).parts) - base_depth >= depth:
            subdirectories[:] = []
        if names & set(files) and Path(directory) != root:
            found.append(Path(directory))
    where = root.relative_to(checkout).as_posix() if root != checkout else "."
    if not found:
        log.warning("No stack found: no directory under STACK_PATH %s holds a compose file", where)
        return
    parents = sorted({path.parent.relative_to(checkout).as_posix() for path in found})
    found.sort()
    shown = ", ".join(path.relative_to(checkout).as_posix() for path in found[:5]) + (" ..." if len(found) > 5 else "")
    log.warning(
        "No stack found directly under STACK_PATH %s, but compose files lie deeper (%s); STACK_PATH=%s would find them",
        where, shown, " ".join(parents),
    )


def _unique(stacks: list[Stack]) -> tuple[list[Stack], list[StackProblem]]:
    """Stacks whose directories map to one project name all fail, naming each other."""
    by_name: dict[str, list[Stack]] = {}
    for stack in stacks:
        by_name.setdefault(stack.name, []).append(stack)
    unique = [group[0] for group in by_name.values() if len(group) == 1]
    clashes = [
        StackProblem(name, f"directories {', '.join(_shown(group))} are all the Compose project {name}")
        for name, group in by_name.items()
        if len(group) > 1
    ]
    return unique, clashes


def _shown(group: list[Stack]) -> list[str]:
    """The directories' names, with their parents where the names alone are the same."""
    names = [stack.directory.name for stack in group]
    if len(set(names)) < len(names):
        names = [f"{stack.directory.parent.name}/{stack.directory.name}" for stack in group]
    return sorted(names)


def project_name(directory_name: str) -> str:
    """The Compose project name of a directory, as Compose derives it: lower case, characters
    other than letters, digits, '-' and '_' dropped, and no leading '-' or '_'."""
    name = re.sub(r"[^a-z0-9_-]", "", directory_name.lower())
    return name.lstrip("-_")


# libyaml's parser where Debian's python3-yaml has it (it does): ten times faster on a large file.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TextLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """YAML as written: every plain scalar is the text the user typed (`1.10` stays 1.10, `0755`
    stays 0755, `NO` stays NO), except an empty value or `~`/`null`, which is empty. A key that
    appears twice in one mapping is an error, not "the last one wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKey(f"{key!s} appears more than once (line {key_node.start_mark.line + 1})")
            seen.add(key)
        mapping: dict[object, object] = super().construct_mapping(node, deep=deep)
        return mapping


class DuplicateKey(yaml.YAMLError):
    pass


# Only null keeps its implicit meaning; bool, int, float, timestamp resolvers are dropped.
TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"


def is_lfs_pointer(path: Path) -> bool:
    """A file that Git LFS replaced by its pointer (composeflux clones with LFS smudging off)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False


def load_stack_config(path: Path) -> StackConfig:
    if not path.exists():
        return StackConfig()
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=TextLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot read: {exc}") from None
    except DuplicateKey as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from None
    if document is None:
        return StackConfig()
    if not isinstance(document, dict):
        raise ConfigError(f"{path.name}: expected a mapping with startup_order and/or envs")
    unknown = set(document) - {"startup_order", "envs", "stacks"}
    if unknown:
        raise ConfigError(f"{path.name}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: startup_order, envs, stacks)")
    return StackConfig(
        startup_order=_startup_order(path.name, document.get("startup_order")),
        envs=_envs(path.name, "envs", document.get("envs")),
        stacks=_stacks(path.name, document.get("stacks")),
    )


def _stacks(file: str, value: object) -> dict[str, StackSettings]:
    """stacks: {NAME: {envs: {...}}}, validated strictly: every error names the key."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: stacks: expected a mapping of stack name to its settings")
    stacks = {}
    for name, settings in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{file}: stacks: {name!r} is not a stack name")
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{file}: stacks.{name}: expected a mapping of settings ({', '.join(STACK_SETTING_KEYS)})")
        unknown = sorted(map(str, set(settings) - set(STACK_SETTING_KEYS)))
        if unknown:
            raise ConfigError(f"{file}: stacks.{name}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(STACK_SETTING_KEYS)})")
        where = f"{file}: stacks.{name}"
        stacks[name] = StackSettings(
            envs=_envs(file, f"stacks.{name}.envs", settings.get("envs")),
            health_timeout=_seconds(where, "health_timeout", settings.get("health_timeout"), allow_zero=False),
            health_stable=_seconds(where, "health_stable", settings.get("health_stable"), allow_zero=True),
            rollback=_flag(where, "rollback", settings.get("rollback")),
            suspended=bool(_flag(where, "suspended", settings.get("suspended"))),
            image_updates=_image_updates(where, settings.get("image_updates")),
        )
    return stacks


def _seconds(where: str, key: str, value: object, allow_zero: bool) -> float | None:
    """A number of seconds, None when not given. (stack.yml scalars arrive as their text.)"""
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else ""
    match = DURATION.match(text)  # 90, 90s, 2min, as in composeflux.conf
    try:
        number = float(match.group(1)) * UNITS[match.group(2).lower()] if match else float(text) if text else None
    except ValueError:
        number = None
    if number is None or not 0 <= number <= MAX_HEALTH_SECONDS or (number == 0 and not allow_zero):
        bound = "from 0" if allow_zero else "more than 0"
        raise ConfigError(f"{where}.{key}: expected a number of seconds, {bound}, at most {MAX_HEALTH_SECONDS:g}")
    return number


def _image_updates(where: str, value: object) -> str | None:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in IMAGE_UPDATE_POLICIES:
        raise ConfigError(f"{where}.image_updates: expected one of {', '.join(IMAGE_UPDATE_POLICIES)}")
    return text


def _flag(where: str, key: str, value: object) -> bool | None:
    """true or false, as YAML 1.2 writes them, None when not given."""
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in ("true", "false"):
        raise ConfigError(f"{where}.{key}: expected true or false")
    return text == "true"


def _startup_order(file: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{file}: startup_order: expected a list of stack names")
    duplicates = sorted(name for name, count in collections.Counter(value).items() if count > 1)
    if duplicates:
        raise ConfigError(f"{file}: startup_order: {', '.join(duplicates)} listed more than once")
    return tuple(value)


def _envs(file: str, where: str, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: {where}: expected a mapping of VARIABLE: value")
    envs: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not VARIABLE_NAME.match(key):
            raise ConfigError(f"{file}: {where}: {key!r} is not a valid variable name")
        if item is None:
            item = ""
        if not isinstance(item, str):  # every scalar is text (TextLoader): this is a list or mapping
            raise ConfigError(f"{file}: {where}.{key}: expected a string or number")
        envs[key] = item
    return envs
