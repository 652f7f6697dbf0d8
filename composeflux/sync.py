"""One complete sync, and the only place that runs one: `run(config, options) -> ExitStatus`.

    drain trigger requests → lock → secrets → engine state → Git → discovery → render and hash
    → plan → (dry run: print it) → apply → state file → summary line and sd_notify

Everything that can fail for the whole sync (secrets, Git, an unsafe prune, the engine) fails
before the first container is touched. After that, each stack succeeds or fails alone; an
error that still stops the run (the engine going away) is reported with what was already done.
Exceptions become exit statuses in one place (`errors.exit_status`), here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath
from typing import TextIO

from composeflux import alerts, events, reporting, state, swarm, trigger
from composeflux.apply import Applier, ApplyError, check_result, labelled_project, log_output
from composeflux.checkout import Checkout, TreeRevision
from composeflux.compose import Compose, engine_unreachable
from composeflux.config import Config
from composeflux.deployed import COMMIT, IMAGE_REFERENCE, EngineState
from composeflux.environment import LocalEnvError, StackEnvironment, read_dotenv, read_local_env, stack_environment
from composeflux.errors import (
    ComposefluxError,
    ConfigError,
    EngineError,
    ExitStatus,
    GitSourceError,
    UnsafePruneError,
    UnverifiedError,
    exit_status,
    state_error,
)
from composeflux.gitsource import GitSource, deploy_key
from composeflux.health import ContainerHealth, GateResult, gate
from composeflux.lock import sync_lock
from composeflux.logs import ACTION, STACK, CommitField
from composeflux.outcome import FAILURES, StackOutcome, SyncOutcome
from composeflux.plan import IMAGE_UPDATE, Action, Plan, StackPlan, make_plan, network_order, schedule
from composeflux.preflight import EngineFacts, Provided, check
from composeflux.render import Renderer, RenderError, load_hash_key
from composeflux.render_cache import RenderCache
from composeflux.rendered import JSON, RenderedStack, StackHashes, StackProblem
from composeflux.sdnotify import Notifier
from composeflux.secrets import Scopes, split_scopes
from composeflux.sopsfiles import Decryptor, SopsFileError
from composeflux.stacks import PROJECT_NAME, Discovery, Stack, StackConfig, StackSettings, discover, project_name
from composeflux.trees import TREES_DIR, GitObjects, StackTrees, export, migrate_checkout, overlay

log = logging.getLogger(__name__)

# Plan reasons (plan.compare) of a stack at the revision Git wants whose containers are broken.
HEALING = ("missing from Docker", "not running", "unhealthy")
RECHECK = "not checked yet"


class _Progress:
    """sd_notify STATUS while a sync's changes run side by side: how many have started of how
    many, and what each running one is doing ("deploying 12/50: web, db (health gate: 1 of 2
    up)"). Called from the deploy threads."""

    def __init__(self, notify: Callable[[str], None], total: int) -> None:
        self.notify, self.total, self.started = notify, total, 0
        self.running: dict[str, tuple[Action, str]] = {}
        self.lock = threading.Lock()

    def start(self, name: str, action: Action) -> None:
        with self.lock:
            self.started += 1
            self.running[name] = (action, "")
            self._show()

    def detail(self, name: str, text: str) -> None:
        with self.lock:
            if name in self.running:
                self.running[name] = (self.running[name][0], text)
                self._show()

    def finish(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)

    def _show(self) -> None:
        actions = {action for action, _ in self.running.values()}
        verb = "deploying" if Action.DEPLOY in actions or not actions else "rolling back" if Action.ROLLED_BACK in actions else "pruning"
        names = ", ".join(f"{name} ({text})" if text else name for name, (_, text) in self.running.items())
        self.notify(f"{verb} {self.started}/{self.total}: {names}")


class _PendingMarks:
    """state.mark_pending for the deploy threads, as a group commit: the marks asked for while
    another thread writes the state file go out together in the next write (one load, one
    fsync'd save for all of them), and each caller returns only once its own mark is on disk,
    or raises the OSError that kept it off. A state file write costs ~20 ms (fsyncs): with
    DEPLOY_JOBS threads asking at once, one after the other would make them queue for it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.guard = threading.Lock()  # over `queued` and `failed`
        self.writing = threading.Lock()  # one writer at a time
        self.queued: dict[str, tuple[str | None, str | None]] = {}
        self.failed: dict[str, OSError] = {}

    def mark(self, name: str, commit: str | None, digest: str | None) -> None:
        with self.guard:
            self.queued[name] = (commit, digest)
        with self.writing:
            with self.guard:
                batch, self.queued = self.queued, {}
                failed = self.failed.pop(name, None)
            if batch:
                try:
                    state.mark_pending_many(self.state_dir, batch)
                except OSError as exc:
                    with self.guard:
                        self.failed.update(dict.fromkeys(set(batch) - {name}, exc))
                    failed = exc
        if failed is not None:
            raise failed


class RollbackError(Exception):
    """The last good revision could not be put back; the message says why (masked)."""


@dataclasses.dataclass(frozen=True)
class _RollbackInputs:
    """What a rollback renders with: this sync's trees, hash key, secrets, decryptor and stack.yml."""

    trees: StackTrees
    hash_key: bytes = dataclasses.field(repr=False)
    scopes: Scopes = dataclasses.field(repr=False)
    decryptor: Decryptor
    stack_config: StackConfig


@dataclasses.dataclass(frozen=True)
class Options:
    dry_run: bool = False  # decided here only: print the plan, change nothing
    allow_prune_all: bool = False
    retry_failed: bool = False  # try failed stacks now, whatever their backoff
    adopt: frozenset[str] = frozenset()  # Compose projects deployed by something else, to take over
    retry: frozenset[str] = frozenset()  # stacks to try now whatever failed before (`--retry STACK`)
    # `composeflux update`, IMAGE_UPDATES=apply: stack -> {service: the registry's new digest} to
    # pull and recreate now, through the health gate (rolled back to the old image ID if it fails).
    pull: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Tools:
    """The boundaries a sync talks to besides Git and the file system. Tests pass fakes."""

    compose: Compose
    read_engine: Callable[[str], EngineState]
    claim: Callable[[str, str], str | None]  # (project, instance) -> who else holds the name, or None
    release: Callable[[str, str], None]
    read_facts: Callable[[], EngineFacts]  # for the checks before `up`
    inspect: Callable[[str], list[ContainerHealth]]  # a project's containers, inspected (health gate)
    # Restart containers in place (healing unhealthy ones) -> what failed; None: not possible here.
    restart: Callable[[list[str]], list[str]] | None = None
    # Remove images no container uses any more (after an image update) -> those removed.
    remove_images: Callable[[list[str]], list[str]] | None = None
    swarm: SwarmTools | None = None  # BACKEND=swarm: stacks go to `docker stack deploy` instead of `up`


@dataclasses.dataclass(frozen=True)
class SwarmTools:
    """What BACKEND=swarm deploys with besides the render (swarm.py, engine.py)."""

    stack: swarm.Stack
    read_stack: Callable[[str], list[swarm.ServiceView]]
    create_objects: Callable[[tuple[swarm.SwarmObject, ...]], list[str]]
    remove_unused_objects: Callable[[str, str, set[str]], list[str]]
    rollback: Callable[[list[str]], list[str]]  # service IDs -> what failed (`docker service rollback`)
    engine_time: Callable[[], str]
    # (instance, this host's key, whether to store it in the swarm when it has none) -> the swarm's key
    hash_key: Callable[[str, bytes, bool], bytes]
    role: Callable[[], tuple[str, str]]  # this engine's place in the swarm, and the leader's host name


def default_tools(backend: str = "compose") -> Tools:
    from composeflux import engine  # only when a sync runs

    compose = Compose()
    if backend == "swarm":
        tools = SwarmTools(
            swarm.Stack(compose.docker), engine.read_swarm_stack, engine.create_swarm_objects, engine.remove_unused_swarm_objects,
            engine.rollback_services, engine.engine_time, engine.swarm_hash_key, engine.swarm_role,
        )
        return Tools(
            compose, engine.read_swarm_state, engine.claim_stack, engine.release_stack, engine.read_facts, engine.inspect_project,
            swarm=tools,
        )
    return Tools(
        compose, engine.read_state, engine.claim, engine.release, engine.read_facts, engine.inspect_project, engine.restart_containers,
        engine.remove_unused_images,
    )


