"""The notification and metrics settings (config.Reporting) and what the masker learns from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from composeflux import config, notifications
from composeflux.errors import ConfigError
from composeflux.events import DEFAULT_NOTIFY, Kind
from composeflux.settings import seconds
from tests.unit.test_config import MINIMAL, load as load_config


@pytest.fixture(autouse=True)
def apprise_installed(monkeypatch):
    monkeypatch.setattr(notifications, "apprise_missing", lambda: False)


def load(tmp_path, text="", credentials=None, **env):
    return load_config(tmp_path, MINIMAL + text, env=env, credentials=credentials)


def test_defaults(tmp_path):
    reporting = load(tmp_path).reporting
    assert reporting.notify_urls == ()
    assert reporting.notify_events == DEFAULT_NOTIFY and Kind.UPDATE_PENDING not in DEFAULT_NOTIFY
    assert reporting.notify_remind == 86400
    assert reporting.metrics_textfile is None  # the tests' conftest hides the host's node_exporter directory
    assert reporting.state_dir == tmp_path / "state"


def test_urls_events_and_remind(tmp_path):
    reporting = load(
        tmp_path, "NOTIFY_URLS=ntfy://ntfy.example.org/home  mailto://me:pw123456@mail.example.org\n"
        "NOTIFY_EVENTS=stack-failed, recovered update-pending\nNOTIFY_REMIND=12h\nMETRICS_TEXTFILE=/srv/prom/composeflux.prom\n",
    ).reporting
    assert reporting.notify_urls == ("ntfy://ntfy.example.org/home", "mailto://me:pw123456@mail.example.org")
    assert reporting.notify_events == {Kind.STACK_FAILED, Kind.RECOVERED, Kind.UPDATE_PENDING}
    assert reporting.notify_remind == 12 * 3600
    assert reporting.metrics_textfile == Path("/srv/prom/composeflux.prom")


def test_notify_events_all(tmp_path):
    assert load(tmp_path, "NOTIFY_EVENTS=all\n").reporting.notify_events == set(Kind)


def test_notify_urls_is_a_credential_and_masked(tmp_path):
    url = "tgram://123456789:AAbbCCddEEffGGhhIIjj/987654321"
    cfg = load(tmp_path, credentials={"NOTIFY_URLS": url})
    assert cfg.reporting.notify_urls == (url,)
    assert "123456789:AAbbCCddEEffGGhhIIjj" not in cfg.masker(f"sending to {url}: 401 for 123456789:AAbbCCddEEffGGhhIIjj")
    assert "notify_urls" not in repr(cfg.reporting) or url not in repr(cfg.reporting)


@pytest.mark.parametrize(("text", "message"), [
    ("NOTIFY_URLS=ntfy.example.org/topic\n", "NOTIFY_URLS: entry #1 is not a URL"),
    ("NOTIFY_EVENTS=stack-failed, explosions\n", "NOTIFY_EVENTS: unknown event(s) explosions; known: all, sync-failed"),
    ("NOTIFY_REMIND=soon\n", "NOTIFY_REMIND: expected a number of seconds"),
    ("METRICS_TEXTFILE=metrics/composeflux.prom\n", "METRICS_TEXTFILE: must be an absolute path ending in .prom"),
    ("METRICS_TEXTFILE=/srv/composeflux.txt\n", "METRICS_TEXTFILE: must be an absolute path ending in .prom"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, text)


def test_notify_urls_without_apprise_is_a_clear_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setattr(notifications, "apprise_missing", lambda: True)
    with pytest.raises(ConfigError, match=r"NOTIFY_URLS is set, but apprise is not installed: `apt install apprise`"):
        load(tmp_path, "NOTIFY_URLS=json://127.0.0.1:8080/\n")
    assert load(tmp_path, "").reporting.notify_urls == ()  # not set: apprise is not needed


def test_metrics_off(tmp_path):
    assert load(tmp_path, "METRICS_TEXTFILE=off\n").reporting.metrics_textfile is None


def test_load_reporting_works_when_the_rest_of_the_configuration_does_not(tmp_path):
    conf = tmp_path / "composeflux.conf"
    conf.write_text("GIT_BRANCH=..bad\nNOTIFY_URLS=json://127.0.0.1:9/x\n")  # no GIT_REPO_URL either
    with pytest.raises(ConfigError):
        config.load(conf, {"STATE_DIRECTORY": str(tmp_path)})
    reporting = config.load_reporting(conf, {"STATE_DIRECTORY": str(tmp_path)})
    assert reporting.notify_urls == ("json://127.0.0.1:9/x",) and reporting.state_dir == tmp_path


@pytest.mark.parametrize(("raw", "value"), [("90", 90), ("90s", 90), ("2.5min", 150), ("24h", 86400), ("7d", 604800), ("30 min", 1800)])
def test_durations_take_units(raw, value):
    assert seconds({"X": raw}, "X", 0) == value


def test_url_parts_masks_tokens_not_common_words():
    assert notifications.url_parts("ntfy://ntfy.example.org/composeflux") == {"ntfy://ntfy.example.org/composeflux"}
    assert "123456789:AAbbCCddEEffGGhhIIjj" in notifications.url_parts("tgram://123456789:AAbbCCddEEffGGhhIIjj/987654321")
    parts = notifications.url_parts("mailto://alerts:s3cretpass@mail.example.org?to=me@example.org&pass=other-secret")
    assert {"s3cretpass", "alerts:s3cretpass", "other-secret"} <= parts
    assert "AAbbCCddEEffGGhhIIjj-token" in notifications.url_parts("discord://1234/AAbbCCddEEffGGhhIIjj-token")


def test_urls_are_named_by_position_and_scheme_only():
    assert notifications.describe(2, "tgram://123:secret/456") == "NOTIFY_URLS #2 (tgram://)"
