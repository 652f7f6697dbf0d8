"""Command line: a thin layer over composeflux.sync. See composeflux(8)."""

from __future__ import annotations

import datetime
import logging
import os
import sys
from pathlib import Path

import click

from composeflux import __version__, config as configuration, report, secrets, trigger
from composeflux.errors import EXIT_INTERNAL, ComposefluxError
from composeflux.lock import sync_lock
from composeflux.report import CommitField, Masker, notify
from composeflux.sync import Sync

log = logging.getLogger("composeflux")

# Settings whose values are credentials: masked in every log line from the start.
CREDENTIAL_SETTINGS = secrets.CREDENTIAL_KEYS | {"GIT_TOKEN"}


def sync_options(function):
    """The options shared by `composeflux sync` and `composeflux-sync`."""
    options = [
        click.option("--dry-run", is_flag=True, help="Print the plan (deploy / unchanged / prune / failed, and why) and change no stack."),
        click.option("--allow-prune-all", is_flag=True, help="Allow removing every deployed stack when Git holds none (or STACK_PATH is gone)."),
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
def sync_command(config_file: Path | None, **options) -> None:
    """Run one complete sync, then exit."""
    sys.exit(run_sync(config_file, **options))


@click.command("composeflux-sync", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="composeflux-sync")
@config_option
@sync_options
def sync_main(config_file: Path | None, **options) -> None:
    """Run one complete composeflux sync, then exit (same as `composeflux sync`)."""
    sys.exit(run_sync(config_file, **options))


@main.command("status")
@click.pass_obj
def status_command(config_file: Path | None) -> None:
    """Show the result of the last sync."""
    masker, commit_field = Masker(), CommitField()
    report.setup_logging("INFO", "text", masker, commit_field)
    try:
        config = configuration.load(config_file)
    except ComposefluxError as exc:
        log.error("%s", exc)
        sys.exit(exc.exit_code)
    state = report.read_state(config.state_dir)
    if state is None:
        click.echo(f"No sync has completed yet ({config.state_dir / report.STATE_FILE} does not exist).")
        sys.exit(1)
    click.echo(f"Last sync: {state['time']}  result: {state['result']}")
    if state.get("commit"):
        click.echo(f"Commit:    {state['commit'][:12]} {state.get('subject', '')}")
    click.echo(f"Summary:   {state['summary']}")
    stacks = state.get("stacks", {})
    width = max(map(len, stacks), default=0)
    for name, stack in sorted(stacks.items()):
        click.echo(f"  {stack['action']:<9}  {name:<{width}}  {stack.get('reason') or ''}".rstrip())
    sys.exit(0 if state["result"] == "ok" else 1)


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


def run_sync(config_file: Path | None, dry_run: bool, allow_prune_all: bool, log_level, log_format, **overrides) -> int:
    masker, commit_field = Masker(), CommitField()
    report.setup_logging((log_level or "INFO").upper(), (log_format or "text").lower(), masker, commit_field)
    keys = {"repo_url": "GIT_REPO_URL", "branch": "GIT_BRANCH", "stack_path": "STACK_PATH", "clone_path": "GIT_CLONE_PATH"}
    settings_overrides = {keys[name]: value for name, value in overrides.items()}
    settings_overrides.update({"LOG_LEVEL": log_level, "LOG_FORMAT": log_format})
    try:
        config = configuration.load(config_file, overrides=settings_overrides)
    except ComposefluxError as exc:
        log.error("Invalid configuration: %s", exc)
        notify(f"failed: invalid configuration: {exc}")
        return exc.exit_code
    masker.add(value for key, value in config.settings.items() if key in CREDENTIAL_SETTINGS)
    report.setup_logging(config.log_level, config.log_format, masker, commit_field)
    if not dry_run:
        _drain_trigger_requests(config)

    try:
        with sync_lock(config.state_dir, config.lock_timeout):
            result = Sync(config, masker, commit_field, dry_run=dry_run, allow_prune_all=allow_prune_all).run()
    except ComposefluxError as exc:
        message = masker(str(exc))
        log.error("Sync failed, nothing was changed: %s", message)
        notify(f"failed: {message}")
        _record_failure(config, message, dry_run)
        return exc.exit_code
    except Exception:  # a bug: say so loudly, but never with a secret in the traceback
        log.exception("Sync failed with an internal error")
        notify("failed: internal error")
        return EXIT_INTERNAL

    if dry_run:
        for line in result.plan.lines():
            click.echo(masker(line))
        summary = "dry run: " + result.plan_summary()
    else:
        summary = result.summary()
    log.info("%s", summary)
    notify(summary)
    return result.exit_code


def _drain_trigger_requests(config: configuration.Config) -> None:
    """Empty the trigger spool before fetching: requests from now on start another sync
    (composeflux.path). Under systemd the unit's ExecStartPre has already done it."""
    try:
        drained = trigger.drain_requests(config.trigger_dir or trigger.DEFAULT_TRIGGER_DIR)
    except trigger.TriggerError as exc:
        log.warning("Trigger spool: %s", exc)
        return
    if drained:
        log.debug("This sync answers %d trigger request(s)", drained)


def _record_failure(config: configuration.Config, message: str, dry_run: bool) -> None:
    if dry_run:
        return
    try:
        report.write_state(
            config.state_dir,
            {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "result": "error",
                "summary": f"sync failed, nothing was changed: {message}",
                "stacks": {},
            },
        )
    except OSError as exc:
        log.warning("Cannot record the failure in %s: %s", config.state_dir, exc)
