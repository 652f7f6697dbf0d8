"""Telling the operator, across real (in-process) syncs: one notice per condition, recoveries,
reminders, deaths reported by `composeflux unit-failed`, the metrics after each run.

Delivery is replaced by a recorder here (apprise itself is exercised against real receivers in
tests/integration/test_notifications.py); everything up to it is the real code.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from composeflux import config as configuration, metrics, notifications, reporting, state
from composeflux.errors import ExitStatus
from composeflux.events import Kind
from tests.conftest import service_yaml

URL = "json://127.0.0.1:9/hook"


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []  # (title, body, type), as masked for delivery
        self.fail = False

    def deliver(self, urls, title, body, masker, kind="info", deadline=30.0):
        if self.fail:
            return 0, len(urls)
        self.sent.append((masker(title), masker(body), kind))
        return len(urls), 0


@pytest.fixture
def outbox(monkeypatch):
    box = Outbox()
    monkeypatch.setattr(notifications, "deliver", box.deliver)
    monkeypatch.setattr(notifications, "apprise_missing", lambda: False)
    return box


def broken(repo, name="bad"):
    repo.write(f"{name}/compose.yaml", "services: [\n")
    repo.commit(f"break {name}")


def fixed(repo, name="bad"):
    repo.write(f"{name}/compose.yaml", service_yaml())
    repo.commit(f"fix {name}")


def test_a_stack_failing_three_syncs_is_told_once_and_its_recovery_once(cfx, repo, outbox):
    repo.add_stack("good")
    broken(repo)
    for _ in range(3):
        assert cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0") is ExitStatus.STACKS_FAILED
    assert len(outbox.sent) == 1
    title, body, kind = outbox.sent[0]
    assert title.endswith(": bad failed") and title.startswith("composeflux on ")
    assert body.startswith("bad: failed: docker compose config failed") and "Commit " in body
    assert kind == "failure"
    assert cfx.state().alerts["stack/bad"].notified is not None
    fixed(repo)
    assert cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0") is ExitStatus.OK
    assert len(outbox.sent) == 2
    title, body, kind = outbox.sent[1]
    assert title.endswith(": bad recovered") and body.startswith("bad: recovered: runs ") and kind == "success"
    assert cfx(NOTIFY_URLS=URL) is ExitStatus.OK
    assert len(outbox.sent) == 2 and cfx.state().alerts == {}


def test_two_stacks_failing_in_one_sync_make_one_message(cfx, repo, outbox):
    broken(repo, "a")
    broken(repo, "b")
    cfx(NOTIFY_URLS=URL)
    [(title, body, _)] = outbox.sent
    assert title.endswith(": a, b failed")
    assert body.count("failed: docker compose config failed") == 2


def test_an_undeliverable_notice_changes_no_exit_status_and_is_tried_again(cfx, repo, outbox):
    repo.add_stack("web")
    outbox.fail = True
    broken(repo)
    assert cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0") is ExitStatus.STACKS_FAILED
    saved = cfx.state()
    assert saved.alerts["stack/bad"].notified is None
    assert saved.counters["notifications_failed"] == 1
    outbox.fail = False
    assert cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0") is ExitStatus.STACKS_FAILED
    assert len(outbox.sent) == 1 and cfx.state().counters["notifications_sent"] == 1


def test_a_reminder_after_notify_remind(cfx, repo, outbox):
    broken(repo)
    cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0")
    cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0")
    assert len(outbox.sent) == 1
    saved = cfx.state()  # told a day and a minute ago
    alert = dataclasses.replace(saved.alerts["stack/bad"], notified="2000-01-01T00:00:00+00:00")
    state.save(cfx.state_dir, dataclasses.replace(saved, alerts={**saved.alerts, "stack/bad": alert}))
    cfx(NOTIFY_URLS=URL, RETRY_FAILED_MAX="0", NOTIFY_REMIND="1d")
    assert len(outbox.sent) == 2
    assert outbox.sent[1][0].endswith(": bad still failing")
    assert outbox.sent[1][1].startswith("bad: still failing since ")


def test_secret_values_never_reach_a_notification(cfx, repo, outbox, tmp_path):
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("DB_PASSWORD='correct horse+battery'\n")
    os.chmod(secrets_file, 0o600)
    repo.write("db/compose.yaml", service_yaml(environment={"PW": "${DB_PASSWORD}"}))
    repo.commit()
    # As written, quoted, URL-encoded (path and form).
    cfx.compose.fail_up["db"] = (
        "Error: bad value correct horse+battery ('correct horse+battery' / correct%20horse%2Bbattery / correct+horse%2Bbattery)"
    )
    cfx(SECRETS_PROVIDER="file", SECRETS_FILE=str(secrets_file), NOTIFY_URLS=URL)
    [(title, body, _)] = outbox.sent
    assert "horse" not in title + body
    assert "bad value ***" in body


def test_a_dry_run_tells_nobody_and_writes_no_metrics(cfx, repo, outbox, tmp_path):
    broken(repo)
    target = tmp_path / "m" / "composeflux.prom"
    target.parent.mkdir()
    cfx(dry_run=True, NOTIFY_URLS=URL, METRICS_TEXTFILE=str(target))
    assert outbox.sent == [] and not target.exists()


def test_each_sync_writes_the_metrics(cfx, repo, tmp_path):
    target = tmp_path / "m" / "composeflux.prom"
    target.parent.mkdir()
    broken(repo)
    repo.add_stack("web")
    repo.commit()
    cfx(METRICS_TEXTFILE=str(target), RETRY_FAILED_MAX="0")
    text = target.read_text()
    assert 'composeflux_syncs_total{result="failed"} 1' in text
    assert 'composeflux_stack_state{stack="bad",state="failed"} 1' in text
    assert 'composeflux_stack_state{stack="web",state="deployed"} 1' in text
    fixed(repo)
    cfx(METRICS_TEXTFILE=str(target), RETRY_FAILED_MAX="0")
    text = target.read_text()
    assert 'composeflux_syncs_total{result="failed"} 1' in text and 'composeflux_syncs_total{result="ok"} 1' in text
    assert "composeflux_last_sync_success 1" in text
    assert 'composeflux_stack_state{stack="web",state="unchanged"} 1' in text
    assert 'composeflux_stack_failures_total{stack="bad"} 1' in text
    assert target.read_text() == metrics.render(cfx.state())


def test_an_unwritable_metrics_file_is_a_warning_not_a_failure(cfx, repo, tmp_path, caplog):
    repo.add_stack("web")
    repo.commit()
    assert cfx(METRICS_TEXTFILE=str(tmp_path / "missing" / "composeflux.prom")) is ExitStatus.OK
    assert "Cannot write the metrics to" in caplog.text


def reporting_of(cfx, **settings) -> configuration.Reporting:
    return configuration.load_reporting(cfx.conf, environ={**cfx.settings, **settings})


def death(invocation="0" * 32, result="timeout", code="killed", status="TERM"):
    return {"MONITOR_SERVICE_RESULT": result, "MONITOR_EXIT_CODE": code, "MONITOR_EXIT_STATUS": status,
            "MONITOR_INVOCATION_ID": invocation}


def lines(unit, invocation):
    return ["Deploying: new", "Health gate of web: waiting for web (health: starting)"]


def test_a_death_is_told_once_and_its_end_by_the_next_sync(cfx, repo, outbox):
    repo.add_stack("web")
    repo.commit()
    cfx()
    settings = reporting_of(cfx, NOTIFY_URLS=URL)
    assert reporting.unit_failed(settings, "composeflux.service", death("a" * 32), lines)
    [(title, body, kind)] = outbox.sent
    assert title.endswith(": died") and kind == "failure"
    assert body == ("composeflux.service failed: timeout (killed by signal TERM), last lines:\nDeploying: new\n"
                    "Health gate of web: waiting for web (health: starting)")
    assert reporting.unit_failed(settings, "composeflux.service", death("b" * 32), lines)  # dies again: recorded, not told
    assert len(outbox.sent) == 1
    cfx(NOTIFY_URLS=URL)
    assert len(outbox.sent) == 2
    recovered = "composeflux sync: recovered (was: composeflux.service failed: timeout (killed by signal TERM))\n\nCommit "
    assert outbox.sent[1][1].startswith(recovered)
    assert "died/sync" not in cfx.state().alerts


def test_a_failure_the_sync_reported_itself_is_not_told_twice(cfx, repo, outbox, monkeypatch):
    broken(repo)
    monkeypatch.setenv("INVOCATION_ID", "c" * 32)
    cfx(NOTIFY_URLS=URL)
    assert cfx.state().last_sync.invocation == "c" * 32
    settings = reporting_of(cfx, NOTIFY_URLS=URL)
    told = reporting.unit_failed(settings, "composeflux.service", death("c" * 32, "exit-code", "exited", "1"), lines)
    assert told is False
    assert len(outbox.sent) == 1  # the sync's own notice


def test_an_update_unit_death_is_its_own_alert(cfx, repo, outbox):
    settings = reporting_of(cfx, NOTIFY_URLS=URL)
    reporting.unit_failed(settings, "composeflux-update.service", death("d" * 32, "oom-kill", "killed", "KILL"), lambda u, i: [])
    [(_, body, _)] = outbox.sent
    assert body == "composeflux-update.service failed: oom-kill (killed by signal KILL) (nothing in its log)"
    assert set(cfx.state().alerts) == {"died/update"}


def test_status_json_has_the_history(cfx, repo, capsys):
    from click.testing import CliRunner

    from composeflux import cli

    repo.add_stack("web")
    repo.commit()
    cfx()
    broken(repo, "web")
    cfx()
    env = dict(cfx.settings)
    result = CliRunner().invoke(cli.main, ["--config", str(cfx.conf), "status", "--json", "-n", "2"], env=env)
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert set(data) == {"last_sync", "last_update", "stacks", "alerts", "history"}
    assert [entry["result"] for entry in data["history"]] == ["ok", "failed"]
    assert data["alerts"]["stack/web"]["kind"] == Kind.STACK_FAILED.value
    assert [entry["action"] for entry in data["stacks"]["web"]["history"]] == ["deploy", "failed"]
    result = CliRunner().invoke(cli.main, ["--config", str(cfx.conf), "status", "web"], env=env)
    assert result.exit_code == 1
    assert "Last error: docker compose config failed" in result.output
    assert "History:" in result.output and "  deployed  " in result.output
    result = CliRunner().invoke(cli.main, ["--config", str(cfx.conf), "status"], env=env)
    assert "Recent syncs:" in result.output


def test_a_failing_stack_deleted_from_git_before_it_ever_ran_is_forgotten(cfx, repo, outbox):
    repo.add_stack("web")
    broken(repo)
    cfx(NOTIFY_URLS=URL)
    assert set(cfx.state().stacks) == {"web", "bad"} and len(outbox.sent) == 1
    repo.remove("bad")
    repo.commit("drop bad")
    assert cfx(NOTIFY_URLS=URL) is ExitStatus.OK
    saved = cfx.state()
    assert set(saved.stacks) == {"web"} and saved.alerts == {}
    assert len(outbox.sent) == 1  # gone, not "recovered"


def test_a_sync_that_stops_early_forgets_nothing(cfx, repo):
    repo.add_stack("web")
    repo.commit()
    cfx()
    assert cfx(GIT_BRANCH="no-such-branch") is ExitStatus.GIT
    assert set(cfx.state().stacks) == {"web"}


def test_a_death_counts_for_the_metrics(cfx, repo, outbox, tmp_path):
    target = tmp_path / "m" / "composeflux.prom"
    target.parent.mkdir()
    settings = reporting_of(cfx, NOTIFY_URLS=URL, METRICS_TEXTFILE=str(target))
    reporting.unit_failed(settings, "composeflux.service", death("e" * 32), lines)
    text = target.read_text()
    assert 'composeflux_alerts{kind="unit-failed"} 1' in text and "composeflux_unit_failures_total 1" in text


def test_each_sync_publishes_its_result_for_whoever_waits(cfx, repo, tmp_path):
    import time

    from composeflux import trigger

    results = tmp_path / "results"
    results.mkdir()
    repo.add_stack("web")
    broken(repo)
    asked = time.time()
    assert cfx(TRIGGER_RESULT_DIR=str(results), RETRY_FAILED_MAX="0") is ExitStatus.STACKS_FAILED
    result = trigger.wait_for_result(results, asked, timeout=0)
    assert result is not None and asked <= result["started"] <= result["finished"]
    assert (result["status"], result["result"]) == (1, "failed")
    assert list(result["failed"]) == ["bad"] and "docker compose config failed" in result["failed"]["bad"]
    assert result["summary"].startswith("1 deployed, 0 unchanged, 0 pruned, 1 failed")
    cfx(dry_run=True, TRIGGER_RESULT_DIR=str(results))  # a dry run answers no request
    assert trigger.read_result(results) == result


def test_a_sync_that_cannot_start_tells_whoever_waits_at_once(cfx, repo, tmp_path):
    import fcntl
    import time

    from click.testing import CliRunner

    from composeflux import cli, trigger

    results = tmp_path / "results"
    results.mkdir()
    repo.add_stack("web")
    repo.commit()
    cfx.state_dir.mkdir()
    asked = time.time()
    with open(cfx.state_dir / "sync.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cfx(LOCK_TIMEOUT="0.2", TRIGGER_RESULT_DIR=str(results)) is ExitStatus.BUSY
    result = trigger.wait_for_result(results, asked, timeout=0)
    assert result is not None and (result["status"], result["result"]) == (int(ExitStatus.BUSY), "error")
    assert "LOCK_TIMEOUT" in result["summary"]

    asked = time.time()
    cfx.conf.write_text("GIT_BRANCH=..bad\n")
    outcome = CliRunner().invoke(cli.sync_main, ["--config", str(cfx.conf)], env={**cfx.settings, "TRIGGER_RESULT_DIR": str(results)})
    assert outcome.exit_code == ExitStatus.CONFIG
    result = trigger.wait_for_result(results, asked, timeout=0)
    assert result is not None and (result["status"], result["result"]) == (int(ExitStatus.CONFIG), "error")
    assert result["summary"].startswith("sync not started: invalid configuration: GIT_BRANCH")
