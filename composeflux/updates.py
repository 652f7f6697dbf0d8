"""`composeflux update`: new images behind the same tag, found without pulling, and reported.

    lock → what the engine runs (this instance's stacks, not suspended) → each service's image
    reference and the digests its local image was pulled as (RepoDigests) → one HEAD per
    distinct reference (registry.py) → per service: up to date, update available, unknown (why),
    skipped (why) → log, state (`composeflux status STACK`), and the plan on stdout for --dry-run

The policy is IMAGE_UPDATES (off, notify or apply), per stack `image_updates` in stack.yml, per
service the label `composeflux.image-updates`; the narrowest one set wins. notify records what it
finds for the operator; apply then has a sync (sync.Options.pull) pull the new images and recreate
just those services, health-gated, rolled back to the old image IDs on failure (that digest is then
remembered and not applied again). The sync itself never asks a registry anything.

`check()` is the pure part: the engine's and the registries' answers in, a verdict per service out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from composeflux import alerts, events, reporting, state
from composeflux.config import Config
from composeflux.deployed import RunningImage
from composeflux.errors import ComposefluxError, ConfigError, ExitStatus, exit_status, state_error
from composeflux.lock import sync_lock
from composeflux.logs import ACTION, STACK
from composeflux.registry import Reference, Registry, Remote, local_digests, parse_reference

if TYPE_CHECKING:
    from composeflux.sync import Tools

log = logging.getLogger(__name__)

POLICIES = ("off", "notify", "apply")
LABEL = "composeflux.image-updates"
DOCKER_CONFIG_DIR = "docker"  # $STATE_DIRECTORY/docker/config.json: the service user's `docker login`


class Verdict(str, enum.Enum):  # noqa: UP042 -- as plan.Action: .value is the word
    CURRENT = "up to date"
    AVAILABLE = "update available"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


@dataclasses.dataclass(frozen=True)
class ServiceCheck:
    stack: str
    service: str
    image: str
    verdict: Verdict
    detail: str = ""  # the digests, or why unknown or skipped
    digest: str | None = None  # AVAILABLE: the registry's digest for the tag now

    def line(self) -> str:
        return f"{self.verdict.value:<16}  {self.stack}/{self.service}  {self.image}  {self.detail}".rstrip()


def policy(default: str, stack_policy: str | None, labels: Mapping[str, str]) -> str:
    """The narrowest policy set: the service's label, the stack's stack.yml setting, IMAGE_UPDATES."""
    label = labels.get(LABEL, "").strip().lower()
    if label:
        return label if label in POLICIES else f"invalid label {LABEL}={label!r}"
    return stack_policy or default


def references(running: Iterable[RunningImage], policies: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], Reference | str]:
    """Each service's reference to ask the registry about, or why it is not asked."""
    result: dict[tuple[str, str], Reference | str] = {}
    for item in running:
        key = (item.stack, item.service)
        chosen = policies.get(key, "notify")
        if chosen not in ("notify", "apply"):
            result[key] = f"policy {chosen}" if chosen == "off" else chosen
            continue
        try:
            reference = parse_reference(item.image)
        except ValueError:
            result[key] = "not a registry reference (an image ID, or built locally)"
            continue
        if reference.pinned:
            result[key] = "pinned by digest"
        elif not local_digests(item.repo_digests, reference):
            result[key] = "no registry digest for it locally (built here, or not pulled from that registry)"
        else:
            result[key] = reference
    return result


def check(running: Iterable[RunningImage], asked: Mapping[tuple[str, str], Reference | str],
          remotes: Mapping[Reference, Remote]) -> list[ServiceCheck]:
    """The verdict for each service: pure."""
    checks = []
    for item in sorted(running, key=lambda i: (i.stack, i.service)):
        target = asked[(item.stack, item.service)]
        if isinstance(target, str):
            checks.append(ServiceCheck(item.stack, item.service, item.image, Verdict.SKIPPED, target))
            continue
        remote = remotes.get(target)
        if remote is None or remote.digest is None:
            problem = remote.problem if remote else "not asked"
            checks.append(ServiceCheck(item.stack, item.service, item.image, Verdict.UNKNOWN, problem or "no digest"))
            continue
        have = local_digests(item.repo_digests, target)
        if remote.digest in have:
            checks.append(ServiceCheck(item.stack, item.service, item.image, Verdict.CURRENT, remote.digest[:19]))
        else:
            local = ", ".join(sorted(d[:19] for d in have))
            checks.append(ServiceCheck(
                item.stack, item.service, item.image, Verdict.AVAILABLE, f"{local} → {remote.digest[:19]}", remote.digest
            ))
    return checks


