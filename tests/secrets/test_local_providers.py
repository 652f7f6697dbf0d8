"""The file and command providers, and credentials given through the settings mapping."""

import logging
import os
import time

import pytest

from composeflux.errors import ConfigError, SecretsError
from composeflux.secrets import provider_from_settings


def file_provider(path):
    return provider_from_settings({"SECRETS_PROVIDER": "file", "SECRETS_FILE": str(path)})


def command_provider(command, **more):
    return provider_from_settings({"SECRETS_PROVIDER": "command", "SECRETS_COMMAND": command, **more})


# --- file ----------------------------------------------------------------------------------


def test_file_is_read(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text('# comment\nDB_PASSWORD=file-value-1\nKEY="multi\nline"\n')
    path.chmod(0o600)
    assert file_provider(path).fetch() == {"DB_PASSWORD": "file-value-1", "KEY": "multi\nline"}


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_file_accessible_to_others_is_refused(tmp_path, mode):
    path = tmp_path / "secrets.env"
    path.write_text("DB_PASSWORD=file-value-1\n")
    path.chmod(mode)
    with pytest.raises(SecretsError) as info:
        file_provider(path).fetch()
    assert str(info.value) == (
        f"file: {path} is accessible to its group or others (mode {mode:04o}); run: chmod 600 {path}"
    )


def test_file_must_be_regular(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretsError, match="is not a regular file"):
        file_provider(fifo).fetch()
    with pytest.raises(SecretsError, match="is not a regular file"):
        file_provider(tmp_path).fetch()


def test_missing_file(tmp_path):
    with pytest.raises(SecretsError, match=r"cannot open .*: No such file or directory"):
        file_provider(tmp_path / "nope").fetch()


def test_file_syntax_error_names_the_line_not_the_value(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("A=1\nfile-value-pasted-alone\n")
    path.chmod(0o600)
    with pytest.raises(SecretsError) as info:
        file_provider(path).fetch()
    assert str(info.value) == f"file: {path}:2: expected KEY=VALUE"


def test_file_settings_are_validated():
    with pytest.raises(ConfigError, match=r"^SECRETS_FILE: required when SECRETS_PROVIDER=file"):
        provider_from_settings({"SECRETS_PROVIDER": "file"})
    with pytest.raises(ConfigError, match=r"^SECRETS_FILE: must be an absolute path"):
        provider_from_settings({"SECRETS_PROVIDER": "file", "SECRETS_FILE": "secrets.env"})


# --- command -------------------------------------------------------------------------------


def test_command_key_value_output():
    provider = command_provider("printf 'A=cmd-value-1\\n# c\\nB=\"two words\"\\n'")
    assert provider.fetch() == {"A": "cmd-value-1", "B": "two words"}


def test_command_json_output():
    provider = command_provider("""printf '%s' '{"A": "cmd-value-1", "PEM": "x\\ny"}'""")
    assert provider.fetch() == {"A": "cmd-value-1", "PEM": "x\ny"}


def test_command_empty_output_is_no_secrets():
    assert command_provider("true").fetch() == {}


def test_command_exit_status_is_an_error_and_stderr_is_logged_masked(caplog):
    caplog.set_level(logging.INFO)
    provider = command_provider("echo A=cmd-value-1; echo 'oops near cmd-value-1' >&2; exit 3")
    with pytest.raises(SecretsError) as info:
        provider.fetch()
    assert str(info.value) == "command: SECRETS_COMMAND exited with status 3 (its stderr is in the log)"
    assert "command: stderr: oops near ***" in caplog.text
    assert "cmd-value-1" not in caplog.text


def test_command_stderr_of_a_successful_run_is_logged_masked(caplog):
    caplog.set_level(logging.INFO)
    assert command_provider("echo A=cmd-value-1; echo 'using cmd-value-1' >&2").fetch() == {"A": "cmd-value-1"}
    assert [r.getMessage() for r in caplog.records] == ["command: stderr: using ***"]
    assert all(r.name == "composeflux.secrets" for r in caplog.records)


def test_command_killed_by_signal():
    with pytest.raises(SecretsError, match="killed by signal 9"):
        command_provider("kill -9 $$").fetch()


def test_command_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "still-running"
    # Children keep stdout open: killing only the shell would leave fetch() waiting for 30 s.
    provider = command_provider(f"(sleep 1; touch {marker}) & sleep 30", SECRETS_COMMAND_TIMEOUT="0.3")
    started = time.monotonic()
    with pytest.raises(SecretsError, match=r"^command: SECRETS_COMMAND gave no result within 0.3 s \(killed\)$"):
        provider.fetch()
    assert time.monotonic() - started < 5
    time.sleep(max(0.0, started + 1.5 - time.monotonic()))
    assert not marker.exists()


@pytest.mark.parametrize(
    "output, message",
    [
        ("cmd-value-garbage", "command: SECRETS_COMMAND output:1: expected KEY=VALUE (expected KEY=VALUE lines or a JSON object)"),
        ("{cmd-value-garbage", "command: SECRETS_COMMAND output: invalid JSON at line 1 column 2"),
        ('{"A": 1}', "command: SECRETS_COMMAND output: the value of A is not a string"),
        (
            '{"A": "x", "cmd-value-garbage": "v"}',
            "command: SECRETS_COMMAND output: key number 2 of the JSON object is not a valid variable name",
        ),
        ("[1]", "command: SECRETS_COMMAND output:1: expected KEY=VALUE (expected KEY=VALUE lines or a JSON object)"),
    ],
)
def test_command_garbage_output(tmp_path, output, message, caplog):
    script = tmp_path / "out"
    script.write_text(output)
    with pytest.raises(SecretsError) as info:
        command_provider(f"cat {script}").fetch()
    assert str(info.value) == message
    assert "cmd-value-garbage" not in caplog.text


def test_command_output_must_be_utf8():
    with pytest.raises(SecretsError, match="not UTF-8"):
        command_provider("printf 'A=\\377\\n'").fetch()


def test_command_environment_hides_composeflux_credentials(monkeypatch):
    monkeypatch.setenv("INFISICAL_CLIENT_SECRET", "leaked-secret")
    monkeypatch.setenv("GIT_TOKEN", "leaked-token")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("BWS_ACCESS_TOKEN", "for-the-tool")
    provider = provider_from_settings(
        {"SECRETS_PROVIDER": "command", "GIT_TOKEN": "leaked-token",
         "SECRETS_COMMAND": 'echo "A=${INFISICAL_CLIENT_SECRET}${GIT_TOKEN}${NOTIFY_SOCKET}"; echo "B=$BWS_ACCESS_TOKEN"'}
    )
    assert provider.fetch() == {"A": "", "B": "for-the-tool"}


def test_command_deploy_key_reuses_the_fetched_output(tmp_path):
    runs = tmp_path / "runs"
    provider = command_provider(f"echo run >> {runs}; echo 'DEPLOY_KEY=\"line1\nline2\"'")
    assert provider.fetch()["DEPLOY_KEY"] == "line1\nline2"
    assert provider.fetch_deploy_key("DEPLOY_KEY") == "line1\nline2"
    assert runs.read_text() == "run\n"
    with pytest.raises(SecretsError, match=r"^command: deploy key secret 'NOPE' not found"):
        provider.fetch_deploy_key("NOPE")


def test_command_settings_are_validated():
    with pytest.raises(ConfigError, match=r"^SECRETS_COMMAND: required when SECRETS_PROVIDER=command"):
        provider_from_settings({"SECRETS_PROVIDER": "command"})
    with pytest.raises(ConfigError, match=r"^SECRETS_COMMAND_TIMEOUT: expected a number of seconds"):
        command_provider("true", SECRETS_COMMAND_TIMEOUT="later")
    with pytest.raises(ConfigError, match=r"^SECRETS_COMMAND_TIMEOUT: must be more than 0"):
        command_provider("true", SECRETS_COMMAND_TIMEOUT="0")


# --- provider selection and credentials ------------------------------------------------------


def test_unknown_provider():
    with pytest.raises(ConfigError, match=r"^SECRETS_PROVIDER: unknown provider 'vault'"):
        provider_from_settings({"SECRETS_PROVIDER": "vault"})


def test_credentials_directory_feeds_the_provider(tmp_path, monkeypatch, infisical_settings):
    """systemd LoadCredential=: $CREDENTIALS_DIRECTORY/INFISICAL_CLIENT_SECRET, merged by the config layer."""
    from composeflux.config import load_settings

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "INFISICAL_CLIENT_SECRET").write_text(infisical_settings["INFISICAL_CLIENT_SECRET"] + "\n")
    conf = tmp_path / "composeflux.conf"
    conf.write_text(
        "".join(f"{k}={v}\n" for k, v in infisical_settings.items() if k != "INFISICAL_CLIENT_SECRET")
        + "INFISICAL_CLIENT_SECRET=wrong-in-the-file\n"
    )
    settings = load_settings(conf, {"CREDENTIALS_DIRECTORY": str(credentials)}, {})
    assert provider_from_settings(settings).fetch()["DB_PASSWORD"] == "value-db-pw-1"
