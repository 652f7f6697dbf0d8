"""One complete sync: secrets → Git → discovery → render and hash → plan → apply → report.

Everything that can fail for the whole sync (configuration, secrets, Git, an unsafe prune)
fails before the first container is touched. After that, each stack succeeds or fails alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from pathlib import Path

from composeflux import engine, report
from composeflux.apply import Applier, ApplyError, labelled_project
from composeflux.compose import Compose
from composeflux.config import Config
from composeflux.errors import EXIT_OK, EXIT_STACKS_FAILED, UnsafePruneError
from composeflux.gitsource import Checkout, GitSource
from composeflux.plan import Action, Plan, make_plan
from composeflux.render import RenderedStack, Renderer, RenderError, load_hash_key
from composeflux.render_cache import RenderCache
from composeflux.report import ACTION, STACK, Masker, notify
from composeflux.secrets import SecretsProvider, provider_from_settings
from composeflux.stacks import Discovery, StackConfig, discover

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SyncResult:
    plan: Plan
    outcomes: dict[str, tuple[Action, str]]  # stack -> (what happened, error or reason)
    commit: str

    @property
    def failed(self) -> dict[str, str]:
        return {name: why for name, (action, why) in self.outcomes.items() if action is Action.FAILED}

    @property
    def exit_code(self) -> int:
        return EXIT_STACKS_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        counts = {action: 0 for action in (Action.DEPLOY, Action.UNCHANGED, Action.PRUNE, Action.KEEP, Action.FAILED)}
        for action, _ in self.outcomes.values():
            counts[action] += 1
        words = {Action.DEPLOY: "deployed", Action.UNCHANGED: "unchanged", Action.PRUNE: "pruned", Action.KEEP: "kept", Action.FAILED: "failed"}
        parts = [f"{counts[a]} {words[a]}" for a in counts if counts[a] or a is not Action.KEEP]
        text = ", ".join(parts)
        if self.failed:
            text += " (" + "; ".join(f"{name}: {why}" for name, why in self.failed.items()) + ")"
        return text


    def plan_summary(self) -> str:
        """What a dry run would do, e.g. "2 to deploy, 3 unchanged, 1 to prune"."""
        words = {Action.DEPLOY: "to deploy", Action.UNCHANGED: "unchanged", Action.PRUNE: "to prune", Action.KEEP: "to keep", Action.FAILED: "failed"}
        counts = {action: len(self.plan.with_action(action)) for action in words}
        return ", ".join(f"{n} {words[a]}" for a, n in counts.items() if n or a is not Action.KEEP)


def interpolation_env(envs: dict[str, str], secret_values: dict[str, str]) -> dict[str, str]:
    """stack.yml envs, overridden by secrets (a conflict is worth a warning, naming keys only)."""
    clashes = sorted(set(envs) & set(secret_values))
    if clashes:
        log.warning("stack.yml envs and the secrets provider both define %s; the secret wins", ", ".join(clashes))
    return {**envs, **secret_values}


@contextlib.contextmanager
def deploy_key(config: Config, provider: SecretsProvider):
    """The SSH key for Git: GIT_SSH_KEY_PATH, or one fetched from the secrets manager that lives
    in the runtime directory (tmpfs under systemd) only while the sync runs."""
    reference = config.settings.get("GIT_DEPLOY_KEY_SECRET_REF", "").strip()
    if not reference:
        yield config.ssh_key_path
        return
    key = provider.fetch_deploy_key(reference)
    config.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config.runtime_dir / "deploy-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.strip() + "\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


class Sync:
    def __init__(self, config: Config, masker: Masker, commit_field, dry_run: bool = False, allow_prune_all: bool = False):
        self.config = config
        self.masker = masker
        self.commit_field = commit_field
        self.dry_run = dry_run
        self.allow_prune_all = allow_prune_all or config.allow_prune_all
        self.compose = Compose()

    def run(self) -> SyncResult:
        config = self.config
        notify("fetching secrets")
        provider = provider_from_settings(config.settings)
        secret_values = provider.fetch()
        self.masker.add(secret_values.values())
        log.info("Secrets provider %s returned %d value(s)", provider.name, len(secret_values))

        compose_version = self.compose.version()
        state = engine.read_state(config.instance_id)

        notify("fetching Git")
        with deploy_key(config, provider) as key:
            checkout = GitSource(config, key).sync(protect=[Path(p) for p in state.bind_sources()])
        self.commit_field.commit = checkout.commit
        log.info("Checked out %s (%s) from %s branch %s", checkout.short_commit, checkout.subject, config.repo_url, config.branch)

        discovery = self._discover(checkout, state)
        env = interpolation_env(discovery.stack_config.envs, secret_values)
        renderer = Renderer(self.compose, checkout, load_hash_key(config.state_dir), env, self.masker)
        cache = RenderCache(config.state_dir, renderer, compose_version)

        notify("rendering")
        rendered = self._render_all(discovery, renderer, cache)
        plan = make_plan(
            desired=[(stack.name, rendered[stack.name]) for stack in discovery.ordered()]
            + [(error.name, error.reason) for error in discovery.errors],
            deployed=state.managed,
            others=state.others,
            in_git={s.name for s in discovery.stacks} | {e.name for e in discovery.errors},
            remove_orphans=config.remove_orphans,
            allow_prune_all=self.allow_prune_all,
        )
        if self.dry_run:
            return SyncResult(plan, {s.name: (s.action, s.reason) for s in plan.stacks}, checkout.commit)

        outcomes = self._apply(plan, discovery, renderer, rendered, cache, state, checkout, env)
        cache.save()
        result = SyncResult(plan, outcomes, checkout.commit)
        self._write_state(result, checkout, rendered)
        return result

    def _discover(self, checkout: Checkout, state: engine.EngineState) -> Discovery:
        root = checkout.path / self.config.stack_path
        if not root.is_dir():
            if state.managed and not self.allow_prune_all:
                raise UnsafePruneError(
                    f"STACK_PATH {self.config.stack_path} does not exist in commit {checkout.short_commit}, "
                    f"but {len(state.managed)} stack(s) are deployed; refusing to remove them. If that is really "
                    "intended, run `composeflux sync --allow-prune-all`"
                )
            log.warning("STACK_PATH %s does not exist in commit %s", self.config.stack_path, checkout.short_commit)
            return Discovery([], [], StackConfig())
        discovery = discover(checkout.path, self.config.stack_path, self.config.stack_config_file)
        for error in discovery.errors:
            log.error("%s", error.reason, extra={STACK: error.name, ACTION: "failed"})
        return discovery

    def _render_all(self, discovery: Discovery, renderer: Renderer, cache: RenderCache) -> dict[str, RenderedStack | str]:
        rendered: dict[str, RenderedStack | str] = {}
        for stack in discovery.ordered():
            cached = cache.lookup(stack)
            if cached is not None:
                rendered[stack.name] = cached
                continue
            try:
                rendered[stack.name] = renderer.render(stack)
                cache.store(stack, rendered[stack.name])
            except RenderError as exc:
                rendered[stack.name] = str(exc)
                log.error("%s", exc, extra={STACK: stack.name, ACTION: "failed"})
        return rendered

    def _apply(self, plan, discovery, renderer, rendered, cache, state, checkout, env) -> dict[str, tuple[Action, str]]:
        applier = Applier(self.compose, env, self.masker, self.config.remove_orphans, self.config.deploy_timeout)
        stacks = {stack.name: stack for stack in discovery.stacks}
        outcomes: dict[str, tuple[Action, str]] = {}
        deploys = plan.with_action(Action.DEPLOY)
        for index, planned in enumerate(plan.stacks):
            fields = {STACK: planned.name, ACTION: planned.action.value}
            if planned.action is Action.DEPLOY:
                notify(f"deploying {deploys.index(planned) + 1}/{len(deploys)}: {planned.name}")
                log.info("Deploying: %s", planned.reason, extra=fields)
                try:
                    stack = stacks[planned.name]
                    fresh = rendered[planned.name]
                    if fresh.project is None:  # hashes came from the cache: render for real
                        fresh = renderer.render(stack)
                        rendered[planned.name] = fresh
                        cache.store(stack, fresh)
                    project = labelled_project(fresh, state.managed.get(planned.name), checkout.commit, self.config.instance_id)
                    applier.deploy(stack, project)
                    outcomes[planned.name] = (Action.DEPLOY, planned.reason)
                except (RenderError, ApplyError) as exc:
                    log.error("Deploy failed: %s", exc, extra={**fields, ACTION: "failed"})
                    outcomes[planned.name] = (Action.FAILED, str(exc))
            elif planned.action is Action.PRUNE:
                notify(f"pruning {planned.name}")
                log.info("Pruning: %s", planned.reason, extra=fields)
                try:
                    applier.prune(planned.name)
                    outcomes[planned.name] = (Action.PRUNE, planned.reason)
                except ApplyError as exc:
                    log.error("Prune failed: %s", exc, extra={**fields, ACTION: "failed"})
                    outcomes[planned.name] = (Action.FAILED, str(exc))
            else:
                if planned.action is not Action.UNCHANGED:
                    log.info("%s: %s", planned.action.value.capitalize(), planned.reason, extra=fields)
                outcomes[planned.name] = (planned.action, planned.reason)
        return outcomes

    def _write_state(self, result: SyncResult, checkout: Checkout, rendered) -> None:
        hashes = {name: r.stack_hash for name, r in rendered.items() if isinstance(r, RenderedStack)}
        report.write_state(
            self.config.state_dir,
            {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "commit": checkout.commit,
                "subject": self.masker(checkout.subject),
                "branch": self.config.branch,
                "repository": self.config.repo_url,
                "result": "failed" if result.failed else "ok",
                "summary": result.summary(),
                "stacks": {
                    name: {"action": action.value, "reason": why, "hash": hashes.get(name)}
                    for name, (action, why) in result.outcomes.items()
                },
            },
        )