def summary(checks: list[ServiceCheck]) -> str:
    counts = {verdict: sum(1 for c in checks if c.verdict is verdict) for verdict in Verdict}
    return "image updates: " + ", ".join(f"{n} {verdict.value}" for verdict, n in counts.items())


@dataclasses.dataclass(frozen=True)
class UpdateTools:
    """The engine boundary of an update run (tests pass fakes)."""

    running_images: Callable[[str], list[RunningImage]]  # instance id -> what its stacks run
    insecure_registries: Callable[[], list[str]]  # dockerd's insecure-registries (CIDRs and names)


def default_tools() -> UpdateTools:
    from composeflux import engine  # the Docker SDK: only when an update runs

    return UpdateTools(engine.running_images, engine.insecure_registries)


def run(config: Config, *, dry_run: bool = False, stacks: Iterable[str] = (), tools: UpdateTools | None = None,
        registry: Registry | None = None, out: TextIO | None = None, sync_tools: Tools | None = None) -> ExitStatus:
    """One update check; the result is logged, recorded in the state (not for a dry run), and
    printed for a dry run; the updates whose policy is apply are then applied by a sync. Exit 0
    unless the check could not be made or an applied update failed (the sync's status)."""
    out = out or sys.stdout
    started = time.monotonic()
    if config.backend == "swarm":
        log.error("Image updates are not available with BACKEND=swarm: `docker service update --image` updates a service; "
                  "a new tag in Git deploys it")
        return ExitStatus.CONFIG
    try:
        with sync_lock(config.state_dir, config.lock_timeout, record_pid=not dry_run):
            previous = state.read(config.state_dir) if dry_run else state.load(config.state_dir)
            try:
                apply = _check(config, previous, dry_run, set(stacks), tools, registry, out, started)
            except (ComposefluxError, OSError) as exc:
                if not dry_run and not isinstance(exc, OSError):  # the metrics show a check that could not be made
                    message = config.masker(str(exc))
                    failed = state.record_update_check(
                        previous, {}, result="error", status=int(exit_status(exc)), summary=f"failed: {message}",
                        duration=time.monotonic() - started, invocation=os.environ.get("INVOCATION_ID"),
                    )
                    with contextlib.suppress(OSError):
                        reporting.finish(config.reporting, failed, [], {alerts.DIED["update"]: None})
                raise
    except (ComposefluxError, OSError) as exc:
        message = config.masker(str(exc) if not isinstance(exc, OSError) else str(state_error(config.state_dir, exc)))
        log.error("Update check failed: %s", message)
        return exit_status(exc) if isinstance(exc, ComposefluxError) else ExitStatus.STATE
    if not apply:
        return ExitStatus.OK
    if dry_run:
        for name, services in sorted(apply.items()):
            print(f"would apply       {name}: {', '.join(sorted(services))} (IMAGE_UPDATES=apply)", file=out)
        return ExitStatus.OK
    # Applying is a sync (it takes the lock again): the stacks are deployed at the revision they
    # run, the new images pulled, each stack through its health gate, rolled back to the old image
    # IDs if it fails. It also deploys whatever Git changed since the last sync, as any sync would.
    from composeflux import sync

    log.info("Applying image updates: %s", "; ".join(f"{n}: {', '.join(sorted(s))}" for n, s in sorted(apply.items())))
    return sync.run(config, sync.Options(pull=apply), tools=sync_tools)


