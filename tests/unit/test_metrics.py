"""The metrics (metrics.py): node_exporter's text format, Prometheus naming, written atomically."""

from __future__ import annotations

import datetime
import os
import re
import stat

import pytest

from composeflux import __version__, metrics, state

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>-?[0-9.e+]+)$')


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and labels -> value; fails on any line that is not a comment or a sample."""
    samples = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        labels = tuple(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def at(hour: int, minute: int) -> float:
    return datetime.datetime(2026, 12, 1, hour, minute, tzinfo=datetime.UTC).timestamp()


def a_state() -> state.State:
    good = state.Revision("c0ffee", "h1", "2026-12-01T10:00:00+00:00")
    return state.State(
        last_sync=state.LastSync(
            "2026-12-01T10:05:00+00:00", "failed", 1, "1 deployed, 1 failed (db)", commit="0123456789abcdef", branch="main",
            duration=12.5,
        ),
        stacks={
            "web": state.StackRecord(last_action="deploy", deployed=good, good=good, deploys=3),
            "db": state.StackRecord(last_action="failed", consecutive_failures=2, failures=5, rollbacks=1,
                                    updates={"app": state.ImageUpdate("postgres:16", "sha256:1", "t")}),
            "old": state.StackRecord(last_action="keep"),
        },
        counters={"syncs_ok": 7, "syncs_failed": 2, "notifications_sent": 1},
        last_update=state.LastUpdate("2026-12-01T04:00:00+00:00", "ok", 0, "image updates: ..."),
    )


def test_the_metrics_of_a_state():
    samples = parse(metrics.render(a_state()))
    assert samples[("composeflux_build_info", (("version", __version__),))] == 1
    assert samples[("composeflux_last_sync_success", ())] == 0
    assert samples[("composeflux_last_sync_exit_status", ())] == 1
    assert samples[("composeflux_last_sync_duration_seconds", ())] == 12.5
    assert samples[("composeflux_last_sync_timestamp_seconds", ())] == at(10, 5)
    assert samples[("composeflux_last_sync_commit_info", (("commit", "0123456789abcdef"), ("branch", "main")))] == 1
    assert samples[("composeflux_syncs_total", (("result", "ok"),))] == 7
    assert samples[("composeflux_syncs_total", (("result", "failed"),))] == 2
    assert samples[("composeflux_syncs_total", (("result", "error"),))] == 0
    assert samples[("composeflux_notifications_total", (("result", "sent"),))] == 1
    assert samples[("composeflux_last_update_check_success", ())] == 1
    states = {labels: value for (name, labels), value in samples.items() if name == "composeflux_stack_state" and value == 1}
    assert states == {(("stack", "db"), ("state", "failed")): 1, (("stack", "old"), ("state", "unchanged")): 1,
                      (("stack", "web"), ("state", "deployed")): 1}
    assert sum(1 for (name, _) in samples if name == "composeflux_stack_state") == 3 * len(metrics.STATES)
    assert samples[("composeflux_stack_consecutive_failures", (("stack", "db"),))] == 2
    assert samples[("composeflux_stack_pending_image_updates", (("stack", "db"),))] == 1
    assert samples[("composeflux_stack_last_deploy_timestamp_seconds", (("stack", "web"),))] == at(10, 0)
    assert ("composeflux_stack_last_deploy_timestamp_seconds", (("stack", "db"),)) not in samples
    assert samples[("composeflux_stack_deploys_total", (("stack", "web"),))] == 3
    assert samples[("composeflux_stack_failures_total", (("stack", "db"),))] == 5
    assert samples[("composeflux_stack_rollbacks_total", (("stack", "db"),))] == 1


def test_names_follow_prometheus_conventions():
    text = metrics.render(a_state())
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.MULTILINE))
    assert helps == set(types)
    for name, kind in types.items():
        assert name.startswith("composeflux_")
        assert (kind == "counter") == name.endswith("_total"), name
        assert kind in ("counter", "gauge")
        if "timestamp" in name or "duration" in name:
            assert name.endswith("_seconds")


def test_no_state_yet_still_renders_a_valid_file():
    samples = parse(metrics.render(state.State()))
    assert samples[("composeflux_syncs_total", (("result", "ok"),))] == 0
    assert not any(name.startswith("composeflux_last_sync") for name, _ in samples)


def test_label_values_are_escaped():
    saved = state.State(last_sync=state.LastSync("t", "ok", 0, "", commit='a"b\\c\nd', branch="main"))
    assert 'commit="a\\"b\\\\c\\nd"' in metrics.render(saved)


def test_publish_replaces_the_file_atomically_with_mode_0644(tmp_path):
    target = tmp_path / "composeflux.prom"
    old_umask = os.umask(0o077)
    try:
        metrics.publish(target, a_state())
    finally:
        os.umask(old_umask)
    assert target.read_text() == metrics.render(a_state())
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    inode = target.stat().st_ino
    metrics.publish(target, state.State())
    assert target.stat().st_ino != inode  # a new file renamed over the old one, never written in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["composeflux.prom"]


def test_publish_never_follows_a_symlink_and_leaves_no_temporary_file(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    target = tmp_path / "dir" / "composeflux.prom"
    target.parent.mkdir()
    (target.parent / f".composeflux.prom.{os.getpid()}.tmp").symlink_to(elsewhere)
    with pytest.raises(OSError):
        metrics.publish(target, a_state())
    assert elsewhere.read_text() == "keep"
    assert not target.exists()


def test_the_default_path_exists_only_with_node_exporters_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "DEFAULT_DIRECTORY", tmp_path / "node-exporter")
    assert metrics.default_path() is None
    (tmp_path / "node-exporter").mkdir()
    assert metrics.default_path() == tmp_path / "node-exporter" / "composeflux.prom"


def test_lasting_conditions_and_unreported_deaths_are_counted():
    import dataclasses

    from composeflux.alerts import CONDITIONS

    assert tuple(kind.value for kind in CONDITIONS) == metrics.ALERT_KINDS
    saved = dataclasses.replace(a_state(), alerts={
        "stack/db": state.Alert("stack-failed", "t", "boom"), "stack/web": state.Alert("stack-failed", "t", "bang"),
        "died/sync": state.Alert("unit-failed", "t", "timeout"),
    }, counters={"unit_failures": 2})
    samples = parse(metrics.render(saved))
    assert samples[("composeflux_alerts", (("kind", "stack-failed"),))] == 2
    assert samples[("composeflux_alerts", (("kind", "unit-failed"),))] == 1
    assert samples[("composeflux_alerts", (("kind", "rolled-back"),))] == 0
    assert samples[("composeflux_unit_failures_total", ())] == 2
