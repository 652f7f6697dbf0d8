"""Docker Swarm (BACKEND=swarm): what a rendered Compose project becomes for `docker stack
deploy`, and the `docker stack` command line itself (the only place that runs it).

Compose still decides Compose semantics: the project is rendered by `docker compose config`
as with the Compose backend (interpolation, include, extends, env_file, profiles), hashed the
same way, and only then turned into a stack file here (`stack_file`), a pure function:

  - The keys `docker stack deploy` does not take are left out and named (`Translation.ignored`:
    "services.web.build"), so that the plan can say so before anything is touched. Keys Swarm
    cannot do without (a service with no image, `volumes_from`, `network_mode: service:...`)
    make the stack fail instead (`SwarmFileError`).
  - Swarm configs and secrets are immutable. Each one the project defines (not `external`) is
    created by composeflux itself (engine.create_swarm_objects), under a name suffixed with a
    keyed hash of its content (`<stack>_<key>-<12 hex>`), and the stack file refers to it as
    external: a changed file or value is a new name, so the services using it are updated to
    it; unused old versions that carry this instance's labels are removed after the deploy
    (engine.remove_unused_swarm_objects). Secret values from the secrets providers and from
    SOPS files (`environment:` secrets) go to the engine in the request body only: never on
    disk, in an argument or a label.
  - composeflux's labels go on each service (`deploy.labels`: the service's own, which is what
    the plan compares), on its containers (`labels`), and on the networks, configs and secrets.

The stack file goes to `docker stack deploy --compose-file -` on stdin, with `--prune` (services
no longer in the file are removed) and `--with-registry-auth` (the manager's registry logins go
to the nodes that pull); composeflux then waits for the updated services to converge itself,
over the Engine API (`convergence`), which works with every docker CLI (Debian 12's 20.10 has no
`--detach=false`).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from composeflux.compose import PASSTHROUGH, Result, run_docker
from composeflux.deployed import INSTANCE, MANAGED_BY, MANAGED_BY_VALUE
from composeflux.rendered import JSON

STACK_NAMESPACE = "com.docker.stack.namespace"  # Docker's own label on a stack's services, networks, configs, secrets
LABEL_PREFIX = "compose.stack."  # composeflux's labels (deployed.py)
OBJECT_KEY = "compose.stack.object"  # on a config or secret composeflux created: its key in the compose file
STACK_FILE_VERSION = "3.9"  # the newest file format Debian 12's docker CLI (20.10) reads; 26 reads it too
MAX_OBJECT_SIZE = 500 * 1024  # bytes: Swarm's limit for one config or secret
SWARM_TIMEOUT = 60.0  # seconds for `docker stack rm` (it only asks; the removal goes on in the engine)

# Service keys `docker stack deploy` takes (the 3.9 file format) and uses on Swarm.
SERVICE_KEYS = frozenset({
    "cap_add", "cap_drop", "command", "configs", "credential_spec", "deploy", "dns", "dns_search", "entrypoint",
    "environment", "extra_hosts", "healthcheck", "hostname", "image", "init", "isolation", "labels", "logging", "networks",
    "ports", "read_only", "secrets", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "stdin_open", "ulimits",
    "user", "volumes", "working_dir",
})
# Keys Compose's render holds that are no news to anybody: the values are already elsewhere in it.
SILENT = frozenset({"env_file", "profiles", "expose", "pull_policy"})
# Keys that Swarm cannot do without: the stack fails, with the reason.
REQUIRED_MISSING = {
    "volumes_from": "Swarm services cannot share another service's volumes (volumes_from); use a named volume",
}
DEPLOY_KEYS = frozenset({
    "mode", "replicas", "labels", "update_config", "rollback_config", "resources", "restart_policy", "placement",
    "endpoint_mode",
})
UPDATE_KEYS = frozenset({"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"})
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period", "disable"})
PORT_KEYS = frozenset({"mode", "target", "published", "protocol"})
VOLUME_MOUNT_KEYS = frozenset({"type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"})
NETWORK_KEYS = frozenset({"name", "driver", "driver_opts", "external", "ipam", "internal", "attachable", "labels"})
VOLUME_KEYS = frozenset({"name", "driver", "driver_opts", "external", "labels"})
OBJECT_REFERENCE_KEYS = frozenset({"source", "target", "uid", "gid", "mode"})


class SwarmFileError(Exception):
    """The project cannot become a Swarm stack; the message says what in it (no values)."""


@dataclasses.dataclass(frozen=True)
class SwarmObject:
    """A config or secret composeflux creates before the deploy (immutable, so named by content)."""

    kind: str  # "configs" or "secrets"
    key: str  # its key in the compose file
    name: str  # <stack>_<key>-<keyed hash of the content, 12 hex>
    data: bytes = dataclasses.field(repr=False)  # the content: a secret value, for the request body only
    labels: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Translation:
    file: dict[str, JSON] = dataclasses.field(repr=False)  # the stack file (holds interpolated values)
    objects: tuple[SwarmObject, ...]
    ignored: tuple[str, ...]  # "services.web.build": what `docker stack deploy` would not do


def object_labels(stack: str, instance_id: str, key: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: instance_id, STACK_NAMESPACE: stack, OBJECT_KEY: key}


def stack_file(
    stack: str,
    project: Mapping[str, JSON],
    instance_id: str,
    env: Mapping[str, str],
    digest: Callable[[bytes], str],
    default_rollback: bool = False,
    read: Callable[[Path], bytes] | None = None,
) -> Translation:
    """The stack file for `project` (rendered and labelled), and the configs and secrets to
    create first. `env`: the variables `docker compose up` would get (`environment:` secrets
    take their values from it); `digest(content)`: the run's keyed hash (hex) of a content.
    `default_rollback`: a service whose update_config does not say what to do when an update
    fails gets `failure_action: rollback` (ROLLBACK=true: Swarm puts back the previous version).
    `read(path)`: the content of a file the project names (at most MAX_OBJECT_SIZE + 1 bytes;
    OSError), where it is now (the project names where it will be: the stack's tree).
    SwarmFileError when it cannot be one."""
    ignored: list[str] = []
    objects: list[SwarmObject] = []
    out: dict[str, JSON] = {"version": STACK_FILE_VERSION}
    for key in sorted(project):
        if key not in ("services", "networks", "volumes", "configs", "secrets", "name") and not key.startswith("x-"):
            ignored.append(key)
    services: dict[str, JSON] = {}
    for name, service in sorted((project.get("services") or {}).items()):
        services[name] = _service(name, service, ignored, default_rollback)
    out["services"] = services
    networks = {}
    for key, network in sorted((project.get("networks") or {}).items()):
        network = dict(network or {})
        kept = _only(network, NETWORK_KEYS, f"networks.{key}", ignored, silent={"enable_ipv6"} if not network.get("enable_ipv6") else set())
        if not kept.get("external"):
            kept["labels"] = {**_mapping(kept.get("labels")), MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: instance_id}
            if kept.get("name") == f"{stack}_{key}":
                del kept["name"]  # Compose's default name, which Swarm gives it too
        networks[key] = kept
    if networks:
        out["networks"] = networks
    volumes = {
        key: _only(dict(volume or {}), VOLUME_KEYS, f"volumes.{key}", ignored) for key, volume in (project.get("volumes") or {}).items()
    }
    for key, volume in volumes.items():
        if not volume.get("external") and volume.get("name") == f"{stack}_{key}":
            del volume["name"]
    if volumes:
        out["volumes"] = volumes
    for kind in ("configs", "secrets"):
        definitions = {}
        for key, definition in sorted((project.get(kind) or {}).items()):
            definition = definition or {}
            if definition.get("external"):
                definitions[key] = {"external": True, "name": str(definition.get("name") or key)}
                continue
            data = _content(kind, key, definition, env, read or read_file)
            name = f"{stack}_{key}-{digest(data)[:12]}"
            objects.append(SwarmObject(kind, key, name, data, object_labels(stack, instance_id, key)))
            definitions[key] = {"external": True, "name": name}
            for extra in sorted(set(definition) - {"file", "content", "environment", "name", "external", "labels"}):
                if not extra.startswith("x-"):
                    ignored.append(f"{kind}.{key}.{extra}")
        if definitions:
            out[kind] = definitions
    return Translation(out, tuple(objects), tuple(dict.fromkeys(ignored)))


def _service(name: str, service: Mapping[str, JSON], ignored: list[str], default_rollback: bool) -> dict[str, JSON]:
    where = f"services.{name}"
    for key, why in REQUIRED_MISSING.items():
        if service.get(key):
            raise SwarmFileError(f"{where}: {why}")
    mode = service.get("network_mode")
    if isinstance(mode, str) and mode.startswith(("service:", "container:")):
        raise SwarmFileError(f"{where}: network_mode {mode} joins another container's network, which Swarm services cannot")
    if not service.get("image"):
        raise SwarmFileError(f"{where}: has no image (Swarm does not build: build it elsewhere, push it, and name it in `image:`)")
    out = {}
    for key, value in service.items():
        if value is None:
            continue  # Compose renders `command: null` and the like; the stack file takes no null there
        if key in SERVICE_KEYS:
            out[key] = copy.deepcopy(value)
        elif key == "depends_on":
            named = {str(v.get("condition")) for v in (value or {}).values() if isinstance(v, dict)}
            conditions = sorted(named - {"service_started"})
            if conditions:
                ignored.append(f"{where}.depends_on (condition {', '.join(conditions)}: Swarm starts services in no order)")
        elif key not in SILENT and not key.startswith("x-"):
            ignored.append(f"{where}.{key}")
    if "deploy" in out:
        out["deploy"] = _deploy(out["deploy"] or {}, f"{where}.deploy", ignored)
    # composeflux's labels (apply.labelled_project put them on the containers) on the service too:
    # the service's own labels are what engine.read_swarm_state reads and the plan compares.
    ours = {k: v for k, v in _mapping(out.get("labels")).items() if k.startswith(LABEL_PREFIX)}
    if ours:
        deploy = out.setdefault("deploy", {})
        deploy["labels"] = {**{k: v for k, v in _mapping(deploy.get("labels")).items() if not k.startswith(LABEL_PREFIX)}, **ours}
    if default_rollback:
        update = out.setdefault("deploy", {}).setdefault("update_config", {})
        update.setdefault("failure_action", "rollback")
    if "healthcheck" in out:
        out["healthcheck"] = _only(out["healthcheck"] or {}, HEALTHCHECK_KEYS, f"{where}.healthcheck", ignored)
    if "ports" in out:
        out["ports"] = [_port(port, f"{where}.ports", ignored) for port in out["ports"] or []]
    if "volumes" in out:
        out["volumes"] = [_mount(volume, f"{where}.volumes", ignored) for volume in out["volumes"] or []]
    for kind in ("configs", "secrets"):
        if kind in out:
            out[kind] = [
                _only(dict(reference), OBJECT_REFERENCE_KEYS, f"{where}.{kind}", ignored) if isinstance(reference, dict) else reference
                for reference in out[kind] or []
            ]
            for reference in out[kind]:
                if isinstance(reference, dict) and isinstance(reference.get("mode"), str):
                    reference["mode"] = int(reference["mode"], 8)
    if isinstance(out.get("networks"), dict):
        out["networks"] = {
            key: _only(dict(value), frozenset({"aliases", "ipv4_address", "ipv6_address"}), f"{where}.networks.{key}", ignored,
                       silent={"priority"})
            if isinstance(value, dict) else value
            for key, value in out["networks"].items()
        }
    return out


def _deploy(deploy: Mapping[str, JSON], where: str, ignored: list[str]) -> dict[str, JSON]:
    out = _only(dict(deploy), DEPLOY_KEYS, where, ignored)
    for key in ("update_config", "rollback_config"):
        if isinstance(out.get(key), dict):
            out[key] = _only(out[key], UPDATE_KEYS, f"{where}.{key}", ignored)
    resources = out.get("resources")
    if isinstance(resources, dict):
        for part in ("limits", "reservations"):
            for field, value in list((resources.get(part) or {}).items()):
                if field in ("cpus", "memory") and isinstance(value, (int, float)):
                    resources[part][field] = str(value)  # Compose renders numbers, the stack file wants strings
    return out


def _port(port: JSON, where: str, ignored: list[str]) -> JSON:
    if not isinstance(port, dict):
        return port
    out = _only(dict(port), PORT_KEYS, where, ignored, silent={"app_protocol", "name"})
    published = out.get("published")
    if isinstance(published, str):
        if not published.isdigit():
            raise SwarmFileError(f"{where}: the published port range {published} cannot be deployed to Swarm; name each port")
        out["published"] = int(published)
    return out


def _mount(volume: JSON, where: str, ignored: list[str]) -> JSON:
    if not isinstance(volume, dict):
        return volume
    out = _only(dict(volume), VOLUME_MOUNT_KEYS, where, ignored)
    if isinstance(out.get("bind"), dict):
        out["bind"] = {k: v for k, v in out["bind"].items() if k == "propagation"}  # create_host_path: Compose's own
        if not out["bind"]:
            del out["bind"]
    if out.get("type") == "bind":
        ignored.append(f"{where} (bind mount of {out.get('source')}: it must exist on every node the service runs on)")
    return out


def _only(
    value: dict[str, JSON], allowed: frozenset[str], where: str, ignored: list[str], silent: set[str] | frozenset[str] = frozenset()
) -> dict[str, JSON]:
    for key in sorted(set(value) - allowed):
        if key not in silent and not key.startswith("x-"):
            ignored.append(f"{where}.{key}")
    return {key: value[key] for key in value if key in allowed}


def _mapping(labels: JSON) -> dict[str, str]:
    if isinstance(labels, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in labels)
    return {str(k): str(v) for k, v in (labels or {}).items()}


def read_file(path: Path) -> bytes:
    """At most MAX_OBJECT_SIZE + 1 bytes of a file (one more tells it is too large); OSError."""
    with path.open("rb") as handle:
        return bytes(handle.read(MAX_OBJECT_SIZE + 1))


def _content(kind: str, key: str, definition: Mapping[str, JSON], env: Mapping[str, str], read: Callable[[Path], bytes]) -> bytes:
    """A config's or secret's content: its file (in the stack's tree), inline `content:`, or the
    value of its `environment:` variable (a secret from the provider or a SOPS file)."""
    where = f"{kind}.{key}"
    if isinstance(definition.get("content"), str):
        data = str(definition["content"]).replace("$$", "$").encode()  # Compose's render escapes $ as $$
    elif isinstance(definition.get("environment"), str):
        variable = definition["environment"]
        if variable not in env:
            raise SwarmFileError(f"{where}: the variable {variable} it takes its value from is not set")
        data = str(env[variable]).encode()
    elif isinstance(definition.get("file"), str):
        path = Path(definition["file"])
        try:
            data = read(path)
        except OSError as exc:
            raise SwarmFileError(f"{where}: cannot read {path.name}: {exc.strerror}") from None
    else:
        raise SwarmFileError(f"{where}: has no file, content or environment to take its value from")
    if len(data) > MAX_OBJECT_SIZE:
        raise SwarmFileError(f"{where}: larger than Swarm's limit of {MAX_OBJECT_SIZE // 1024} KiB")
    if not data:
        raise SwarmFileError(f"{where}: is empty (Swarm takes no empty {kind[:-1]})")
    return data


def encoded(data: bytes) -> str:
    """A config's or secret's content as the Engine API takes it (base64)."""
    return base64.b64encode(data).decode()


class Stack:
    """`docker stack deploy` and `docker stack rm`, with the same minimal environment as
    `docker compose` (compose.PASSTHROUGH): the stack file on stdin, nothing on disk."""

    def __init__(self, docker: str, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.docker = docker
        self.env = {key: environ[key] for key in PASSTHROUGH if key in environ}

    def deploy(self, name: str, file: Mapping[str, JSON], timeout: float) -> Result:
        arguments = ["stack", "deploy", "--compose-file", "-", "--prune", "--with-registry-auth", "--resolve-image", "changed", name]
        return self._run(arguments, timeout, json.dumps(file))

    def remove(self, name: str, timeout: float = SWARM_TIMEOUT) -> Result:
        return self._run(["stack", "rm", name], timeout)

    def _run(self, arguments: list[str], timeout: float, stdin: str | None = None) -> Result:
        return run_docker([self.docker, *arguments], self.env, "/", timeout, "docker stack", arguments[1], stdin)


# -- convergence: the Swarm counterpart of the health gate ----------------------------------------

FAILED_TASK_STATES = frozenset({"failed", "rejected", "orphaned"})


@dataclasses.dataclass(frozen=True)
class ServiceView:
    """One service of a stack as the Engine API shows it, with its tasks (engine.read_swarm_stack)."""

    name: str  # its key in the stack file
    service: dict[str, JSON] = dataclasses.field(repr=False)  # GET /services/{id} (with ServiceStatus)
    tasks: tuple[dict[str, JSON], ...] = dataclasses.field(repr=False)  # GET /tasks for it


@dataclasses.dataclass(frozen=True)
class Convergence:
    ok: bool
    reason: str  # "" when ok; else why, naming the services
    rolled_back: dict[str, str]  # service -> Swarm's message, for the services Swarm rolled back
    waited: float


def progress(view: ServiceView, since: str) -> tuple[str, str]:
    """Where one service's update stands: ("done" | "waiting" | "failed" | "rolled back", why).
    `since`: when the deploy started (an RFC 3339 time, as the engine writes them): task
    failures before it are not this deploy's."""
    update = view.service.get("UpdateStatus") or {}
    if _instant(update.get("StartedAt")) < _instant(since):
        update = {}  # an earlier deploy's update (a rollback stays on record until the next one)
    state, message = str(update.get("State") or ""), str(update.get("Message") or "")
    failures = [
        task for task in view.tasks
        if (task.get("Status") or {}).get("State") in FAILED_TASK_STATES
        and _instant((task.get("Status") or {}).get("Timestamp")) >= _instant(since)
    ]
    last_error = str((failures[-1].get("Status") or {}).get("Err") or "") if failures else ""
    if state == "rollback_completed":
        return "rolled back", (message or "rollback completed") + (f" after a task failed: {last_error}" if last_error else "")
    if state in ("paused", "rollback_paused"):
        failed = f" (a task failed: {last_error})" if last_error else ""
        return "failed", f"update {state.replace('_', ' ')}: {message}".rstrip(": ") + failed
    if state in ("updating", "rollback_started"):
        return "waiting", f"{state.replace('_', ' ')}" + (f" (a task failed: {last_error})" if last_error else "")
    status = view.service.get("ServiceStatus") or {}
    mode = (view.service.get("Spec") or {}).get("Mode") or {}
    desired = int(status.get("DesiredTasks") or 0)
    if "ReplicatedJob" in mode or "GlobalJob" in mode:
        completed = int(status.get("CompletedTasks") or 0)
        if desired == 0 or completed >= desired:
            return "done", ""
        return "waiting", f"{completed} of {desired} job task(s) completed" + (f"; a task failed: {last_error}" if last_error else "")
    running = sum(
        1 for task in view.tasks if task.get("DesiredState") == "running" and (task.get("Status") or {}).get("State") == "running"
    )
    if running >= desired:
        return "done", ""
    starting = sum(
        1 for task in view.tasks if task.get("DesiredState") == "running" and (task.get("Status") or {}).get("State") == "starting"
    )
    why = f"{running} of {desired} task(s) running" + (f", {starting} starting (health check)" if starting else "")
    return "waiting", why + (f"; a task failed: {last_error}" if last_error else "")


def _instant(value: JSON) -> str:
    """An engine time (RFC 3339 in UTC, 0 to 9 digits of fraction: "2026-12-02T17:31:32.6681Z")
    as a string that sorts as the time does (the fraction padded to 9 digits)."""
    text = str(value or "")
    base, _, rest = text.partition(".")
    if not rest:
        return text.removesuffix("Z") + ".000000000"
    digits = "".join(c for c in rest if c.isdigit())
    return f"{base}.{digits[:9]:0<9}"


def converge(
    read: Callable[[], list[ServiceView]],
    watch: frozenset[str] | set[str],
    since: str,
    timeout: float,
    stable: float,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    status: Callable[[str], None] = lambda text: None,
    interval: float = 1.0,
) -> Convergence:
    """Wait for the services in `watch` (keys in the stack file) to converge within `timeout`
    seconds: every task running (healthy, where a healthcheck exists: Swarm reports such a task
    "starting" until it passes), a job's tasks completed, no update in progress; then to stay so
    for `stable` seconds. A service Swarm rolled back (update_config.failure_action: rollback)
    ends the wait at once, as does an update Swarm paused. `read` is called every `interval`
    seconds; a service it no longer returns counts as failed."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    start = clock()
    done_since: float | None = None
    last = ""
    while True:
        views = {view.name: view for view in read()}
        states = {}
        for name in sorted(watch):
            states[name] = progress(views[name], since) if name in views else ("failed", "the service is gone")
        rolled = {name: why for name, (state, why) in states.items() if state == "rolled back"}
        failed = {name: why for name, (state, why) in states.items() if state == "failed"}
        if rolled or failed:
            reason = "; ".join(f"{name}: {why}" for name, why in {**failed, **rolled}.items())
            return Convergence(False, reason, rolled, clock() - start)
        waiting = {name: why for name, (state, why) in states.items() if state == "waiting"}
        now = clock()
        if not waiting:
            done_since = now if done_since is None else done_since
            if now - done_since >= stable:
                return Convergence(True, "", {}, now - start)
            line = f"{len(watch)} service(s) converged, staying so for {stable:g} s"
        else:
            done_since = None
            if now - start >= timeout:
                reason = "; ".join(f"{name}: {why}" for name, why in waiting.items())
                return Convergence(False, f"not converged within {timeout:g} s ({reason})", {}, now - start)
            line = f"{len(watch) - len(waiting)} of {len(watch)} service(s) converged"
        if line != last:
            status(line)
            last = line
        sleep(interval)
