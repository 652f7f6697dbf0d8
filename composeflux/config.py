"""Configuration: merge every source, validate everything, before anything is touched.

Sources, later ones win:
    /etc/composeflux/composeflux.conf (or --config)  KEY=VALUE, systemd EnvironmentFile= syntax
    the process environment                           only keys composeflux knows
    $CREDENTIALS_DIRECTORY/<KEY>                      systemd LoadCredential=/LoadCredentialEncrypted=
    command-line flags
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from composeflux import secrets, trigger
from composeflux.envfile import parse_env_text
from composeflux.environment import DEFAULT_LOCAL_ENV_DIR
from composeflux.errors import ConfigError
from composeflux.events import DEFAULT_NOTIFY, Kind
from composeflux.masking import MIN_MASKED_LENGTH, Masker
from composeflux.private import PrivateFileError, read_private
from composeflux.settings import boolean, choice, integer, seconds

if TYPE_CHECKING:
    from composeflux.signatures import Trust
    from composeflux.sops import Identities

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = Path("/etc/composeflux/composeflux.conf")
DEFAULT_STATE_DIR = Path("/var/lib/composeflux")
DEFAULT_RUNTIME_DIR = Path("/run/composeflux")
DEFAULT_KNOWN_HOSTS = Path("/etc/composeflux/known_hosts")
MAX_TIMEOUT = 86400.0  # seconds: anything longer is a typo, not a plan
MAX_DEPLOY_JOBS = 64
DEFAULT_HTTPS_USER = "x-access-token"  # what GitHub and Gitea accept with a token
AGE_KEY_CREDENTIAL = "sops-age-key"  # $CREDENTIALS_DIRECTORY/sops-age-key (LoadCredentialEncrypted=)
DEFAULT_AGE_KEY_FILE = Path("/etc/composeflux/age.key")

CORE_KEYS = frozenset(
    {
        "GIT_REPO_URL",
        "GIT_BRANCH",
        "GIT_SSH_KEY_PATH",
        "GIT_SSH_KNOWN_HOSTS",
        "GIT_SSH_HOST_KEY_CHECKING",
        "GIT_TOKEN",
        "GIT_USERNAME",
        "GIT_CLONE_PATH",
        "STACK_PATH",
        "CONFIG_FILE",
        "REMOVE_ORPHANS",
        "ALLOW_PRUNE_ALL",
        "LOCK_TIMEOUT",
        "DEPLOY_TIMEOUT",
        "DEPLOY_JOBS",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "TRIGGER_DIR",
        "TRIGGER_RESULT_DIR",
        "MASK_MIN_LENGTH",
        "RETRY_FAILED_MAX",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_KEY",
        "GNUPGHOME",
        "LOCAL_ENV_DIR",
        "HEALTH_TIMEOUT",
        "HEALTH_STABLE",
        "ROLLBACK",
        "HEAL_MAX_ATTEMPTS",
        "IMAGE_UPDATES",
        "NOTIFY_URLS",
        "NOTIFY_EVENTS",
        "NOTIFY_REMIND",
        "METRICS_TEXTFILE",
        "VERIFY_SIGNATURES",
        "VERIFY_TAG_PATTERN",
        "ALLOWED_SIGNERS",
        "VERIFY_KEYRING",
        "BACKEND",
    }
)
# Core settings whose values are credentials (the providers' are listed in secrets/).
CORE_CREDENTIALS = frozenset({"SOPS_AGE_KEY", "NOTIFY_URLS"})

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
BACKENDS = ("compose", "swarm")
LOG_FORMATS = ("text", "json")
HOST_KEY_CHECKING = ("yes", "accept-new")
BRANCH_PATTERN = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]+(?<![./])$")


@dataclasses.dataclass(frozen=True)
class Config:
    repo_url: str  # without credentials: safe to log and to store in .git/config
    branch: str
    stack_paths: tuple[PurePosixPath, ...]  # the directories holding stacks, relative to the repository root
    clone_path: Path
    stack_config_file: str  # stack.yml, relative to each of stack_paths
    ssh_key_path: Path | None
    ssh_known_hosts: Path
    ssh_host_key_checking: str
    https_username: str | None
    https_token: str | None = dataclasses.field(repr=False)
    remove_orphans: bool
    allow_prune_all: bool
    lock_timeout: float
    deploy_timeout: float
    deploy_jobs: int  # stacks deployed (and rendered) at the same time; 1: one after the other
    retry_failed_max: float  # seconds; 0: retry failed stacks on every sync
    health_timeout: float  # seconds a deployed container has to become running (and healthy)
    health_stable: float  # seconds it must then keep running without a restart
    rollback: bool  # put a stack that fails its health gate back to its last good revision
    heal_max_attempts: int  # redeploys of a broken stack at one revision; 0: never heal
    image_updates: str  # off, notify, apply: what `composeflux update` does about a new image behind a tag
    backend: str  # compose (`docker compose up` on this host) or swarm (`docker stack deploy` on this swarm manager)
    reporting: Reporting  # notifications and metrics
    verify_signatures: str  # off, commit (the branch's head must be signed), tag (the newest signed tag)
    verify_tag_pattern: str  # VERIFY_SIGNATURES=tag: the tags considered (a glob under refs/tags/)
    trust: Trust  # the keys a signature must be made with (signatures.py)
    log_level: str
    log_format: str
    state_dir: Path
    runtime_dir: Path
    trigger_dir: Path | None
    result_dir: Path  # TRIGGER_RESULT_DIR: where each sync's result is published (`?wait=1` of the webhook)
    local_env_dir: Path  # LOCAL_ENV_DIR: the host's own <stack>.env files
    settings: Mapping[str, str] = dataclasses.field(repr=False)  # everything, as merged
    # Every credential value the configuration holds (token, password in the URL, provider
    # credentials), in the forms git and HTTP send them: the masker starts from these.
    credentials: frozenset[str] = dataclasses.field(repr=False)
    # The run's one masker (credentials now, secret values once fetched) and the secrets
    # provider, built and validated with the rest of the configuration.
    masker: Masker = dataclasses.field(repr=False, compare=False)
    secrets_provider: secrets.SecretsProvider = dataclasses.field(repr=False, compare=False)
    # The host's age identities (and GnuPG home) for SOPS files, read and checked with the rest.
    sops_identities: Identities = dataclasses.field(repr=False, compare=False)

    @property
    def instance_id(self) -> str:
        """Identifies this repository + STACK_PATH, so instances sharing an engine never collide.
        The URL is normalised so that switching between SSH and HTTPS keeps the same instance."""
        paths = " ".join(str(path) for path in self.stack_paths)  # one path: as composeflux 0.1 had it
        digest = hashlib.sha256(f"{repository_identity(self.repo_url)}\0{paths}".encode())
        return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Reporting:
    """What telling the operator needs (reporting.py): also loaded on its own, leniently, by
    `composeflux unit-failed` and `composeflux metrics`, which must work when the rest of the
    configuration is what broke the sync."""

    notify_urls: tuple[str, ...] = dataclasses.field(repr=False)  # apprise URLs (credentials)
    notify_events: frozenset[Kind]  # what is notified (events.py)
    notify_remind: float  # seconds between reminders of a condition that lasts; 0: none
    metrics_textfile: Path | None  # node_exporter textfile (metrics.py); None: off
    state_dir: Path
    masker: Masker = dataclasses.field(repr=False, compare=False)


def _reporting(settings: Mapping[str, str], state_dir: Path, masker: Masker, notify: bool = True) -> Reporting:
    return Reporting(
        notify_urls=_notify_urls(settings) if notify else (),
        notify_events=_notify_events(settings) if notify else DEFAULT_NOTIFY,
        notify_remind=seconds(settings, "NOTIFY_REMIND", 86400.0, maximum=366 * 86400) if notify else 0.0,
        metrics_textfile=_metrics_textfile(settings),
        state_dir=state_dir,
        masker=masker,
    )


def load_reporting(config_file: Path | None = None, environ: Mapping[str, str] | None = None, *, notify: bool = True) -> Reporting:
    """Only the notification and metrics settings (ConfigError for those alone); `notify=False`:
    the metrics settings alone (`composeflux metrics` works whatever NOTIFY_* say)."""
    environ = os.environ if environ is None else environ
    settings = load_settings(config_file, environ, {})
    masker = Masker(
        _credentials(settings, settings.get("GIT_TOKEN", "").strip() or None, None, None),
        min_length=integer(settings, "MASK_MIN_LENGTH", MIN_MASKED_LENGTH, minimum=1, maximum=64),
    )
    return _reporting(settings, _state_dir(environ), masker, notify)


SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.*)$")


def repository_identity(url: str) -> str:
    """host/path of a repository, whatever the transport: ssh://git@h/a/b.git, git@h:a/b and
    https://h/a/b all give "h/a/b". Local paths stay as they are."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.netloc:
        host, path = (parts.hostname or "").lower(), parts.path
    elif (match := SCP_LIKE.match(url)) and not url.startswith("/"):
        host, path = match.group(1).lower(), match.group(2)
    else:
        return url.rstrip("/")
    path = path.strip("/").removesuffix(".git")
    return f"{host}/{path}"


