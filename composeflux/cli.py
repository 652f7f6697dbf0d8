"""Command line: parse options, set up logging, load the configuration, run, exit with the status.

One sync is composeflux.sync.run; `status` reads composeflux.state. See composeflux(8).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from composeflux import __version__, config as configuration, logs, state, trigger
from composeflux.errors import ComposefluxError, ExitStatus, exit_status
from composeflux.masking import Masker
from composeflux.outcome import PAST_TENSE
from composeflux.plan import Action
from composeflux.sdnotify import Notifier

log = logging.getLogger("composeflux")

F = TypeVar("F", bound=Callable[..., Any])

# --repo-url and friends -> the setting each one overrides.
ACTIONS = {action.value for action in Action}
OVERRIDES = {"repo_url": "GIT_REPO_URL", "branch": "GIT_BRANCH", "stack_path": "STACK_PATH", "clone_path": "GIT_CLONE_PATH"}


def sync_options(function: F) -> F:
    """The options shared by `composeflux sync` and `composeflux-sync`."""
    options = [
        click.option("--dry-run", is_flag=True, help="Print the plan (deploy / unchanged / prune / failed, and why) and change nothing."),
        click.option(
            "--allow-prune-all", is_flag=True, help="Allow removing every deployed stack when Git holds none (or STACK_PATH is gone)."
        ),
        click.option(
            "--retry-failed", is_flag=True, help="Try failed stacks now, even those waiting out their backoff (RETRY_FAILED_MAX)."
        ),
        click.option(
            "--adopt", "adopt", metavar="NAME", multiple=True,
            help="Take over the Compose project NAME, deployed by something else, once (repeatable).",
        ),
        click.option("--repo-url", metavar="URL", help="Override GIT_REPO_URL."),
        click.option("--branch", metavar="BRANCH", help="Override GIT_BRANCH."),
        click.option("--stack-path", metavar="PATH", help="Override STACK_PATH."),
        click.option("--clone-path", metavar="DIR", help="Override GIT_CLONE_PATH."),
        click.option("--log-level", type=click.Choice(configuration.LOG_LEVELS, case_sensitive=False), help="Override LOG_LEVEL."),
        click.option("--log-format", type=click.Choice(configuration.LOG_FORMATS, case_sensitive=False), help="Override LOG_FORMAT."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Configuration file (default {configuration.DEFAULT_CONFIG_FILE}).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="composeflux")
@config_option
@click.pass_context
def main(context: click.Context, config_file: Path | None) -> None:
    """GitOps for Docker Compose: make this host run the stacks in a Git repository."""
    context.obj = config_file


@main.command("sync")
@sync_options
@click.pass_obj
# config_file positional-only: pass_obj hands the group's obj (the --config path) over as the first argument.
def sync_command(config_file: Path | None, /, **options: Any) -> None:
    """Run one complete sync, then exit."""
    sys.exit(run_sync(config_file, **options))


@click.command("composeflux-sync", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="composeflux-sync")
@config_option
@sync_options
def sync_main(config_file: Path | None, **options: Any) -> None:
    """Run one complete composeflux sync, then exit (same as `composeflux sync`)."""
    sys.exit(run_sync(config_file, **options))


@main.command("status")
@click.pass_obj
def status_command(config_file: Path | None) -> None:
    """Show the result of the last sync."""
    logs.setup_logging("INFO", "text", Masker())
    try:
        config = configuration.load(config_file)
    except ComposefluxError as exc:
        log.error("%s", exc)
        sys.exit(exit_status(exc))
    saved = state.read(config.state_dir)
    last = saved.last_sync
    if last is None:
        click.echo(f"No sync has completed yet ({config.state_dir / state.STATE_FILE} does not exist).")
        sys.exit(1)
    click.echo(f"Last sync: {last.time}  result: {last.result}")
    if last.commit:
        click.echo(f"Commit:    {last.commit[:12]} {last.subject or ''}".rstrip())
    click.echo(f"Summary:   {last.summary}")
    width = max(map(len, last.stacks), default=0)
    for name, stack in sorted(last.stacks.items()):
        why = stack.get("error") or stack.get("reason") or ""
        record = saved.stacks.get(name)
        if record and record.consecutive_failures > 1:
            why += f" (failed {record.consecutive_failures} syncs in a row, since {record.failing_since})"
        action = PAST_TENSE.get(Action(stack["action"]), stack["action"]) if stack.get("action") in ACTIONS else "?"
        click.echo(f"  {action:<13}  {name:<{width}}  {why}".rstrip())
    sys.exit(0 if last.result == "ok" else 1)


@main.command("trigger")
@click.pass_obj
def trigger_command(config_file: Path | None) -> None:
    """Ask for a sync now (composeflux.path starts it) and return at once."""
    directory = os.environ.get("TRIGGER_DIR", "").strip()
    if not directory:
        try:
            directory = configuration.load_settings(config_file, os.environ, {}).get("TRIGGER_DIR", "").strip()
        except ComposefluxError:
            directory = ""  # composeflux.conf is not readable by triggering users: the default applies
    try:
        path = trigger.request_sync(Path(directory) if directory else trigger.DEFAULT_TRIGGER_DIR)
    except trigger.TriggerError as exc:
        click.echo(f"composeflux trigger: {exc}", err=True)
        sys.exit(1)
    click.echo(f"Sync requested ({path}); follow it with: journalctl -u composeflux -f")


def run_sync(
    config_file: Path | None,
    dry_run: bool,
    allow_prune_all: bool,
    retry_failed: bool,
    adopt: tuple[str, ...],
    log_level: str | None,
    log_format: str | None,
    **overrides: str | None,
) -> ExitStatus:
    masker = Masker()
    commit_field = logs.setup_logging((log_level or "INFO").upper(), (log_format or "text").lower(), masker)
    settings_overrides = {OVERRIDES[name]: value for name, value in overrides.items()}
    settings_overrides.update({"LOG_LEVEL": log_level, "LOG_FORMAT": log_format})
    try:
        config = configuration.load(config_file, overrides=settings_overrides)
    except ComposefluxError as exc:
        log.error("Invalid configuration: %s", exc)
        Notifier(masker)(f"failed: invalid configuration: {exc}")
        return exit_status(exc)
    logs.setup_logging(config.log_level, config.log_format, config.masker, commit_field)

    from composeflux import sync  # Git and Compose: loaded only for a sync, not for --version or status

    options = sync.Options(dry_run=dry_run, allow_prune_all=allow_prune_all, retry_failed=retry_failed, adopt=frozenset(adopt))
    return sync.run(config, options, commit_field=commit_field)
