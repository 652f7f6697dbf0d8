"""Command line: parse options, set up logging, load the configuration, run, exit with the status.

One sync is composeflux.sync.run; `status` reads composeflux.state. See composeflux(8).
"""

from __future__ import annotations

import dataclasses
import json
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
            "--retry", "retry", metavar="STACK", multiple=True,
            help="Try STACK now, even a revision that failed its health gate or waits out its backoff (repeatable).",
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


def _load_config(config_file: Path | None) -> configuration.Config:
    logs.setup_logging("INFO", "text", Masker())
    try:
        return configuration.load(config_file)
    except ComposefluxError as exc:
        log.error("%s", exc)
        sys.exit(exit_status(exc))


@main.command("status")
@click.argument("stack", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON, for scripts.")
@click.option("-n", "--last", "count", type=click.IntRange(0, state.HISTORY_LIMIT), default=5, show_default=True,
              metavar="N", help="How many of the recent syncs (or of STACK's changes) to show.")
@click.pass_obj
def status_command(config_file: Path | None, /, stack: str | None, as_json: bool, count: int) -> None:
    """Show each stack's state and the recent syncs (or STACK's history and last error)."""
    config = _load_config(config_file)
    saved = state.read(config.state_dir)
    if stack is not None:
        sys.exit(_show_stack(saved, stack, as_json, count))
    last = saved.last_sync
    if as_json:
        click.echo(json.dumps(_status_json(saved, count), indent=2, sort_keys=True))
        sys.exit(0 if last is not None and last.result == "ok" else 1)
    if last is None:
        click.echo(f"No sync has completed yet ({config.state_dir / state.STATE_FILE} does not exist).")
        sys.exit(1)
    click.echo(f"Last sync: {last.time}  result: {last.result}" + (f"  ({last.duration:.1f} s)" if last.duration is not None else ""))
    if last.commit:
        click.echo(f"Commit:    {last.commit[:12]} {last.subject or ''}".rstrip())
    if last.signer:
        click.echo(f"Signed by: {last.signer}")
    click.echo(f"Summary:   {last.summary}")
    width = max(map(len, last.stacks), default=0)
    for name, entry in sorted(last.stacks.items()):
        why = entry.get("error") or entry.get("reason") or ""
        record = saved.stacks.get(name)
        if record and record.consecutive_failures > 1:
            why += f" (failed {record.consecutive_failures} syncs in a row, since {record.failing_since})"
        action = PAST_TENSE.get(Action(entry["action"]), entry["action"]) if entry.get("action") in ACTIONS else "?"
        click.echo(f"  {action:<13}  {name:<{width}}  {why}".rstrip())
    for key, alert in sorted(saved.alerts.items()):
        if not key.startswith("stack/"):
            click.echo(f"Alert:     {alert.kind} since {alert.since}: {alert.reason}")
    if saved.last_update is not None:
        click.echo(f"Updates:   checked {saved.last_update.time}: {saved.last_update.summary}")
    if count and saved.history:
        click.echo("Recent syncs:")
        for entry in saved.history[-count:]:
            took = f" ({entry['duration']:.1f} s)" if isinstance(entry.get("duration"), int | float) else ""
            commit = str(entry.get("commit") or "")[:12] or "-"
            click.echo(f"  {entry.get('time')}  {entry.get('result')!s:<6}  {commit:<12}  {entry.get('summary')}{took}")
    sys.exit(0 if last.result == "ok" else 1)


def _stack_json(name: str, record: state.StackRecord, count: int) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["name"] = name
    data["history"] = data["history"][-count:] if count else []
    return data


def _status_json(saved: state.State, count: int) -> dict[str, Any]:
    """`status --json`: the last sync, every stack's record (state.py's keys) and the recent syncs."""
    return {
        "last_sync": dataclasses.asdict(saved.last_sync) if saved.last_sync else None,
        "last_update": dataclasses.asdict(saved.last_update) if saved.last_update else None,
        "stacks": {name: _stack_json(name, record, count) for name, record in sorted(saved.stacks.items())},
        "alerts": {key: dataclasses.asdict(alert) for key, alert in sorted(saved.alerts.items())},
        "history": list(saved.history[-count:]) if count else [],
    }


def _show_stack(saved: state.State, name: str, as_json: bool, count: int) -> int:
    """Everything the state knows of one stack; 1 when it is not running what Git wants."""
    record = saved.stacks.get(name)
    if record is None:
        if as_json:
            click.echo(json.dumps(None))
        else:
            click.echo(f"{name}: composeflux knows no stack of that name.")
        return 1
    broken = record.last_action in (Action.FAILED.value, Action.ROLLED_BACK.value) or record.rejected is not None
    if as_json:
        click.echo(json.dumps(_stack_json(name, record, count), indent=2, sort_keys=True))
        return 1 if broken else 0
    last = (saved.last_sync.stacks if saved.last_sync else {}).get(name, {})

    def revision(value: state.Revision | None) -> str:
        if value is None:
            return "-"
        images = f", {len(value.images)} image(s) pinned for a rollback" if value.images else ""
        return f"{(value.commit or '?')[:12]} (hash {(value.hash or '?')[:12]}, {value.time}{images})"

    action = record.last_action or "?"
    click.echo(f"Stack:      {name}")
    click.echo(f"Last:       {PAST_TENSE.get(Action(action), action) if action in ACTIONS else action}: "
               f"{last.get('error') or record.last_error or record.last_reason or '-'}")
    if record.last_error:
        click.echo(f"Last error: {record.last_error}")
    click.echo(f"Deployed:   {revision(record.deployed)}")
    click.echo(f"Last good:  {revision(record.good)}")
    if record.rejected is not None:
        click.echo(f"Rejected:   {revision(record.rejected)}: {record.rejected_reason or '?'}; "
                   f"waiting for a new revision (or `composeflux sync --retry {name}`)")
    if record.consecutive_failures:
        click.echo(f"Failures:   {record.consecutive_failures} in a row, since {record.failing_since}")
    if record.retry_after:
        click.echo(f"Retry:      not before {record.retry_after}")
    if record.heal_attempts:
        click.echo(f"Healed:     {record.heal_attempts} time(s) at hash {(record.heal_hash or '?')[:12]}")
    if record.suspended is not None:
        click.echo(f"Suspended:  since {record.suspended_since}{': ' + record.suspended if record.suspended else ''}")
    for service, update in sorted(record.updates.items()):
        click.echo(f"Update:     {service}: {update.image} has a newer image ({update.digest[:19]}) since {update.since}")
    if record.pending is not None:
        click.echo(f"Pending:    {revision(record.pending)} (a sync deploying it did not finish; the next one checks it)")
    click.echo(f"Counts:     {record.deploys} deploy(s), {record.rollbacks} rollback(s), {record.failures} failed sync(s)")
    entries = record.history[-count:] if count else ()
    if entries:
        click.echo("History:")
        for entry in entries:
            word = PAST_TENSE.get(Action(entry["action"]), entry["action"]) if entry.get("action") in ACTIONS else "?"
            commit = (entry.get("commit") or "")[:12] or "-"
            click.echo(f"  {entry.get('time')}  {word:<13}  {commit:<12}  {entry.get('detail') or ''}".rstrip())
    return 1 if broken else 0


@main.command("update")
@click.option("--dry-run", is_flag=True, help="Print what was found and record nothing.")
@click.option("--log-level", type=click.Choice(configuration.LOG_LEVELS, case_sensitive=False), help="Override LOG_LEVEL.")
@click.argument("stacks", nargs=-1, metavar="[STACK]...")
@click.pass_obj
def update_command(config_file: Path | None, /, dry_run: bool, log_level: str | None, stacks: tuple[str, ...]) -> None:
    """Look for new images behind the tags the stacks run (without pulling) and report them."""
    masker = Masker()
    commit_field = logs.setup_logging((log_level or "INFO").upper(), "text", masker)
    try:
        config = configuration.load(config_file, overrides={"LOG_LEVEL": log_level})
    except ComposefluxError as exc:
        log.error("Invalid configuration: %s", exc)
        sys.exit(exit_status(exc))
    logs.setup_logging(config.log_level, config.log_format, config.masker, commit_field)
    from composeflux import updates  # the registry client and the Docker SDK: only for this command

    sys.exit(updates.run(config, dry_run=dry_run, stacks=stacks))


@main.command("suspend")
@click.argument("stack")
@click.option("--reason", metavar="TEXT", default="", help="Why, shown by status and in every sync's log.")
@click.pass_obj
def suspend_command(config_file: Path | None, /, stack: str, reason: str) -> None:
    """Leave STACK exactly as it is: not deployed, healed or pruned, until `resume`."""
    sys.exit(_set_suspended(config_file, stack, reason))


@main.command("resume")
@click.argument("stack")
@click.pass_obj
def resume_command(config_file: Path | None, /, stack: str) -> None:
    """Undo `suspend`: the next sync deploys, heals or prunes STACK again."""
    sys.exit(_set_suspended(config_file, stack, None))


def _set_suspended(config_file: Path | None, stack: str, reason: str | None) -> ExitStatus:
    from composeflux.lock import sync_lock

    config = _load_config(config_file)
    try:
        with sync_lock(config.state_dir, config.lock_timeout, record_pid=False):
            before = state.read(config.state_dir).stacks.get(stack)
            state.set_suspended(config.state_dir, stack, reason)
    except ComposefluxError as exc:
        log.error("%s", exc)
        return exit_status(exc)
    except OSError as exc:
        log.error("Cannot record it in %s: %s", config.state_dir, exc.strerror)
        return ExitStatus.STATE
    if reason is None:
        was = before is not None and before.suspended is not None
        click.echo(f"{stack}: resumed; the next sync handles it again" if was else f"{stack}: was not suspended")
    else:
        known = "" if before is not None else " (no stack of that name was synced yet)"
        click.echo(f"{stack}: suspended{known}; no sync deploys, heals or prunes it until `composeflux resume {stack}`")
    return ExitStatus.OK


@main.command("metrics")
@click.option("--print", "to_stdout", is_flag=True, help="Print them instead of writing METRICS_TEXTFILE.")
@click.pass_obj
def metrics_command(config_file: Path | None, /, to_stdout: bool) -> None:
    """Write the Prometheus metrics (METRICS_TEXTFILE) from the state; the units run it after each run."""
    from composeflux import metrics, reporting

    reporting_settings = _load_reporting(config_file, notify=False)
    saved = state.read(reporting_settings.state_dir)
    if to_stdout:
        click.echo(metrics.render(saved), nl=False)
        sys.exit(0)
    if reporting_settings.metrics_textfile is None:
        log.info("METRICS_TEXTFILE is off (or %s does not exist): nothing to write", metrics.DEFAULT_DIRECTORY)
        sys.exit(0)
    sys.exit(0 if reporting.write_metrics(reporting_settings, saved) else 1)


@main.command("unit-failed")
@click.argument("unit")
@click.pass_obj
def unit_failed_command(config_file: Path | None, /, unit: str) -> None:
    """Tell the operator UNIT died without reporting (OnFailure=composeflux-notify@%n.service)."""
    from composeflux import reporting

    reporting_settings = _load_reporting(config_file)
    try:
        reporting.unit_failed(reporting_settings, unit, os.environ)
    except ComposefluxError as exc:
        log.error("%s", exc)
        sys.exit(exit_status(exc))
    except OSError as exc:
        log.error("Cannot record it in %s: %s", reporting_settings.state_dir, exc.strerror)
        sys.exit(ExitStatus.STATE)


@main.command("notify-test")
@click.pass_obj
def notify_test_command(config_file: Path | None) -> None:
    """Send a test notification to every NOTIFY_URLS entry; fail unless all got it."""
    from composeflux import reporting

    reporting_settings = _load_reporting(config_file)
    if not reporting_settings.notify_urls:
        click.echo("NOTIFY_URLS is empty: there is nothing to send to.", err=True)
        sys.exit(ExitStatus.CONFIG)
    sent, failed = reporting.test_notification(reporting_settings)
    click.echo(f"{sent} of {sent + failed} notification URL(s) got the test message")
    sys.exit(0 if not failed else 1)


def _load_reporting(config_file: Path | None, notify: bool = True) -> configuration.Reporting:
    """The notification and metrics settings alone: these commands must work when the rest of
    the configuration is what broke the sync."""
    logs.setup_logging("INFO", "text", Masker())
    try:
        reporting_settings = configuration.load_reporting(config_file, notify=notify)
    except ComposefluxError as exc:
        log.error("%s", exc)
        sys.exit(exit_status(exc))
    logs.setup_logging("INFO", "text", reporting_settings.masker)
    return reporting_settings


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


@main.command("webhook")
@click.option("--listen", metavar="HOST:PORT",
              help="Serve on a socket of its own (tests, debugging) instead of the one composeflux-webhook.socket passes.")
@click.option("--prepare", is_flag=True,
              help="Write what the receiver needs of the configuration (no credential) to $RUNTIME_DIRECTORY/webhook.json, "
                   "and exit: ExecStartPre= of composeflux-webhook.service, as root.")
@click.pass_obj
def webhook_command(config_file: Path | None, /, listen: str | None, prepare: bool) -> None:
    """Receive signed push webhooks (GitHub, Gitea, Forgejo, Gogs, GitLab) and ask for a sync."""
    if listen is not None and prepare:
        raise click.UsageError("--listen and --prepare do not go together")
    from composeflux import webhook  # the receiver: only for this command

    sys.exit(webhook.run(config_file, listen=listen, do_prepare=prepare))


def _publish_invalid(config_file: Path | None, exc: ComposefluxError) -> None:
    """Whoever waits for this sync (the webhook's ?wait=1) hears that it could not start, at once
    (the result's summary names the problem, never a value: a ConfigError names keys)."""
    import time

    try:
        settings = configuration.load_settings(config_file, os.environ, {})
    except ComposefluxError:
        settings = {}
    directory = settings.get("TRIGGER_RESULT_DIR", "").strip() or trigger.DEFAULT_RESULT_DIR
    now = time.time()
    result = {"started": now, "finished": now, "status": int(exit_status(exc)), "result": "error",
              "summary": f"sync not started: invalid configuration: {exc}", "failed": {}}
    try:
        trigger.publish_result(directory, result)
    except trigger.TriggerError as problem:
        log.warning("%s", problem)


def run_sync(
    config_file: Path | None,
    dry_run: bool,
    allow_prune_all: bool,
    retry_failed: bool,
    retry: tuple[str, ...],
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
        if not dry_run:
            _publish_invalid(config_file, exc)
        return exit_status(exc)
    logs.setup_logging(config.log_level, config.log_format, config.masker, commit_field)

    from composeflux import sync  # Git and Compose: loaded only for a sync, not for --version or status

    options = sync.Options(
        dry_run=dry_run, allow_prune_all=allow_prune_all, retry_failed=retry_failed, adopt=frozenset(adopt), retry=frozenset(retry)
    )
    return sync.run(config, options, commit_field=commit_field)