def known_keys() -> frozenset[str]:
    return CORE_KEYS | secrets.all_keys()


def load_settings(
    config_file: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, str | None],
) -> dict[str, str]:
    """Merge the sources into one flat mapping of KEY -> value."""
    keys = known_keys()
    settings: dict[str, str] = {}

    explicit_file = config_file is not None
    path = config_file if config_file is not None else DEFAULT_CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit_file:
            raise ConfigError(f"{path}: configuration file not found") from None
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        from_file = parse_env_text(text, str(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key in from_file:
        if key not in keys:
            log.warning("%s: unknown key %s ignored", path, key)
    settings.update({k: v for k, v in from_file.items() if k in keys})

    settings.update({k: v for k, v in environ.items() if k in keys})

    credentials_dir = environ.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        for key in keys:
            credential = Path(credentials_dir, key)
            if credential.is_file():
                settings[key] = credential.read_text(encoding="utf-8").rstrip("\n")

    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Return the URL without user:password@, plus the user and password it carried."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, urllib.parse.unquote(user) or None, urllib.parse.unquote(password) or None


def _repo_url(settings: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    raw = settings.get("GIT_REPO_URL", "").strip()
    if not raw:
        raise ConfigError("GIT_REPO_URL: required (the Git repository holding the stacks)")
    if raw.startswith("-") or any(c.isspace() for c in raw):
        raise ConfigError("GIT_REPO_URL: not a valid repository URL or path")
    return _split_credentials(raw)


def _stack_paths(settings: Mapping[str, str]) -> tuple[PurePosixPath, ...]:
    """STACK_PATH: one directory, or several separated by blanks or commas."""
    raw = settings.get("STACK_PATH", "").strip()
    if not raw:
        raise ConfigError("STACK_PATH: required (the directory in the repository that holds the stacks; '.' for the root)")
    paths: list[PurePosixPath] = []
    for item in re.split(r"[\s,]+", raw):
        if not item:
            continue
        path = PurePosixPath(item.strip("/") or ".")
        if ".." in path.parts:
            raise ConfigError(f"STACK_PATH: must be a path inside the repository, got {item!r}")
        if path not in paths:
            paths.append(path)
    for path in paths:
        for other in paths:
            if path != other and (str(other) == "." or path.is_relative_to(other)):
                raise ConfigError(f"STACK_PATH: {path} lies inside {other}; name directories that do not contain each other")
    return tuple(paths)


def _state_dir(environ: Mapping[str, str]) -> Path:
    # systemd's StateDirectory= sets a colon-separated list; the first entry is ours.
    raw = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(raw) if raw else DEFAULT_STATE_DIR


def _runtime_dir(environ: Mapping[str, str]) -> Path:
    raw = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(raw) if raw else DEFAULT_RUNTIME_DIR


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> Config:
    environ = os.environ if environ is None else environ
    settings = load_settings(config_file, environ, overrides or {})

    repo_url, url_user, url_password = _repo_url(settings)
    branch = settings.get("GIT_BRANCH", "").strip() or "main"
    if not BRANCH_PATTERN.match(branch):
        raise ConfigError(f"GIT_BRANCH: not a valid branch name: {branch!r}")

    ssh_key = settings.get("GIT_SSH_KEY_PATH", "").strip()
    if ssh_key and not Path(ssh_key).is_file() and not settings.get("GIT_DEPLOY_KEY_SECRET_REF"):
        raise ConfigError(f"GIT_SSH_KEY_PATH: {ssh_key} is not a readable file")

    state_dir = _state_dir(environ)
    clone_raw = settings.get("GIT_CLONE_PATH", "").strip()
    clone_path = Path(clone_raw) if clone_raw else state_dir / "repo"
    if not clone_path.is_absolute():
        raise ConfigError(f"GIT_CLONE_PATH: must be an absolute path, got {clone_raw!r}")

    stack_config_file = settings.get("CONFIG_FILE", "").strip() or "stack.yml"
    if PurePosixPath(stack_config_file).is_absolute() or ".." in PurePosixPath(stack_config_file).parts:
        raise ConfigError(f"CONFIG_FILE: must be a file name relative to STACK_PATH, got {stack_config_file!r}")

    token = settings.get("GIT_TOKEN", "").strip() or url_password
    https_username = settings.get("GIT_USERNAME", "").strip() or url_user
    trigger_raw = settings.get("TRIGGER_DIR", "").strip()
    credentials = _credentials(settings, token, https_username, url_password)
    masker = Masker(credentials, min_length=integer(settings, "MASK_MIN_LENGTH", MIN_MASKED_LENGTH, minimum=1, maximum=64))
    named = {key: settings.get(key, "").strip() for key in secrets.credential_keys() | {"GIT_TOKEN"}}
    local_env_raw = settings.get("LOCAL_ENV_DIR", "").strip()
    if local_env_raw and not Path(local_env_raw).is_absolute():
        raise ConfigError(f"LOCAL_ENV_DIR: must be an absolute path, got {local_env_raw!r}")
    named["the password in GIT_REPO_URL"] = url_password or ""
    for name, value in sorted(named.items()):
        if masker.too_short(value):
            log.warning("%s is shorter than MASK_MIN_LENGTH (%d characters): used, but not masked", name, masker.min_length)

    config = Config(
        repo_url=repo_url,
        branch=branch,
        stack_paths=_stack_paths(settings),
        clone_path=clone_path,
        stack_config_file=stack_config_file,
        ssh_key_path=Path(ssh_key) if ssh_key else None,
        ssh_known_hosts=Path(settings.get("GIT_SSH_KNOWN_HOSTS", "").strip() or DEFAULT_KNOWN_HOSTS),
        ssh_host_key_checking=choice(settings, "GIT_SSH_HOST_KEY_CHECKING", HOST_KEY_CHECKING, "yes"),
        https_username=https_username,
        https_token=token or None,
        remove_orphans=boolean(settings, "REMOVE_ORPHANS", True),
        allow_prune_all=boolean(settings, "ALLOW_PRUNE_ALL", False),
        lock_timeout=seconds(settings, "LOCK_TIMEOUT", 600.0, maximum=MAX_TIMEOUT),
        # 0 would make every deploy time out at once.
        deploy_timeout=seconds(settings, "DEPLOY_TIMEOUT", 600.0, allow_zero=False, maximum=MAX_TIMEOUT),
        deploy_jobs=integer(settings, "DEPLOY_JOBS", default_deploy_jobs(), minimum=1, maximum=MAX_DEPLOY_JOBS),
        retry_failed_max=seconds(settings, "RETRY_FAILED_MAX", 3600.0, maximum=7 * 86400),
        health_timeout=seconds(settings, "HEALTH_TIMEOUT", 120.0, allow_zero=False, maximum=3600),
        health_stable=seconds(settings, "HEALTH_STABLE", 10.0, maximum=3600),
        rollback=boolean(settings, "ROLLBACK", True),
        heal_max_attempts=integer(settings, "HEAL_MAX_ATTEMPTS", 3, minimum=0, maximum=100),
        image_updates=choice(settings, "IMAGE_UPDATES", ("off", "notify", "apply"), "notify"),
        backend=choice(settings, "BACKEND", BACKENDS, "compose"),
        reporting=_reporting(settings, state_dir, masker),
        **_verification(settings),
        log_level=choice(settings, "LOG_LEVEL", LOG_LEVELS, "INFO"),
        log_format=choice(settings, "LOG_FORMAT", LOG_FORMATS, "text"),
        state_dir=state_dir,
        runtime_dir=_runtime_dir(environ),
        trigger_dir=Path(trigger_raw) if trigger_raw else None,
        result_dir=_absolute(settings, "TRIGGER_RESULT_DIR") or trigger.DEFAULT_RESULT_DIR,
        local_env_dir=Path(local_env_raw) if local_env_raw else DEFAULT_LOCAL_ENV_DIR,
        settings=settings,
        credentials=credentials,
        masker=masker,
        # Built now, so its settings are validated before anything is touched.
        secrets_provider=secrets.provider_from_settings(settings, masker),
        sops_identities=load_identities(settings, environ, masker),
    )
    return config


def _absolute(settings: Mapping[str, str], key: str) -> Path | None:
    raw = settings.get(key, "").strip()
    if raw and not Path(raw).is_absolute():
        raise ConfigError(f"{key}: must be an absolute path, got {raw!r}")
    return Path(raw) if raw else None


def _verification(settings: Mapping[str, str]) -> dict[str, Any]:
    """VERIFY_SIGNATURES, VERIFY_TAG_PATTERN and the trusted keys (ALLOWED_SIGNERS, VERIFY_KEYRING):
    checked now, so that a sync that is to verify never runs without a key to verify with."""
    from composeflux import signatures

    mode = choice(settings, "VERIFY_SIGNATURES", ("off", "commit", "tag"), "off")
    pattern = settings.get("VERIFY_TAG_PATTERN", "").strip() or "*"
    if pattern.startswith(("/", "refs/", "-")):
        raise ConfigError(f"VERIFY_TAG_PATTERN: a glob of tag names such as v*, not {pattern!r}")
    try:
        trust = signatures.default_trust(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if mode != "off" and trust.empty:
        raise ConfigError(
            f"VERIFY_SIGNATURES={mode} needs trusted keys: neither ALLOWED_SIGNERS ({signatures.DEFAULT_ALLOWED_SIGNERS}) "
            f"nor VERIFY_KEYRING ({signatures.DEFAULT_KEYRING}) exists"
        )
    return {"verify_signatures": mode, "verify_tag_pattern": pattern, "trust": trust}


def _notify_urls(settings: Mapping[str, str]) -> tuple[str, ...]:
    """NOTIFY_URLS: apprise URLs separated by blanks; apprise must be there to use them."""
    from composeflux.notifications import apprise_missing

    urls = tuple(settings.get("NOTIFY_URLS", "").split())
    for index, url in enumerate(urls, 1):
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
            raise ConfigError(f"NOTIFY_URLS: entry #{index} is not a URL (apprise URLs look like ntfy://host/topic, mailto://...)")
    if urls and apprise_missing():
        raise ConfigError("NOTIFY_URLS is set, but apprise is not installed: `apt install apprise` (or empty NOTIFY_URLS)")
    return urls


def _notify_events(settings: Mapping[str, str]) -> frozenset[Kind]:
    """NOTIFY_EVENTS: event names (events.Kind) separated by blanks or commas, or `all`."""
    raw = settings.get("NOTIFY_EVENTS", "").strip()
    if not raw:
        return DEFAULT_NOTIFY
    names = {name.lower() for name in re.split(r"[\s,]+", raw) if name}
    if names == {"all"}:
        return frozenset(Kind)
    known = {kind.value: kind for kind in Kind}
    unknown = sorted(names - set(known))
    if unknown:
        raise ConfigError(f"NOTIFY_EVENTS: unknown event(s) {', '.join(unknown)}; known: all, {', '.join(known)}")
    return frozenset(known[name] for name in names)


def _metrics_textfile(settings: Mapping[str, str]) -> Path | None:
    from composeflux import metrics

    raw = settings.get("METRICS_TEXTFILE", "").strip()
    if not raw:
        return metrics.default_path()
    if raw.lower() == "off":
        return None
    path = Path(raw)
    if not path.is_absolute() or path.suffix != ".prom":
        raise ConfigError(
            f"METRICS_TEXTFILE: must be an absolute path ending in .prom (node_exporter reads only those), or off; got {raw!r}"
        )
    return path


def default_deploy_jobs() -> int:
    """DEPLOY_JOBS when unset: twice the CPUs, from 2 to 8. A deploy mostly waits (for dockerd,
    a pull, a health gate), but each `docker compose` also takes a CPU for a moment: on 2 cores
    4 at a time came closest to the floor (bench/compare.py --jobs)."""
    return min(8, max(2, 2 * len(os.sched_getaffinity(0))))


def load_identities(settings: Mapping[str, str], environ: Mapping[str, str], masker: Masker) -> Identities:
    """The host's age identities, as `sops` finds them: SOPS_AGE_KEY and SOPS_AGE_KEY_FILE; when
    neither is set, $CREDENTIALS_DIRECTORY/sops-age-key, else /etc/composeflux/age.key. None of
    them is fine until a stack has a SOPS file. ConfigError for a key file others may read or
    one that is not an age identity file."""
    from composeflux import sops  # its YAML readers are not needed for --version or status

    texts: list[tuple[str, str]] = []
    if settings.get("SOPS_AGE_KEY", "").strip():
        texts.append(("SOPS_AGE_KEY", settings["SOPS_AGE_KEY"]))
    explicit = settings.get("SOPS_AGE_KEY_FILE", "").strip()
    if explicit:
        texts.append((f"SOPS_AGE_KEY_FILE {explicit}", _read_private(Path(explicit), "SOPS_AGE_KEY_FILE")))
    if not texts:
        credentials = environ.get("CREDENTIALS_DIRECTORY", "")
        candidates = ([Path(credentials, AGE_KEY_CREDENTIAL)] if credentials else []) + [DEFAULT_AGE_KEY_FILE]
        for candidate in candidates:
            if os.path.lexists(candidate):
                texts.append((str(candidate), _read_private(candidate, str(candidate))))
                break
    identities = []
    for origin, text in texts:
        masker.add(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        try:
            identities += sops.parse_age_identities(text)
        except sops.SopsError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    gnupg_home = settings.get("GNUPGHOME", "").strip() or None
    return sops.Identities(age=tuple(identities), gnupg_home=gnupg_home)


def _read_private(path: Path, setting: str) -> str:
    """A private key file's text (private.py), or ConfigError naming the setting."""
    try:
        return read_private(path).decode("utf-8", errors="replace")
    except PrivateFileError as exc:
        raise ConfigError(f"{setting}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _credentials(settings: Mapping[str, str], token: str | None, user: str | None, url_password: str | None) -> frozenset[str]:
    values = {settings.get(key, "").strip() for key in secrets.credential_keys() | CORE_CREDENTIALS}
    from composeflux.notifications import url_parts

    for url in settings.get("NOTIFY_URLS", "").split():
        values |= url_parts(url)
    values |= {token or "", url_password or "", settings.get("GIT_TOKEN", "").strip()}
    values.add(urllib.parse.urlsplit(settings.get("GIT_REPO_URL", "").strip()).password or "")  # as written
    if token:
        # What git sends (http.extraHeader): a log of the request would show this form.
        values.add(base64.b64encode(f"{user or DEFAULT_HTTPS_USER}:{token}".encode()).decode())
    return frozenset(value for value in values if value)
