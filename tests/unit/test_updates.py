"""`composeflux update`'s verdicts, from the engine's and the registries' answers (no network):
which services are asked about, which are skipped and why, what is recorded."""

from __future__ import annotations

import dataclasses
import io

from composeflux import config as configuration, state, updates
from composeflux.deployed import RunningImage
from composeflux.errors import EngineError, ExitStatus
from composeflux.registry import Remote, parse_reference

OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64


def running(stack="web", service="app", image="127.0.0.1:5000/app:v1", digests=(f"127.0.0.1:5000/app@{OLD}",), labels=None):
    return RunningImage(stack, service, image, "sha256:" + "9" * 64, tuple(digests), labels or {})


class FakeRegistry:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []
        self.requests_made = 0

    def check(self, references):
        result = {}
        for reference in references:
            self.asked.append(reference)
            self.requests_made += 1
            digest, problem = self.answers.get(str(reference), (None, "no such tag"))
            result[reference] = Remote(reference, digest, problem)
        return result


def test_policy_label_then_stack_then_default():
    assert updates.policy("notify", None, {}) == "notify"
    assert updates.policy("notify", "off", {}) == "off"
    assert updates.policy("off", "notify", {"composeflux.image-updates": "NOTIFY"}) == "notify"
    assert updates.policy("notify", None, {"composeflux.image-updates": "sometimes"}).startswith("invalid label")


def test_what_is_asked_and_what_is_skipped():
    items = [
        running("a", "tagged"),
        running("a", "pinned", image=f"127.0.0.1:5000/app@{OLD}"),
        running("a", "built", image="a-built", digests=()),
        running("a", "off", labels={"composeflux.image-updates": "off"}),
        running("a", "other-registry", digests=(f"mirror.example/app@{OLD}",)),
    ]
    asked = updates.references(items, {(i.stack, i.service): updates.policy("notify", None, i.labels) for i in items})
    assert asked[("a", "tagged")] == parse_reference("127.0.0.1:5000/app:v1")
    assert asked[("a", "pinned")] == "pinned by digest"
    assert asked[("a", "built")].startswith("no registry digest")
    assert asked[("a", "off")] == "policy off"
    assert asked[("a", "other-registry")].startswith("no registry digest")


def test_verdicts():
    items = [running("a", "same"), running("b", "moved", image="127.0.0.1:5000/other:v1",
                                               digests=(f"127.0.0.1:5000/other@{OLD}",)), running("c", "down", image="127.0.0.1:5001/x:1")]
    asked = updates.references(items, {})
    remotes = {
        parse_reference("127.0.0.1:5000/app:v1"): Remote(parse_reference("127.0.0.1:5000/app:v1"), OLD, None),
        parse_reference("127.0.0.1:5000/other:v1"): Remote(parse_reference("127.0.0.1:5000/other:v1"), NEW, None),
    }
    checks = {c.service: c for c in updates.check(items, asked, remotes)}
    assert checks["same"].verdict is updates.Verdict.CURRENT
    assert checks["moved"].verdict is updates.Verdict.AVAILABLE and checks["moved"].digest == NEW
    assert checks["down"].verdict is updates.Verdict.SKIPPED  # no local digest from that registry
    assert updates.summary(list(checks.values())) == "image updates: 1 up to date, 1 update available, 0 unknown, 1 skipped"


def load(tmp_path, **settings):
    environ = {"GIT_REPO_URL": str(tmp_path / "remote.git"), "STACK_PATH": "stacks", "STATE_DIRECTORY": str(tmp_path / "state"),
               "LOCAL_ENV_DIR": str(tmp_path / "local"), **settings}
    (tmp_path / "composeflux.conf").write_text("")
    return configuration.load(tmp_path / "composeflux.conf", environ=environ)


def test_a_run_asks_once_per_reference_records_what_is_available_and_a_dry_run_records_nothing(tmp_path):
    config = load(tmp_path)
    items = [running("web", "app"), running("web", "worker"), running("db", "app", image="127.0.0.1:5000/db:1",
                                                                      digests=(f"127.0.0.1:5000/db@{OLD}",))]
    tools = updates.UpdateTools(lambda instance: items, list)
    registry = FakeRegistry({"127.0.0.1:5000/app:v1": (NEW, None), "127.0.0.1:5000/db:1": (None, "registry unreachable: 127.0.0.1:5000")})
    out = io.StringIO()
    assert updates.run(config, dry_run=True, tools=tools, registry=registry, out=out) is ExitStatus.OK
    assert len(registry.asked) == 2  # app:v1 once, for both services
    assert "update available  web/app" in out.getvalue() and "unknown" in out.getvalue()
    assert state.read(config.state_dir).stacks == {}

    assert updates.run(config, tools=tools, registry=FakeRegistry(registry.answers)) is ExitStatus.OK
    records = state.read(config.state_dir).stacks
    assert set(records["web"].updates) == {"app", "worker"} and records["web"].updates["app"].digest == NEW
    assert records["db"].updates == {}
    since = records["web"].updates["app"].since

    registry.answers["127.0.0.1:5000/app:v1"] = (OLD, None)  # someone pulled it: up to date again
    assert updates.run(config, tools=tools, registry=FakeRegistry(registry.answers)) is ExitStatus.OK
    assert state.read(config.state_dir).stacks["web"].updates == {}
    assert since