def _not_the_leader(config: Config, options: Options, tools: Tools | None) -> bool:
    """BACKEND=swarm: whether this manager leaves the sync to the swarm's leader (the timer may
    run on every manager; only the leader changes anything). A dry run goes ahead on any
    manager: it changes nothing. A node that is no manager at all cannot sync: EngineError."""
    if config.backend != "swarm":
        return False
    if tools is not None and tools.swarm is not None:
        role, leader = tools.swarm.role()
    else:
        from composeflux import engine

        role, leader = engine.swarm_role()
    if role in ("inactive", "worker"):
        what = "not part of a swarm" if role == "inactive" else "a swarm worker"
        raise EngineError(f"BACKEND=swarm, but this Docker engine is {what}: run composeflux on a swarm manager")
    if role == "manager" and not options.dry_run:
        log.info("Not the leader of the swarm (the leader is %s): nothing to do here", leader or "being elected")
        return True
    return False


def run(
    config: Config,
    options: Options,
    *,
    tools: Tools | None = None,
    out: TextIO | None = None,
    commit_field: CommitField | None = None,
) -> ExitStatus:
    """Run one sync and report it (log, sd_notify, state file; the plan on `out` for a dry run)."""
    notify = Notifier(config.masker)
    began = time.time()  # before the drain: a request made from now on is answered by this sync
    if not options.dry_run:
        _drain_trigger_requests(config)
    try:
        if _not_the_leader(config, options, tools):
            notify("not the leader of the swarm")
            return ExitStatus.OK
        with sync_lock(config.state_dir, config.lock_timeout, record_pid=not options.dry_run):
            started = time.monotonic()
            # A dry run only reads the state; a real sync sets a damaged file aside.
            previous = state.read(config.state_dir) if options.dry_run else state.load(config.state_dir)
            outcome = _Run(config, options, tools, notify, commit_field or CommitField(), previous).outcome()
            duration = time.monotonic() - started
            saved = not options.dry_run and _save_state(config, previous, outcome, duration)
            if not options.dry_run and not saved and outcome.status < ExitStatus.USAGE:
                # The sync itself went well, but nothing records it: say so with the status.
                outcome = dataclasses.replace(outcome, status=ExitStatus.STATE)
    except ComposefluxError as exc:  # the lock (another sync is running), or no swarm manager: this one did nothing
        message = config.masker(str(exc))
        log.error("Sync not started: %s", message)
        notify(f"not started: {message}")
        if not options.dry_run:  # whoever waits for it hears at once, not at their timeout
            _publish(config, SyncOutcome(exit_status(exc), error=message), began)
        return exit_status(exc)
    # A sync that failed as a whole has had its summary logged already, as its event (MESSAGE_ID).
    _report(outcome, config, notify, out or sys.stdout, logged=saved and outcome.error is not None)
    if not options.dry_run:
        _publish(config, outcome, began)
    return outcome.status


def _publish(config: Config, outcome: SyncOutcome, began: float) -> None:
    """The result for whoever waits for the sync they asked for (the webhook's `?wait=1`), in
    TRIGGER_RESULT_DIR when it exists; not being able to is a warning, never a failed sync."""
    result = {
        "started": began, "finished": time.time(), "status": int(outcome.status), "result": outcome.result,
        "summary": config.masker(outcome.summary()), "failed": {name: config.masker(why) for name, why in outcome.failed.items()},
    }
    try:
        trigger.publish_result(config.result_dir, result)
    except trigger.TriggerError as exc:
        log.warning("%s", exc)


def _drain_trigger_requests(config: Config) -> None:
    """Empty the trigger spool before fetching: requests from now on start another sync
    (composeflux.path). Under systemd the unit's ExecStartPre has already done it."""
    try:
        drained = trigger.drain_requests(config.trigger_dir or trigger.DEFAULT_TRIGGER_DIR)
    except trigger.TriggerError as exc:
        log.warning("Trigger spool: %s", exc)
        return
    if drained:
        log.debug("This sync answers %d trigger request(s)", drained)


def _save_state(config: Config, previous: state.State, outcome: SyncOutcome, duration: float) -> bool:
    """Record the sync, then tell the operator what it means (reporting.py)."""
    try:
        next_state = state.record(
            previous, outcome, branch=config.branch, repository=config.repo_url, retry_max=config.retry_failed_max,
            duration=duration, invocation=os.environ.get("INVOCATION_ID"),
        )
        known, gone = alerts.conditions(outcome)
        gone |= {f"stack/{name}" for name in previous.stacks if name not in next_state.stacks}  # forgotten: no word
        reporting.finish(
            config.reporting, next_state, events.of_sync(previous, outcome), known, gone=gone,
            commit=outcome.commit, subject=outcome.subject,
        )
    except OSError as exc:
        log.error("Cannot record this sync: %s", state_error(config.state_dir / state.STATE_FILE, exc))
        return False
    return True


def _report(outcome: SyncOutcome, config: Config, notify: Notifier, out: TextIO, logged: bool = False) -> None:
    if outcome.dry_run and outcome.plan is not None:
        for line in outcome.plan.lines():
            print(config.masker(line), file=out)
    summary = config.masker(outcome.summary())
    if outcome.error is not None:
        if not logged:
            log.error("%s", summary[:1].upper() + summary[1:])
    else:
        log.info("%s", summary)
    notify(summary)