def _check(config: Config, previous: state.State, dry_run: bool, wanted: set[str], tools: UpdateTools | None,
           registry: Registry | None, out: TextIO, started: float) -> dict[str, dict[str, str]]:
    """The check itself, under the lock: logged, recorded (printed for a dry run); what to apply."""
    apply: dict[str, dict[str, str]] = {}
    tools = tools or default_tools()
    running = [
        item for item in tools.running_images(config.instance_id)
        if (not wanted or item.stack in wanted) and previous.stacks.get(item.stack, state.StackRecord()).suspended is None
    ]
    for name in sorted(wanted - {item.stack for item in running}):
        log.warning("%s: no running stack of that name (or it is suspended); nothing to check", name)
    stack_policies = _stack_policies(config)
    policies = {
        (item.stack, item.service): policy(config.image_updates, stack_policies.get(item.stack), item.labels) for item in running
    }
    asked = references(running, policies)
    registry = registry or Registry(
        Path(os.environ.get("DOCKER_CONFIG") or config.state_dir / DOCKER_CONFIG_DIR),
        insecure=["127.0.0.0/8", *tools.insecure_registries()],
    )
    remotes = registry.check({target for target in asked.values() if isinstance(target, Reference)})
    checks = [_known_bad(item, previous) for item in check(running, asked, remotes)]
    for item in checks:
        if item.verdict is Verdict.AVAILABLE and item.digest and policies[(item.stack, item.service)] == "apply":
            apply.setdefault(item.stack, {})[item.service] = item.digest
    for item in checks:
        level = logging.WARNING if item.verdict in (Verdict.AVAILABLE, Verdict.UNKNOWN) else logging.INFO
        log.log(level, "%s/%s %s: %s %s", item.stack, item.service, item.image, item.verdict.value, item.detail,
                extra={STACK: item.stack, ACTION: "update"})
    log.info("%s (%d registry request(s))", summary(checks), registry.requests_made)
    if dry_run:
        for item in checks:
            print(config.masker(item.line()), file=out)
    else:
        _record(config, previous, checks, time.monotonic() - started)
    return apply


def _known_bad(item: ServiceCheck, previous: state.State) -> ServiceCheck:
    """An update to a digest that failed its health gate when it was applied is not offered again."""
    bad = previous.stacks.get(item.stack, state.StackRecord()).bad_images.get(item.service)
    if item.verdict is Verdict.AVAILABLE and item.digest is not None and item.digest == bad:
        detail = f"{item.digest[:19]} failed its health gate when it was applied (rolled back); waiting for a newer one"
        return dataclasses.replace(item, verdict=Verdict.SKIPPED, detail=detail)
    return item


def _stack_policies(config: Config) -> dict[str, str]:
    """stack.yml `image_updates` per stack, from the checkout the last sync left (no fetch)."""
    from composeflux.stacks import discover

    present = [path for path in config.stack_paths if (config.clone_path / path).is_dir()]
    if not present:
        return {}
    try:
        discovery = discover(config.clone_path, present, config.stack_config_file)
    except ConfigError as exc:
        log.warning("stack.yml cannot be read (%s); IMAGE_UPDATES applies to every stack", exc)
        return {}
    return {name: s.image_updates for name, s in discovery.stack_config.stacks.items() if s.image_updates}


def _record(config: Config, previous: state.State, checks: list[ServiceCheck], duration: float) -> None:
    """Each checked stack's available updates, in its state record (`composeflux status STACK`);
    those not known before are told (UPDATE_PENDING, when NOTIFY_EVENTS has it)."""
    found: dict[str, dict[str, state.ImageUpdate]] = {}
    for item in checks:
        if item.verdict is Verdict.AVAILABLE and item.digest:
            known = previous.stacks.get(item.stack, state.StackRecord()).updates.get(item.service)
            since = known.since if known and known.digest == item.digest else state.now()
            found.setdefault(item.stack, {})[item.service] = state.ImageUpdate(item.image, item.digest, since)
    checked = {item.stack for item in checks}
    updates = {name: found.get(name, {}) for name in checked}
    next_state = state.record_update_check(
        previous, updates, result="ok", status=0, summary=summary(checks), duration=duration, invocation=os.environ.get("INVOCATION_ID"),
    )
    reporting.finish(config.reporting, next_state, events.of_update(previous, updates), {alerts.DIED["update"]: None})