def test_a_suspended_stack_is_not_checked(tmp_path):
    config = load(tmp_path)
    state.set_suspended(config.state_dir, "web", "")
    registry = FakeRegistry({})
    tools = updates.UpdateTools(lambda instance: [running("web", "app")], list)
    assert updates.run(config, tools=tools, registry=registry, out=io.StringIO()) is ExitStatus.OK
    assert registry.asked == []


def test_apply_hands_the_available_updates_to_a_sync_and_a_digest_that_failed_is_not_offered_again(tmp_path, monkeypatch):
    from composeflux import sync

    config = load(tmp_path, IMAGE_UPDATES="apply")
    items = [running("web", "app"), running("web", "quiet", labels={"composeflux.image-updates": "notify"})]
    tools = updates.UpdateTools(lambda instance: items, list)
    answers = {"127.0.0.1:5000/app:v1": (NEW, None)}
    asked = []
    monkeypatch.setattr(sync, "run", lambda config, options, tools=None: asked.append(options) or ExitStatus.STACKS_FAILED)
    out = io.StringIO()
    assert updates.run(config, dry_run=True, tools=tools, registry=FakeRegistry(answers), out=out) is ExitStatus.OK
    assert asked == [] and "would apply       web: app (IMAGE_UPDATES=apply)" in out.getvalue()
    # The sync's status is the run's: here the update failed its gate.
    assert updates.run(config, tools=tools, registry=FakeRegistry(answers)) is ExitStatus.STACKS_FAILED
    assert [dict(options.pull) for options in asked] == [{"web": {"app": NEW}}]  # not the notify-only service

    # As the sync records a digest that failed its gate and was rolled back:
    current = state.load(config.state_dir)
    record = current.stacks["web"]
    state.save(config.state_dir, dataclasses.replace(current, stacks={"web": dataclasses.replace(record, bad_images={"app": NEW})}))
    asked.clear()
    out = io.StringIO()
    assert updates.run(config, dry_run=True, tools=tools, registry=FakeRegistry(answers), out=out) is ExitStatus.OK
    assert "failed its health gate when it was applied" in out.getvalue() and "would apply" not in out.getvalue()


def test_a_check_is_recorded_for_the_metrics_and_a_new_update_is_told_once(tmp_path, monkeypatch):
    from composeflux import notifications

    sent = []
    monkeypatch.setattr(notifications, "apprise_missing", lambda: False)
    monkeypatch.setattr(notifications, "deliver", lambda urls, title, body, masker, kind="info", deadline=30: sent.append(body) or (1, 0))
    config = load(tmp_path, NOTIFY_URLS="json://127.0.0.1:9/", NOTIFY_EVENTS="update-pending")
    tools = updates.UpdateTools(lambda instance: [running("web", "app")], list)
    answers = {"127.0.0.1:5000/app:v1": (NEW, None)}
    for _ in range(2):
        assert updates.run(config, tools=tools, registry=FakeRegistry(answers)) is ExitStatus.OK
    assert sent == ["web: a newer image is available for app (127.0.0.1:5000/app:v1)"]
    saved = state.read(config.state_dir)
    assert (saved.last_update.result, saved.last_update.status) == ("ok", 0)
    assert saved.last_update.summary.startswith("image updates: 0 up to date, 1 update available")
    assert saved.counters["update_checks_ok"] == 2

    def unreachable(instance):
        raise EngineError("cannot connect to the Docker engine")

    assert updates.run(config, tools=updates.UpdateTools(unreachable, list), registry=FakeRegistry(answers)) is ExitStatus.ENGINE
    saved = state.read(config.state_dir)
    assert (saved.last_update.result, saved.last_update.status) == ("error", int(ExitStatus.ENGINE))
    assert saved.stacks["web"].updates["app"].digest == NEW  # what the last good check found stays