class _Run:
    """The steps of one sync. Keeps what it has done so far, so that an error that stops the
    run midway is reported with the stacks already deployed or pruned."""

    def __init__(
        self, config: Config, options: Options, tools: Tools | None, notify: Notifier, commit_field: CommitField, previous: state.State
    ) -> None:
        self.config = config
        self.previous = previous
        self.options = options
        self.allow_prune_all = options.allow_prune_all or config.allow_prune_all
        self.tools = tools
        self.tools_in_use: Tools  # set once the run starts (the default ones load the Docker SDK)
        self.notify = notify
        self.commit_field = commit_field
        self.checkout: Checkout | None = None
        self.plan: Plan | None = None
        self.done: list[StackOutcome] = []
        self.started = state.now()
        self.failed_inputs: dict[str, str] = {}  # stack -> what failed to render ("render:<key>")
        self.held: set[str] = set()  # stacks not tried this time (failure backoff)
        self.reported: set[str] = set()  # stacks whose failure is in the log already (each once)
        self.facts: EngineFacts | None = None  # read at the first deploy (after the prunes)
        self.rollback_inputs: _RollbackInputs | None = None  # set once the stacks are discovered
        self.provided = Provided()
        # The deploy threads (DEPLOY_JOBS) share the engine facts, what the stacks deployed so
        # far provide, the render cache and `done`: all of them are changed only under this
        # lock (the state file's pending marks under their own, _PendingMarks).
        self.shared = threading.RLock()
        self.progress: _Progress | None = None
        self.pending = _PendingMarks(config.state_dir)

    def outcome(self) -> SyncOutcome:
        try:
            with contextlib.ExitStack() as cleanup:
                return self._steps(cleanup)
        except Exception as exc:  # mapped to an exit status here, and only here
            status = exit_status(exc)
            if status is ExitStatus.INTERNAL:
                # A bug: say so loudly, with the traceback (the log handler masks it).
                log.exception("Internal error")
                message = self.config.masker(f"internal error ({type(exc).__name__}: {exc}); please report it with the log")
            else:
                message = self.config.masker(str(exc))
            refused = exc.commit if isinstance(exc, UnverifiedError) else None
            return SyncOutcome(
                status,
                self._stacks_so_far(),
                self.checkout.commit if self.checkout else refused,
                self.config.masker(self.checkout.subject) if self.checkout else None,
                error=message,
                plan=self.plan,
                dry_run=self.options.dry_run,
            )

    def _stacks_so_far(self) -> tuple[StackOutcome, ...]:
        """Done ones as they went; the rest of the plan as planned, deploys and prunes skipped."""
        if self.plan is None:
            return ()
        done = {stack.name: stack for stack in self.done}
        result = []
        for planned in self.plan.stacks:
            if planned.name in done:
                result.append(done[planned.name])
            elif planned.action in (Action.DEPLOY, Action.PRUNE, Action.ROLLED_BACK):
                result.append(StackOutcome(planned.name, Action.SKIPPED, planned.reason, planned.stack_hash))
            else:
                result.append(self._planned_outcome(planned))
        return tuple(result)

    def _images_pulled(self, exc: Exception, project: dict[str, JSON] | None) -> str:
        """For a failed pull, which images it was about: Compose's error often names only the
        registry ("Get https://registry-1.docker.io/v2/: ... no such host")."""
        if not isinstance(exc, ApplyError) or project is None or self.facts is None:
            return ""
        text = str(exc).lower()
        if not any(word in text for word in ("pull", "registry", "manifest")):
            return ""
        services = project.get("services") or {}
        missing = sorted(
            {s["image"] for s in services.values() if isinstance(s, dict) and isinstance(s.get("image"), str)}
            - set(self.facts.images)
        )
        return f" (pulling {', '.join(missing)})" if missing else ""

    def _preflight(self, name: str, project: dict[str, JSON]) -> list[str]:
        """The checks before `up` (preflight.py), against the engine as it is after the prunes
        of this sync (they come first) and what the stacks deployed before this one create."""
        with self.shared:  # read once, and checked one stack at a time: two must not both take a port
            if self.facts is None:
                pruned = {p.name for p in self.plan.stacks if p.action is Action.PRUNE} if self.plan else set()
                facts = self.tools_in_use.read_facts()
                self.facts = dataclasses.replace(
                    facts,
                    container_names={n: p for n, p in facts.container_names.items() if p not in pruned},
                    ports={k: p for k, p in facts.ports.items() if p not in pruned},
                )
            return check(name, project, self.facts, self.provided)

    def _preflight_plan(
        self, plan: Plan, discovery: Discovery, renderers: dict[str, Renderer], rendered: dict[str, RenderedStack]
    ) -> Plan:
        """A dry run's plan with the checks a real deploy would make: what would fail, fails."""
        stacks = {stack.name: stack for stack in discovery.stacks}
        checked = []
        for planned in plan.stacks:
            if planned.action is Action.DEPLOY:
                try:
                    fresh = rendered.get(planned.name) or renderers[planned.name].render(stacks[planned.name])
                except RenderError as exc:
                    problems = [self._short_paths(str(exc))]
                else:
                    if self.tools_in_use.swarm is not None:
                        planned, problems = self._swarm_check(planned, fresh, renderers[planned.name].env)
                    else:
                        problems = self._preflight(planned.name, fresh.project)
                if problems:
                    planned = dataclasses.replace(planned, action=Action.FAILED, reason="cannot come up: " + "; ".join(problems))
            checked.append(planned)
        return dataclasses.replace(plan, stacks=tuple(checked))

    def _planned_outcome(self, planned: StackPlan, commit: str | None = None) -> StackOutcome:
        """What happened to a stack the plan left alone: unchanged, kept, or failed before any
        change (render, a name taken, backoff)."""
        if planned.action is not Action.FAILED:
            return StackOutcome(planned.name, planned.action, planned.reason, planned.stack_hash, commit=commit)
        return StackOutcome(
            planned.name, Action.FAILED, planned.reason, planned.stack_hash, commit=commit, error=planned.reason,
            inputs=self.failed_inputs.get(planned.name), held=planned.name in self.held,
        )

    def _holding(self, name: str, kind: str) -> str | None:
        """The inputs of `kind` (render, deploy) this stack is not retried with now, or None."""
        if self.options.retry_failed or self.config.retry_failed_max <= 0:
            return None
        inputs = state.held_back(self.previous.stacks.get(name), self.started)
        return inputs.partition(":")[2] if inputs and inputs.startswith(f"{kind}:") else None

    def _why_held(self, name: str) -> str:
        record = self.previous.stacks[name]
        return (
            f"{record.last_error} (failed {record.consecutive_failures} time(s) with these inputs; tried again after "
            f"{record.retry_after}, when they change, or with `composeflux sync --retry-failed`)"
        )

    def _steps(self, cleanup: contextlib.ExitStack) -> SyncOutcome:
        config = self.config
        tools = self.tools_in_use = self.tools or default_tools(config.backend)
        self.notify("fetching secrets")
        provider = config.secrets_provider
        secret_values = provider.fetch()
        config.masker.add(secret_values.values())
        scopes = split_scopes(secret_values)
        log.log(
            logging.DEBUG if provider.name == "none" else logging.INFO,
            "Secrets provider %s returned %d value(s)", provider.name, len(secret_values),
        )
        short = sorted(name for name, value in secret_values.items() if config.masker.too_short(value))
        if short:
            log.warning(
                "Secret(s) %s shorter than MASK_MIN_LENGTH (%d characters): used, but not masked in the log",
                ", ".join(short), config.masker.min_length,
            )

        compose_version = tools.compose.version(cache=config.state_dir)
        engine = tools.read_engine(config.instance_id)

        self.notify("fetching Git")
        trees = StackTrees(config.state_dir.resolve(), GitObjects(config.clone_path))
        with deploy_key(config) as key:
            source = GitSource(config, key)
            if self.options.dry_run:
                checkout = self._scratch_checkout(source.fetch(), trees, cleanup)
            else:
                checkout = source.sync(migrate=lambda clone: self._migrate(clone, trees))
        self.checkout = checkout
        self.commit_field.commit = checkout.commit
        where = f"tag {checkout.ref.removeprefix('refs/tags/')}" if checkout.ref else f"branch {config.branch}"
        signed = f", signed by {checkout.signer}" if checkout.signer else ""
        log.info("Checked out %s (%s) from %s %s%s", checkout.short_commit, checkout.subject, config.repo_url, where, signed)

        self._overlay(checkout, trees)
        discovery = self._discover(checkout, engine)
        stack_config = discovery.stack_config
        decryptor = Decryptor(config.sops_identities, config.masker)
        discovery, environments = self._environments(discovery, checkout, scopes, decryptor)
        hash_key = load_hash_key(config.state_dir)
        if tools.swarm is not None:
            hash_key = tools.swarm.hash_key(config.instance_id, hash_key, not self.options.dry_run)
        self.rollback_inputs = _RollbackInputs(trees, hash_key, scopes, decryptor, stack_config)
        renderers = {
            name: Renderer(tools.compose, checkout, hash_key, environment.env, config.masker, tree_root=trees.path, decryptor=decryptor)
            for name, environment in environments.items()
        }
        shared = Renderer(tools.compose, checkout, hash_key, stack_config.envs, config.masker, tree_root=trees.path)
        cache = RenderCache(config.state_dir, shared, compose_version)

        self.notify("rendering")
        desired, rendered = self._render_all(discovery, renderers, environments, cache)
        desired = network_order(desired, stack_config.startup_order)
        held, rejected = {}, {}
        for item in desired:
            if not isinstance(item, StackHashes):
                continue
            waiting = self._holding(item.name, "deploy")
            if waiting is not None:
                held[item.name] = (waiting, self._why_held(item.name))
            why = self._rejected(item)
            if why is not None:
                held[item.name] = rejected[item.name] = (item.stack_hash, why)
        suspended = self._suspended(discovery)
        self.plan = plan = make_plan(
            desired, engine.managed, engine.others, config.remove_orphans, self.allow_prune_all, held, self.options.adopt, suspended
        )
        plan = self._limit_healing(self._recheck_pending(self._keep_rejected(self._image_updates(plan), rejected), engine))
        self.plan = plan = self._heal_rolled_back(plan, rejected, engine)
        for name in sorted(self.options.adopt - {p.name for p in plan.stacks if p.reason.startswith("adopting")}):
            log.warning("--adopt %s: no stack of that name was deployed by something else; nothing to adopt", name)
        self.held |= {p.name for p in plan.stacks if p.name in held and p.action is Action.FAILED}
        if self.options.dry_run:
            self.plan = plan = self._preflight_plan(plan, discovery, renderers, rendered)
            cache.save()  # hashes only: the next dry run, and the real sync, need not render again
            return SyncOutcome(
                ExitStatus.STACKS_FAILED if plan.with_action(Action.FAILED) or plan.with_action(Action.ROLLED_BACK) else ExitStatus.OK,
                self._stacks_so_far(),
                checkout.commit,
                config.masker(checkout.subject),
                plan=plan,
                dry_run=True,
                signer=checkout.signer,
            )

        applier = Applier(tools.compose, config.masker, config.remove_orphans, config.deploy_timeout)
        stacks = {stack.name: stack for stack in discovery.stacks}

        def change(planned: StackPlan) -> StackOutcome:
            if planned.action is Action.DEPLOY:
                stack = stacks[planned.name]
                return self._deploy(planned, stack, rendered, renderers[stack.name], cache, applier, engine, checkout, trees)
            if planned.action is Action.PRUNE:
                return self._prune(planned, applier, trees)
            return self._heal_rollback(planned, stacks[planned.name], applier)

        waits = schedule(plan, desired, stack_config.startup_order)
        for planned in plan.stacks:
            if planned.name not in waits:
                self.done.append(self._untouched(planned, engine))
        self._apply(plan, waits, change)
        cache.save()
        order = {planned.name: index for index, planned in enumerate(plan.stacks)}
        done = tuple(sorted(self.done, key=lambda stack: order.get(stack.name, len(order))))
        failed = any(stack.action in FAILURES for stack in done)
        status = ExitStatus.STACKS_FAILED if failed else ExitStatus.OK
        return SyncOutcome(status, done, checkout.commit, config.masker(checkout.subject), signer=checkout.signer)

    def _apply(self, plan: Plan, waits: Mapping[str, frozenset[str]], change: Callable[[StackPlan], StackOutcome]) -> None:
        """Run the plan's changes (deploys, prunes, rollbacks), DEPLOY_JOBS at a time, each once
        every stack it waits for (plan.schedule) has finished, however that went: a stack whose
        network's creator failed meets the preflight check, not a hang. An error that stops the
        run (the engine gone) starts nothing more; the changes already running finish (a
        `docker compose up` is not interrupted halfway), then it is raised. With DEPLOY_JOBS=1
        the changes run one by one in the plan's order, as they always did."""
        planned = {stack.name: stack for stack in plan.stacks if stack.name in waits}
        jobs = self.config.deploy_jobs
        self.progress = progress = _Progress(self.notify, len(planned))
        queue = list(planned)  # in the plan's order: with free workers, the earliest ready one goes first
        finished: set[str] = set()
        running: dict[Future[StackOutcome], str] = {}
        stopped: BaseException | None = None

        def one(stack: StackPlan) -> StackOutcome:
            progress.start(stack.name, stack.action)
            try:
                return change(stack)
            finally:
                progress.finish(stack.name)

        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="composeflux-deploy") as pool:
            while queue or running:
                while stopped is None and len(running) < jobs and queue:
                    ready = next((name for name in queue if waits[name] <= finished), None)
                    if ready is None and not running:
                        ready = queue[0]  # never happens (the waits point back in the plan); never a hang either
                    if ready is None:
                        break
                    queue.remove(ready)
                    running[pool.submit(one, planned[ready])] = ready
                if not running:
                    break  # stopped: what is still queued is reported as skipped
                completed, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in completed:
                    finished.add(running.pop(future))
                    try:
                        outcome = future.result()
                    except Exception as exc:  # raised below, once the others are done
                        stopped = stopped or exc
                        continue
                    with self.shared:
                        self.done.append(outcome)
        self.progress = None
        if stopped is not None:
            raise stopped

    def _status(self, name: str, text: str) -> None:
        """What one stack's change is doing now, in sd_notify STATUS."""
        if self.progress is not None:
            self.progress.detail(name, text)
        else:
            self.notify(f"{name}: {text}")

    def _discover(self, checkout: Checkout, engine: EngineState) -> Discovery:
        missing = [path for path in self.config.stack_paths if not (checkout.path / path).is_dir()]
        for path in missing:
            if engine.managed and not self.allow_prune_all:
                raise UnsafePruneError(
                    f"STACK_PATH {path} does not exist in commit {checkout.short_commit}, "
                    f"but {len(engine.managed)} stack(s) are deployed; refusing to remove them. If that is really "
                    "intended, run `composeflux sync --allow-prune-all`"
                )
            log.warning("STACK_PATH %s does not exist in commit %s", path, checkout.short_commit)
        present = [path for path in self.config.stack_paths if path not in missing]
        if not present:
            return Discovery([], [], StackConfig())
        discovery = discover(checkout.path, present, self.config.stack_config_file, checkout.submodules)
        for problem in discovery.problems:
            log.error("%s", problem.reason, extra={STACK: problem.name, ACTION: "failed"})
            self.reported.add(problem.name)
        return discovery

    def _environments(
        self, discovery: Discovery, checkout: Checkout, scopes: Scopes, decryptor: Decryptor
    ) -> tuple[Discovery, dict[str, StackEnvironment]]:
        """Each stack's interpolation environment (environment.py). A stack whose SOPS .env
        cannot be decrypted, or whose host-local env file is refused, fails alone."""
        stack_config = discovery.stack_config
        names = {stack.name for stack in discovery.stacks} | {problem.name for problem in discovery.problems}
        for name in sorted(set(scopes.stacks) - names):
            log.warning("The secrets provider has secrets scoped to %s, but no stack of that name exists", name)
        local_dir = self.config.local_env_dir
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(local_dir)):
                if entry.endswith(".env") and entry[: -len(".env")] not in names:
                    log.warning("%s: no stack of that name exists; the file is not used", local_dir / entry)
        environments = {}
        problems = list(discovery.problems)
        stacks = []
        for stack in discovery.stacks:
            try:
                environments[stack.name] = self._stack_environment(stack, checkout.path, stack_config, scopes, decryptor)
            except (SopsFileError, LocalEnvError) as exc:
                message = self.config.masker(str(exc))
                log.error("%s", message, extra={STACK: stack.name, ACTION: "failed"})
                self.reported.add(stack.name)
                problems.append(StackProblem(stack.name, message))
                continue
            stacks.append(stack)
        return dataclasses.replace(discovery, stacks=stacks, problems=problems), environments

    def _stack_environment(
        self, stack: Stack, root: Path, stack_config: StackConfig, scopes: Scopes, decryptor: Decryptor
    ) -> StackEnvironment:
        """One stack's layers (environment.py), its SOPS .env decrypted and the host-local env
        file read; `root`: the checkout it lies in. SopsFileError, LocalEnvError."""
        provided = decryptor.dotenv(stack.directory, root)
        provided.update(read_local_env(self.config.local_env_dir, stack.name))
        return stack_environment(
            stack_config.envs, read_dotenv(stack.directory / ".env"), stack_config.settings(stack.name).envs,
            scopes.shared, scopes.stacks.get(stack.name), provided,
        )

    def _render_all(
        self, discovery: Discovery, renderers: dict[str, Renderer], environments: dict[str, StackEnvironment], cache: RenderCache
    ) -> tuple[list[StackHashes | StackProblem], dict[str, RenderedStack]]:
        """Every stack's hashes (from the cache where its inputs are unchanged) or its problem,
        in deploy order; and the stacks that were rendered for real, with their projects. The
        renders themselves (`docker compose config`, ~0.15 s each) run DEPLOY_JOBS at a time;
        what is logged about them comes in the stacks' order."""
        found: dict[str, StackHashes | StackProblem] = {}
        to_render = []
        for stack in discovery.ordered():
            renderer = renderers[stack.name]
            cached = cache.lookup(stack, renderer)
            if cached is not None:
                found[stack.name] = cached
                continue
            key = cache.key(stack, renderer)
            if self._holding(stack.name, "render") == key:
                # It failed to render with exactly these inputs, and rendering is deterministic.
                found[stack.name] = StackProblem(stack.name, self._why_held(stack.name))
                self.held.add(stack.name)
                self.failed_inputs[stack.name] = f"render:{key}"
                continue
            for line in environments[stack.name].shadowed:  # said when it matters: its inputs changed
                log.warning("Variables %s", line, extra={STACK: stack.name})
            to_render.append((stack, key))

        def render(stack: Stack) -> RenderedStack | RenderError:
            try:
                return renderers[stack.name].render(stack)
            except RenderError as exc:
                return exc

        jobs = min(self.config.deploy_jobs, len(to_render))
        if jobs > 1:
            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="composeflux-render") as pool:
                results = list(pool.map(render, [stack for stack, _ in to_render]))
        else:
            results = [render(stack) for stack, _ in to_render]
        rendered: dict[str, RenderedStack] = {}
        for (stack, key), fresh in zip(to_render, results, strict=True):
            if isinstance(fresh, RenderError):
                message = self._short_paths(str(fresh))
                found[stack.name] = StackProblem(stack.name, message)
                self.failed_inputs[stack.name] = f"render:{key}"
                log.error("%s", message, extra={STACK: stack.name, ACTION: "failed"})
                self.reported.add(stack.name)
                continue
            cache.store(stack, fresh.hashes, renderers[stack.name])
            rendered[stack.name] = fresh
            found[stack.name] = fresh.hashes
        desired = [found[stack.name] for stack in discovery.ordered()]
        return desired + list(discovery.problems), rendered

    def _deploy(
        self,
        planned: StackPlan,
        stack: Stack,
        rendered: dict[str, RenderedStack],
        renderer: Renderer,
        cache: RenderCache,
        applier: Applier,
        engine: EngineState,
        checkout: Checkout,
        trees: StackTrees,
    ) -> StackOutcome:
        fields = {STACK: planned.name, ACTION: planned.action.value}
        log.info("Deploying: %s", planned.reason, extra=fields)
        tree: TreeRevision | None = None
        fresh: RenderedStack | None = None
        try:
            fresh = rendered.get(planned.name)
            if fresh is None:  # planned from cached hashes: the project itself is needed now
                fresh = renderer.render(stack)
                with self.shared:
                    cache.store(stack, fresh.hashes, renderer)
                if fresh.hashes.stack_hash != planned.stack_hash:
                    log.warning("The stack rendered differently than when it was planned; deploying the new render", extra=fields)
            if self.tools_in_use.swarm is not None:
                return self._deploy_swarm(planned, stack, fresh, renderer, engine, checkout, trees, self.tools_in_use.swarm)
            problems = self._preflight(planned.name, fresh.project)
            if problems:  # nothing of it is touched; not held back: the engine may change any time
                log.error("Cannot come up: %s", "; ".join(problems), extra={**fields, ACTION: "failed"})
                return StackOutcome(planned.name, Action.FAILED, planned.reason, planned.stack_hash, error="; ".join(problems))
            project = labelled_project(fresh, engine.managed.get(planned.name), checkout.commit, self.config.instance_id, checkout.signer)
            if planned.name not in engine.managed:
                # A first deployment: take the name atomically, or leave it to who has it.
                holder = self.tools_in_use.claim(planned.name, self.config.instance_id)
                if holder is not None:
                    raise ApplyError(f"the Compose project name {planned.name} is {holder}")
            # The stack's own files move to this commit now, and only now (its directory and the
            # tracked files it uses outside it); what is not Git's stays.
            record = self.previous.stacks.get(planned.name)
            wanted = TreeRevision(checkout.commit, (self._relative(checkout, stack), *fresh.hashes.dependencies))
            tree = trees.update(planned.name, wanted, record.tree if record else None).revision
            before = self._containers(planned.name)
            try:
                self.pending.mark(planned.name, checkout.commit, planned.stack_hash)
            except OSError as exc:  # the deploy goes ahead; the end of the run reports the state directory
                log.warning("Cannot note the deploy in the state file (%s): an interrupted sync would not gate it later",
                            exc.strerror, extra=fields)
            healing = planned.reason.startswith(HEALING)
            if healing:
                self._restart_unhealthy(planned.name)
            updating = self.options.pull.get(planned.name, {}) if planned.reason.startswith(IMAGE_UPDATE) else {}
            for service in updating:
                if service in (project.get("services") or {}):
                    project["services"][service]["pull_policy"] = "always"  # the hashes stay: only the image changes
            try:
                applier.deploy(planned.name, renderer.deploy_directory(stack), project, {**renderer.env, **fresh.environment})
            except ApplyError as exc:
                if self._containers(planned.name) == before:
                    raise  # nothing was changed: a plain failure, retried with backoff
                return self._failed_gate(planned, stack, f"docker compose up failed after changing containers: {exc}", tree, applier)
            # A revision an interrupted sync deployed was never gated: all of its containers are
            # watched now, also when this is a heal (one of them died or turned unhealthy since).
            recheck = planned.reason.startswith(RECHECK) or (healing and self._pending(planned))
            verdict, seen = self._gate(planned.name, before, recheck=recheck)
            if not verdict.ok:
                return self._failed_gate(planned, stack, verdict.reason, tree, applier)
        except EngineError as exc:  # the run stops; what this stack's tree now holds is still recorded
            with self.shared:
                self.done.append(StackOutcome(planned.name, Action.FAILED, planned.reason, planned.stack_hash, error=str(exc), tree=tree))
            raise
        except (RenderError, ApplyError, GitSourceError, OSError) as exc:
            message = self.config.masker(str(exc) if not isinstance(exc, OSError) else f"cannot update its files: {exc}")
            message = self._short_paths(message) + self._images_pulled(exc, fresh.project if fresh else None)
            log.error("Deploy failed: %s", message, extra={**fields, ACTION: "failed"})
            return StackOutcome(
                planned.name, Action.FAILED, planned.reason, planned.stack_hash, error=message, tree=tree,
                inputs=f"deploy:{planned.stack_hash}",
            )
        images = self._images(seen)
        if planned.reason.startswith(IMAGE_UPDATE):
            self._remove_replaced_images(planned.name, images)
        return StackOutcome(
            planned.name, Action.DEPLOY, planned.reason, fresh.hashes.stack_hash, fresh.hashes.service_hashes, checkout.commit,
            tree=tree, images=images, healed=planned.reason.startswith(HEALING),
        )

    # -- BACKEND=swarm ---------------------------------------------------------------------------

    def _translate(self, name: str, fresh: RenderedStack, project: dict[str, JSON], env: Mapping[str, str]) -> swarm.Translation:
        """The stack file for `docker stack deploy` (swarm.stack_file); SwarmFileError."""
        key = self.rollback_inputs.hash_key if self.rollback_inputs else b""
        allowed = self._rollback_allowed(name)

        def digest(data: bytes) -> str:
            return hmac.new(key, b"swarm-object\0" + data, hashlib.sha256).hexdigest()

        tree = self.rollback_inputs.trees.path(name) if self.rollback_inputs else None
        checkout = self.checkout

        def read(path: Path) -> bytes:
            """A file of the project from the checkout: its tree gets this commit's files only
            once the stack is deployed (and a dry run never updates it)."""
            if tree is not None and checkout is not None and path.is_relative_to(tree):
                path = checkout.path / path.relative_to(tree)
            return swarm.read_file(path)

        return swarm.stack_file(name, project, self.config.instance_id, env, digest, default_rollback=allowed, read=read)

    def _swarm_check(self, planned: StackPlan, fresh: RenderedStack, env: Mapping[str, str]) -> tuple[StackPlan, list[str]]:
        """A dry run's check of a stack to deploy to Swarm: what cannot be a stack fails it, what
        `docker stack deploy` would ignore is named in its plan line."""
        try:
            translation = self._translate(planned.name, fresh, fresh.project, {**env, **fresh.environment})
        except swarm.SwarmFileError as exc:
            return planned, [self.config.masker(str(exc))]
        if translation.ignored:
            planned = dataclasses.replace(planned, reason=f"{planned.reason}; Swarm ignores {', '.join(translation.ignored)}")
        return planned, []

    def _deploy_swarm(
        self, planned: StackPlan, stack: Stack, fresh: RenderedStack, renderer: Renderer, engine: EngineState, checkout: Checkout,
        trees: StackTrees, tools: SwarmTools,
    ) -> StackOutcome:
        """`docker stack deploy` of one stack, then the wait for its updated services to converge
        (swarm.converge, the Swarm counterpart of the health gate). A service Swarm rolled back
        makes the stack ROLLED_BACK; one that does not converge is rolled back here (`docker
        service rollback`, ROLLBACK permitting), else the stack fails. Either way the revision is
        remembered and not deployed again until Git wants something else."""
        name = planned.name
        fields = {STACK: name, ACTION: planned.action.value}
        deployed = engine.managed.get(name)
        project = labelled_project(fresh, deployed, checkout.commit, self.config.instance_id, checkout.signer)
        try:
            translation = self._translate(name, fresh, project, {**renderer.env, **fresh.environment})
        except swarm.SwarmFileError as exc:
            message = self.config.masker(str(exc))
            log.error("Cannot be deployed to Swarm: %s", message, extra={**fields, ACTION: "failed"})
            return StackOutcome(
                name, Action.FAILED, planned.reason, planned.stack_hash, error=message, inputs=f"deploy:{planned.stack_hash}"
            )
        if translation.ignored:
            log.warning("Swarm ignores %s", ", ".join(translation.ignored), extra=fields)
        if deployed is None:
            holder = self.tools_in_use.claim(name, self.config.instance_id)
            if holder is not None:
                raise ApplyError(f"the stack name {name} is {holder}")
        record = self.previous.stacks.get(name)
        wanted = TreeRevision(checkout.commit, (self._relative(checkout, stack), *fresh.hashes.dependencies))
        tree = trees.update(name, wanted, record.tree if record else None).revision
        try:
            self.pending.mark(name, checkout.commit, planned.stack_hash)
        except OSError as exc:
            log.warning("Cannot note the deploy in the state file (%s): an interrupted sync would not gate it later",
                        exc.strerror, extra=fields)
        running = deployed.services() if deployed else {}
        watch = {
            service for service, digest in fresh.hashes.service_hashes.items()
            if service not in running or any(c.service_hash != digest for c in running[service])
        }
        if planned.reason.startswith((*HEALING, RECHECK)):
            watch = set(fresh.hashes.service_hashes)
        since = tools.engine_time()
        try:
            created = tools.create_objects(translation.objects)
            if created:
                log.info("Created %s", ", ".join(created), extra=fields)
            result = tools.stack.deploy(name, translation.file, self.config.deploy_timeout)
            log_output(name, "deploy", result)
            check_result("docker stack deploy", result, self.config.masker)
        except ApplyError as exc:
            message = self._short_paths(self.config.masker(str(exc)))
            log.error("Deploy failed: %s", message, extra={**fields, ACTION: "failed"})
            return StackOutcome(name, Action.FAILED, planned.reason, planned.stack_hash, error=message, tree=tree,
                                inputs=f"deploy:{planned.stack_hash}")
        verdict = self._converge(name, watch, since)
        healing = planned.reason.startswith(HEALING)
        # A heal redeployed the revision that runs: when it does not converge, that revision is
        # not to blame (a node is down, an image gone) and is neither rolled back nor rejected.
        rejected = None if healing else (checkout.commit, planned.stack_hash or "", verdict.reason)
        if not verdict.ok and not verdict.rolled_back and not healing:
            verdict = self._swarm_rollback(name, watch, verdict) or verdict
        if verdict.rolled_back:
            good = record.good if record else None
            services = ", ".join(sorted(verdict.rolled_back))
            return StackOutcome(
                name, Action.ROLLED_BACK, planned.reason, good.hash if good else None, {}, good.commit if good else None,
                error=self.config.masker(f"rolled back by Swarm (services: {services}): {verdict.reason}"), tree=tree,
                rejected=rejected,
            )
        if not verdict.ok:
            reason = self.config.masker(verdict.reason)
            log.error("Left as it is: %s", reason, extra={**fields, ACTION: "failed"})
            return StackOutcome(name, Action.FAILED, planned.reason, planned.stack_hash, error=f"did not converge: {reason}", tree=tree,
                                rejected=rejected, healed=healing)
        keep = {item.name for item in translation.objects}
        try:
            removed = tools.remove_unused_objects(name, self.config.instance_id, keep)
        except EngineError as exc:  # a cleanup, not the deploy: the sync goes on
            log.warning("%s", exc, extra=fields)
        else:
            if removed:
                log.info("Removed the unused %s", ", ".join(sorted(removed)), extra=fields)
        return StackOutcome(
            name, Action.DEPLOY, planned.reason, fresh.hashes.stack_hash, fresh.hashes.service_hashes, checkout.commit, tree=tree,
            healed=healing,
        )

    def _converge(self, name: str, watch: set[str], since: str) -> swarm.Convergence:
        timeout, stable = self._health_limits(name)
        tools = self.tools_in_use.swarm
        assert tools is not None
        verdict = swarm.converge(
            lambda: tools.read_stack(name), watch, since, timeout, stable, status=lambda text: self._status(name, f"converging: {text}"),
        )
        fields = {STACK: name, ACTION: "deploy"}
        if verdict.ok and watch:
            log.info("Converged in %.0f s (%d service(s))", verdict.waited, len(watch), extra=fields)
        elif not verdict.ok and not verdict.rolled_back:
            log.error("Did not converge: %s", self.config.masker(verdict.reason), extra={**fields, ACTION: "failed"})
        return verdict

    def _swarm_rollback(self, name: str, watch: set[str], failed: swarm.Convergence) -> swarm.Convergence | None:
        """A stack whose updated services did not converge, and that Swarm did not roll back
        itself (their update_config has no failure_action: rollback, or the failure came after
        its monitor window): `docker service rollback` of those that have a previous version,
        when ROLLBACK allows it; None when nothing was rolled back."""
        if not self._rollback_allowed(name):
            return None
        tools = self.tools_in_use.swarm
        assert tools is not None
        views = [view for view in tools.read_stack(name) if view.name in watch and view.service.get("PreviousSpec")]
        if not views:
            return None
        fields = {STACK: name, ACTION: "rollback"}
        log.warning("Rolling back %s: %s", ", ".join(v.name for v in views), self.config.masker(failed.reason), extra=fields)
        since = tools.engine_time()
        problems = tools.rollback([str(view.service.get("ID")) for view in views])
        if problems:
            log.error("The rollback failed: %s", self.config.masker("; ".join(problems)), extra={**fields, ACTION: "failed"})
            return None
        names = {view.name for view in views}
        again = self._converge(name, names, since)
        # A rollback asked for is a rollback to Swarm too: its services end "rollback completed".
        if not again.ok and set(again.rolled_back) != names:
            return None
        return swarm.Convergence(False, failed.reason, {view.name: failed.reason for view in views}, failed.waited + again.waited)

    def _prune_swarm(self, name: str, tools: SwarmTools) -> None:
        """`docker stack rm`, then until its services are gone (the engine removes them after
        the command returned), then once more for what could only go with them (networks)."""
        result = tools.stack.remove(name)
        log_output(name, "prune", result)
        if result.returncode != 0 and engine_unreachable(result):
            check_result("docker stack rm", result, self.config.masker)  # the engine is gone: EngineError
        deadline = time.monotonic() + self.config.deploy_timeout
        while tools.read_stack(name):
            if time.monotonic() > deadline:
                raise ApplyError(f"docker stack rm: its services were still there after {self.config.deploy_timeout:g} s")
            time.sleep(1)
        if result.returncode != 0:
            again = tools.stack.remove(name)
            # What the first one removed meanwhile is "not found" now: gone, as asked.
            problems = [
                line for line in again.stderr.splitlines()
                if line.startswith("Failed to remove ") and "not found" not in line and "some resources" not in line
            ]
            if again.returncode != 0 and problems:
                raise ApplyError(f"docker stack rm failed: {self.config.masker('; '.join(problems[-3:]))}")

    def _remove_replaced_images(self, name: str, images: dict[str, str]) -> None:
        """After an image update: the images it replaced, if no container uses them any more
        (only those: never a prune of the host's images)."""
        record = self.previous.stacks.get(name)
        before = record.good.images if record and record.good else {}
        replaced = sorted({image for service, image in before.items() if images.get(service) not in (None, image)})
        if replaced and self.tools_in_use.remove_images is not None:
            try:
                removed = self.tools_in_use.remove_images(replaced)
            except EngineError as exc:  # a cleanup, not the update: the sync goes on
                log.warning("%s", exc, extra={STACK: name, ACTION: "deploy"})
                return
            if removed:
                log.info("Removed the replaced image(s) %s", ", ".join(i[:19] for i in removed), extra={STACK: name, ACTION: "deploy"})

    # -- the health gate, rollback, healing ----------------------------------------------------

    def _stack_settings(self, name: str) -> StackSettings:
        return self.rollback_inputs.stack_config.settings(name) if self.rollback_inputs else StackSettings()

    def _rollback_allowed(self, name: str) -> bool:
        """ROLLBACK, or the stack's own `rollback` in stack.yml."""
        settings = self._stack_settings(name)
        return settings.rollback if settings.rollback is not None else self.config.rollback

    def _health_limits(self, name: str) -> tuple[float, float]:
        """(HEALTH_TIMEOUT, HEALTH_STABLE), or the stack's own in stack.yml."""
        settings = self._stack_settings(name)
        stable = settings.health_stable if settings.health_stable is not None else self.config.health_stable
        return settings.health_timeout or self.config.health_timeout, stable

    def _containers(self, name: str) -> dict[str, str]:
        """The project's containers now: id -> a fingerprint of how it runs (state, start time)."""
        return {c.id: f"{c.status}/{c.started_at}" for c in self.tools_in_use.inspect(name)}

    def _restart_unhealthy(self, name: str) -> None:
        """Healing: `up` starts a stopped container, but leaves a running one alone, unhealthy or
        not. An unhealthy one is restarted in place (its files and volumes stay); the gate then
        watches it as it watches every container `up` started."""
        sick = sorted((c for c in self.tools_in_use.inspect(name) if c.status == "running" and c.health == "unhealthy"),
                      key=lambda c: c.name)
        if not sick or self.tools_in_use.restart is None:
            return
        log.info("Restarting unhealthy %s", ", ".join(c.name for c in sick), extra={STACK: name, ACTION: "deploy"})
        problems = self.tools_in_use.restart([c.id for c in sick])
        if problems:
            raise ApplyError(self.config.masker("cannot restart the unhealthy container(s): " + "; ".join(problems)))

    def _pending(self, planned: StackPlan) -> bool:
        """Whether an interrupted sync was deploying exactly this revision (no gate passed it)."""
        record = self.previous.stacks.get(planned.name)
        return bool(record and record.pending and record.pending.hash == planned.stack_hash)

    @staticmethod
    def _images(seen: list[ContainerHealth]) -> dict[str, str]:
        """service -> the image ID its containers run, from the gate's last look at them."""
        return {c.service: c.image_id for c in sorted(seen, key=lambda c: c.name)}

    def _gate(self, name: str, before: dict[str, str], recheck: bool = False) -> tuple[GateResult, list[ContainerHealth]]:
        """Wait for what `up` created, recreated or started to be up and stay up (health.py).
        `recheck`: containers deployed by an interrupted sync: all of them are watched. Also
        returns the project's containers as the gate last saw them: one inspection serves as
        the gate's first look and what is recorded afterwards (each costs engine calls per
        container, and with stacks deployed side by side the engine is the busy part)."""
        timeout, stable = self._health_limits(name)
        seen = [self.tools_in_use.inspect(name)]
        after = {c.id: f"{c.status}/{c.started_at}" for c in seen[0]}
        watch = set(after) if recheck else {cid for cid, how in after.items() if before.get(cid) != how}
        unread = list(seen)

        def read() -> list[ContainerHealth]:
            seen[0] = unread.pop() if unread else self.tools_in_use.inspect(name)
            return seen[0]

        def status(text: str) -> None:
            self._status(name, f"health gate: {text}")

        verdict = gate(read, watch, timeout, stable, status=status)
        fields = {STACK: name, ACTION: "deploy"}
        if verdict.ok and watch:
            log.info("Health gate passed in %.0f s (%d container(s))", verdict.waited, len(watch), extra=fields)
        elif not verdict.ok:
            log.error("Health gate failed: %s", self.config.masker(verdict.reason), extra={**fields, ACTION: "failed"})
        return verdict, seen[0]

    def _failed_gate(self, planned: StackPlan, stack: Stack, reason: str, tree: TreeRevision | None, applier: Applier) -> StackOutcome:
        """The revision just deployed does not work: put the last good one back (when there is
        one and ROLLBACK allows it), else leave it and report. Either way this revision is
        remembered and not deployed again until Git wants something else."""
        name = planned.name
        commit = self.checkout.commit if self.checkout else None
        reason = self.config.masker(reason)
        rejected: tuple[str | None, str, str] | None = (commit, planned.stack_hash or "", reason)
        record = self.previous.stacks.get(name)
        good = record.good if record else None
        allowed = self._rollback_allowed(name)
        failed = StackOutcome(
            name, Action.FAILED, planned.reason, planned.stack_hash, error=f"failed its health gate: {reason}", tree=tree,
            rejected=rejected,
        )
        updating = self.options.pull.get(name, {}) if planned.reason.startswith(IMAGE_UPDATE) else {}
        if updating:
            # The revision is fine, the new image is not: back to the old image IDs, and that
            # digest is remembered instead of the revision.
            rejected = None
            failed = dataclasses.replace(failed, rejected=None, bad_images=dict(updating))
        if not allowed or good is None or good.commit is None or (good.hash == planned.stack_hash and not updating):
            why = "ROLLBACK is off" if not allowed else "there is no earlier good revision to go back to"
            log.error("Left as it is (%s): %s", why, reason, extra={STACK: name, ACTION: "failed"})
            return failed
        log.warning("Rolling back to %s: %s", good.commit[:12], reason, extra={STACK: name, ACTION: "rollback"})
        self._status(name, f"rolling back to {good.commit[:12]}")
        try:
            rolled = self._roll_back(planned, stack, good, reason, rejected, tree, applier, pin=set(updating) if updating else None)
            return dataclasses.replace(rolled, bad_images=dict(updating)) if updating else rolled
        except (RollbackError, RenderError, ApplyError, GitSourceError, ConfigError, OSError) as exc:
            message = self._short_paths(self.config.masker(str(exc)))
            log.error("The rollback failed too, the stack is left as it is: %s", message, extra={STACK: name, ACTION: "failed"})
            error = f"failed its health gate ({reason}); the rollback to {good.commit[:12]} failed: {message}"
            return dataclasses.replace(failed, error=error)

    def _roll_back(
        self, planned: StackPlan, stack: Stack, good: state.Revision, reason: str, rejected: tuple[str | None, str, str] | None,
        tree: TreeRevision | None, applier: Applier, pin: Collection[str] | None = None,
    ) -> StackOutcome:
        """Deploy the stack as it was at its last good commit: rendered again from the clone's
        Git objects (nothing rendered is kept on disk: it holds secret values) with today's
        secrets, each service's image pinned to the image ID it ran then (`pin`: only these
        services', after an image update: the others are left as they run), and health-gated."""
        name, inputs, checkout = planned.name, self.rollback_inputs, self.checkout
        assert good.commit is not None and checkout is not None and inputs is not None
        relative = self._relative(checkout, stack)
        scratch = Path(tempfile.mkdtemp(prefix="composeflux-rollback-")).resolve()
        try:
            export(inputs.trees.objects, good.commit, scratch)
            ids = {path: entry.object_id for path, entry in inputs.trees.objects.files(good.commit, ["."]).items()}
            old = Checkout(scratch, good.commit, "", ids)
            stack_path = PurePosixPath(relative).parent
            discovery = discover(scratch, [stack_path], self.config.stack_config_file)
            then = next((s for s in discovery.stacks if s.name == name), None)
            if then is None:
                raise RollbackError(f"the stack is not in commit {good.commit[:12]} any more")
            environment = self._stack_environment(then, scratch, discovery.stack_config, inputs.scopes, inputs.decryptor)
            renderer = Renderer(
                self.tools_in_use.compose, old, inputs.hash_key, environment.env, self.config.masker,
                tree_root=inputs.trees.path, decryptor=inputs.decryptor,
            )
            fresh = renderer.render(then)
            directory = renderer.deploy_directory(then)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        project = labelled_project(fresh, None, good.commit, self.config.instance_id)
        for service, definition in (project.get("services") or {}).items():
            if service in good.images and (pin is None or service in pin):
                # A moved tag cannot change what comes back; `composeflux update` still knows the tag.
                definition["labels"][IMAGE_REFERENCE] = str(definition.get("image") or "")
                definition["image"] = good.images[service]
        wanted = TreeRevision(good.commit, (relative, *fresh.hashes.dependencies))
        tree = inputs.trees.update(name, wanted, tree).revision
        before = self._containers(name)
        applier.deploy(name, directory, project, {**renderer.env, **fresh.environment})
        verdict, seen = self._gate(name, before)
        if not verdict.ok:
            raise RollbackError(f"its own health gate failed: {verdict.reason}")
        log.warning("Rolled back to %s", good.commit[:12], extra={STACK: name, ACTION: "rollback"})
        return StackOutcome(
            name, Action.ROLLED_BACK, planned.reason, fresh.hashes.stack_hash, fresh.hashes.service_hashes, good.commit,
            error=f"rolled back from {(rejected[0] or '?')[:12] if rejected else 'the new image'}: {reason}", tree=tree,
            images=self._images(seen), rejected=rejected,
        )

    def _rejected(self, item: StackHashes) -> str | None:
        """Why this revision is not deployed: it failed its health gate before (and Git still
        wants exactly it), unless asked to try again."""
        record = self.previous.stacks.get(item.name)
        if record is None or record.rejected is None or record.rejected.hash != item.stack_hash:
            return None
        if self.options.retry_failed or item.name in self.options.retry:
            return None
        commit = (record.rejected.commit or "?")[:12]
        verb = "rolled back from" if record.last_action == Action.ROLLED_BACK.value or (
            record.deployed and record.deployed.hash != item.stack_hash) else "failed its health gate at"
        why = record.rejected_reason or "its health gate failed"
        return (
            f"{verb} {commit}: {why}; waiting for a new revision "
            f"(or `composeflux sync --retry {item.name}`)"
        )

    def _suspended(self, discovery: Discovery) -> dict[str, str]:
        suspended = {}
        for name, record in self.previous.stacks.items():
            if record.suspended is not None:
                since = f" since {record.suspended_since}" if record.suspended_since else ""
                suspended[name] = f"suspended{since}" + (f": {record.suspended}" if record.suspended else "") + \
                    f" (`composeflux resume {name}`)"
        for name, settings in discovery.stack_config.stacks.items():
            if settings.suspended and name not in suspended:
                suspended[name] = "suspended in stack.yml"
        return suspended

    def _image_updates(self, plan: Plan) -> Plan:
        """The stacks `composeflux update` applies new images to: deployed again at the revision
        they run, the services with a new image pulled (Compose recreates just those)."""
        stacks = []
        for planned in plan.stacks:
            services = self.options.pull.get(planned.name)
            if services and planned.action is Action.UNCHANGED:
                reason = f"{IMAGE_UPDATE} (services: {', '.join(sorted(services))})"
                planned = dataclasses.replace(planned, action=Action.DEPLOY, reason=reason)
            stacks.append(planned)
        return dataclasses.replace(plan, stacks=tuple(stacks))

    def _keep_rejected(self, plan: Plan, rejected: dict[str, tuple[str, str]]) -> Plan:
        """A revision that failed its gate and was left running (no rollback possible, or
        ROLLBACK off) matches what Git wants, but is not good: it stays failed.
        `rejected`: name -> (stack hash, why), from _rejected."""
        stacks = []
        for planned in plan.stacks:
            waiting = rejected.get(planned.name)
            if planned.action is Action.UNCHANGED and waiting and waiting[0] == planned.stack_hash:
                planned = dataclasses.replace(planned, action=Action.FAILED, reason=waiting[1])
                self.held.add(planned.name)
            stacks.append(planned)
        return dataclasses.replace(plan, stacks=tuple(stacks))

    def _heal_rolled_back(self, plan: Plan, rejected: dict[str, tuple[str, str]], engine: EngineState) -> Plan:
        """A stack rolled back to its last good revision, whose containers then broke (one died,
        turned unhealthy), is rolled back again (that revision redeployed), at most
        HEAL_MAX_ATTEMPTS times: Git still wants the rejected revision, so no deploy would.
        Not with Swarm, which reschedules the tasks of a rolled-back service itself."""
        if self.tools_in_use.swarm is not None:
            return plan
        stacks = []
        for planned in plan.stacks:
            deployed = engine.managed.get(planned.name)
            record = self.previous.stacks.get(planned.name)
            broken = sorted({
                c.service for c in (deployed.containers if deployed else ()) if not c.is_up or c.health == "unhealthy"
            })
            if planned.action is Action.FAILED and planned.name in rejected and broken and record and record.good:
                attempts = record.heal_attempts if record.heal_hash == record.good.hash else 0
                what = f"its last good revision {(record.good.commit or '?')[:12]} is broken (services: {', '.join(broken)})"
                if attempts < self.config.heal_max_attempts or self.options.retry_failed or planned.name in self.options.retry:
                    again = f"{planned.reason}; {what}: rolling back again"
                    planned = dataclasses.replace(planned, action=Action.ROLLED_BACK, reason=again)
                else:
                    planned = dataclasses.replace(
                        planned, reason=f"{planned.reason}; {what}, and was redeployed {attempts} time(s) already (HEAL_MAX_ATTEMPTS)"
                    )
            stacks.append(planned)
        return dataclasses.replace(plan, stacks=tuple(stacks))

    def _heal_rollback(self, planned: StackPlan, stack: Stack, applier: Applier) -> StackOutcome:
        """Roll a rolled-back stack whose containers broke back again (_heal_rolled_back)."""
        record = self.previous.stacks[planned.name]
        assert record.good is not None and record.rejected is not None
        fields = {STACK: planned.name, ACTION: Action.ROLLED_BACK.value}
        log.warning("Healing: %s", planned.reason, extra=fields)
        self._status(planned.name, "rolling back again")
        rejected = (record.rejected.commit, record.rejected.hash or "", record.rejected_reason or "its health gate failed")
        try:
            outcome = self._roll_back(planned, stack, record.good, rejected[2], rejected, record.tree, applier)
        except (RollbackError, RenderError, ApplyError, GitSourceError, ConfigError, OSError) as exc:
            message = self._short_paths(self.config.masker(str(exc)))
            log.error("Healing failed: %s", message, extra={**fields, ACTION: "failed"})
            return StackOutcome(planned.name, Action.FAILED, planned.reason, planned.stack_hash, error=message, healed=True)
        return dataclasses.replace(outcome, healed=True)

    def _recheck_pending(self, plan: Plan, engine: EngineState) -> Plan:
        """A stack that an interrupted sync deployed (its containers carry the hash Git wants,
        but no gate passed them) is gated now instead of being taken for good."""
        stacks = []
        for planned in plan.stacks:
            record = self.previous.stacks.get(planned.name)
            pending = record.pending if record else None
            if planned.action is Action.UNCHANGED and pending is not None and pending.hash == planned.stack_hash:
                planned = dataclasses.replace(planned, action=Action.DEPLOY, reason=f"{RECHECK} (the sync deploying it was interrupted)")
            stacks.append(planned)
        return dataclasses.replace(plan, stacks=tuple(stacks))

    def _limit_healing(self, plan: Plan) -> Plan:
        """A stack deployed at the revision Git wants but broken (a container missing, exited
        with a failure, unhealthy) is redeployed at most HEAL_MAX_ATTEMPTS times per revision."""
        stacks = []
        for planned in plan.stacks:
            if planned.action is Action.DEPLOY and planned.reason.startswith(HEALING):
                record = self.previous.stacks.get(planned.name)
                attempts = record.heal_attempts if record and record.heal_hash == planned.stack_hash else 0
                if attempts >= self.config.heal_max_attempts and not (self.options.retry_failed or planned.name in self.options.retry):
                    planned = dataclasses.replace(
                        planned, action=Action.FAILED,
                        reason=f"{planned.reason}; redeployed {attempts} time(s) at this revision already (HEAL_MAX_ATTEMPTS), "
                        "left alone until the revision changes",
                    )
                    self.held.add(planned.name)
            stacks.append(planned)
        return dataclasses.replace(plan, stacks=tuple(stacks))

    def _prune(self, planned: StackPlan, applier: Applier, trees: StackTrees) -> StackOutcome:
        fields = {STACK: planned.name, ACTION: planned.action.value}
        log.info("Pruning: %s", planned.reason, extra=fields)
        try:
            if self.tools_in_use.swarm is not None:
                self._prune_swarm(planned.name, self.tools_in_use.swarm)
            else:
                applier.prune(planned.name)
            self.tools_in_use.release(planned.name, self.config.instance_id)
            archived = trees.archive(planned.name)
        except (ApplyError, OSError) as exc:
            log.error("Prune failed: %s", exc, extra={**fields, ACTION: "failed"})
            return StackOutcome(planned.name, Action.FAILED, planned.reason, error=str(exc))
        if archived is not None:
            log.info("Its files (data next to the compose file included) were moved to %s; "
                     "`rm -r` that directory once nothing there is needed", archived, extra=fields)
        return StackOutcome(planned.name, Action.PRUNE, planned.reason)

    def _short_paths(self, text: str) -> str:
        """Paths in a message relative to the repository: where the checkout or a stack's tree
        lies is composeflux's business, and it makes every line long."""
        if self.checkout is not None:
            text = text.replace(f"{self.checkout.path}/", "")
        return re.sub(re.escape(str(self.config.state_dir.resolve() / TREES_DIR)) + r"/[a-z0-9][a-z0-9_-]*/", "", text)

    def _overlay(self, checkout: Checkout, trees: StackTrees) -> None:
        """Every stack tree's untracked files (a git-ignored .env, an env_file kept on the host)
        appear in the checkout next to the files from Git, before discovery and render see it."""
        done = set()
        for name, record in self.previous.stacks.items():  # where each tree's stack lives in Git
            if record.tree and record.tree.paths and trees.exists(name):
                overlay(trees.path(name), checkout.path, record.tree.paths[0])
                done.add(name)
        for stack_path in self.config.stack_paths:
            try:
                directories = sorted(e.name for e in os.scandir(checkout.path / stack_path) if e.is_dir(follow_symlinks=False))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for directory in directories:  # trees the state does not know (migrated, state lost)
                name = directory if PROJECT_NAME.match(directory) else project_name(directory)
                if name and name not in done and trees.exists(name):
                    overlay(trees.path(name), checkout.path, (PurePosixPath(stack_path) / directory).as_posix())
                    done.add(name)

    @staticmethod
    def _relative(checkout: Checkout, stack: Stack) -> str:
        return stack.directory.resolve().relative_to(checkout.path).as_posix()

    def _scratch_checkout(self, fetched: Checkout, trees: StackTrees, cleanup: contextlib.ExitStack) -> Checkout:
        """The fetched commit's files in a temporary directory, for a dry run: neither the clone
        nor any stack's tree changes."""
        scratch = Path(tempfile.mkdtemp(prefix="composeflux-dry-run-")).resolve()
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        export(trees.objects, fetched.commit, scratch)
        return dataclasses.replace(fetched, path=scratch)

    def _migrate(self, clone: Path, trees: StackTrees) -> None:
        """composeflux 0.1 ran every stack from the clone: its untracked files move out now."""
        done = migrate_checkout(clone, [str(path) for path in self.config.stack_paths], trees, {})
        if done:
            log.warning("Moving to per-stack working trees (%s): %d untracked entr%s of the old checkout %s moved",
                        trees.root, len(done), "y" if len(done) == 1 else "ies", clone)
        for line in done:
            log.warning("Migration: %s", line)

    def _untouched(self, planned: StackPlan, engine: EngineState) -> StackOutcome:
        if planned.action not in (Action.UNCHANGED, Action.FAILED):
            log.info("%s: %s", planned.action.value.capitalize(), planned.reason, extra={STACK: planned.name, ACTION: planned.action.value})
        elif planned.name in self.held:
            log.info("Not retried yet: %s", planned.reason, extra={STACK: planned.name, ACTION: "failed"})
        elif planned.action is Action.FAILED and planned.name not in self.reported:
            log.error("%s", planned.reason, extra={STACK: planned.name, ACTION: "failed"})
        deployed = engine.managed.get(planned.name)
        commit = deployed.containers[0].labels.get(COMMIT) if deployed and deployed.containers else None
        return self._planned_outcome(planned, commit)
