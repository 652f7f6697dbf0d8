"""The file and command providers, and credentials given through the settings mapping."""

import logging
import os
import time

import pytest

from composeflux.errors import ConfigError, SecretsError
from composeflux.secrets import provider_from_settings

# How errors describe the names a secrets file or command may give.
KEYS = (
    "NAME or STACK/NAME; NAME: letters, digits and _, not starting with a digit; "
    "STACK: letters, digits, '.', '_' and '-', starting with a letter or digit"
)


def file_provider(path=None, directory=None):
    settings = {"SECRETS_PROVIDER": "file"}
    if path is not None:
        settings["SECRETS_FILE"] = str(path)
    if directory is not None:
        settings["SECRETS_DIR"] = str(directory)
    return provider_from_settings(settings)


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
    with pytest.raises(ConfigError, match=r"^SECRETS_FILE: required when SECRETS_PROVIDER=file and SECRETS_DIR is not set"):
        provider_from_settings({"SECRETS_PROVIDER": "file"})
    with pytest.raises(ConfigError, match=r"^SECRETS_FILE: must be an absolute path"):
        provider_from_settings({"SECRETS_PROVIDER": "file", "SECRETS_FILE": "secrets.env"})
    with pytest.raises(ConfigError, match=r"^SECRETS_DIR: must be an absolute path, got 'secrets.d'"):
        provider_from_settings({"SECRETS_PROVIDER": "file", "SECRETS_FILE": "/etc/x.env", "SECRETS_DIR": "secrets.d"})


def test_file_may_hold_stack_scoped_lines(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("DB_PASSWORD=file-value-1\nplex/DB_PASSWORD=file-value-plex\nexport my-app.v2/TOKEN = file-value-2\n")
    path.chmod(0o600)
    assert file_provider(path).fetch() == {
        "DB_PASSWORD": "file-value-1",
        "plex/DB_PASSWORD": "file-value-plex",
        "my-app.v2/TOKEN": "file-value-2",
    }


@pytest.mark.parametrize("name", ["plex/db/PASSWORD", "/PASSWORD", "-plex/PASSWORD", "plex/1PASSWORD"])
def test_file_malformed_scoped_names(tmp_path, name):
    path = tmp_path / "secrets.env"
    path.write_text(f"A=1\n{name}=file-value-1\n")
    path.chmod(0o600)
    with pytest.raises(SecretsError) as info:
        file_provider(path).fetch()
    assert str(info.value) == f"file: {path}:2: invalid variable name before the = ({KEYS})"
    assert name not in str(info.value)  # it might be a pasted value


# --- file: SECRETS_DIR -----------------------------------------------------------------------


def secrets_dir(tmp_path, files: dict[str, str], mode: int = 0o700):
    directory = tmp_path / "secrets.d"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
        (directory / name).chmod(0o600)
    directory.chmod(mode)
    return directory


def test_secrets_dir_gives_each_stack_its_file(tmp_path):
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=file-value-plex\nDB=x\n", "my-app.v2.env": "TOKEN='file-value-2'\n"})
    assert file_provider(directory=directory).fetch() == {
        "plex/TOKEN": "file-value-plex",
        "plex/DB": "x",
        "my-app.v2/TOKEN": "file-value-2",
    }


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o500])
def test_secrets_dir_may_be_readable_by_others(tmp_path, mode):
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=file-value-plex\n"}, mode)
    assert file_provider(directory=directory).fetch() == {"plex/TOKEN": "file-value-plex"}


def test_secrets_file_and_dir_together(tmp_path):
    """The global file may scope a secret too; the stack's own file wins."""
    path = tmp_path / "secrets.env"
    path.write_text("TOKEN=file-value-global\nplex/TOKEN=file-value-from-file\nweb/KEY=file-value-web\n")
    path.chmod(0o600)
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=file-value-plex\n"})
    assert file_provider(path, directory).fetch() == {
        "TOKEN": "file-value-global",
        "plex/TOKEN": "file-value-plex",
        "web/KEY": "file-value-web",
    }


def test_secrets_dir_names_that_are_not_stacks_are_ignored_with_a_warning(tmp_path, caplog):
    files = {"plex.env": "TOKEN=file-value-plex\n", "README": "x", ".plex.env.swp": "x", "plex.env~": "x",
             "my plex.env": "x", ".env": "x", "-x.env": "x"}
    directory = secrets_dir(tmp_path, files)
    (directory / "archive").mkdir()
    assert file_provider(directory=directory).fetch() == {"plex/TOKEN": "file-value-plex"}
    warned = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warned == sorted(
        f"file: ignoring {directory / name} in SECRETS_DIR: not named <stack>.env (a stack's directory name)"
        for name in [*files.keys() - {"plex.env"}, "archive"]
    )
    assert "file-value" not in caplog.text


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_secrets_dir_file_accessible_to_others_is_refused(tmp_path, mode):
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=file-value-plex\n", "web.env": "A=1\n"})
    (directory / "web.env").chmod(mode)
    with pytest.raises(SecretsError) as info:
        file_provider(directory=directory).fetch()
    path = directory / "web.env"
    assert str(info.value) == f"file: {path} is accessible to its group or others (mode {mode:04o}); run: chmod 600 {path}"


def test_secrets_dir_file_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=file-value-plex\n"})
    path = directory / "plex.env"
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        owner, me = 65534, 0
    else:  # composeflux's user, as far as the provider can tell, is someone else
        owner, me = os.geteuid(), os.geteuid() + 1
        monkeypatch.setattr(os, "geteuid", lambda: me)
    with pytest.raises(SecretsError) as info:
        file_provider(directory=directory).fetch()
    assert str(info.value) == (
        f"file: {path} is owned by uid {owner}, not by the user composeflux runs as (uid {me}); run: chown {me} {path}"
    )


def test_secrets_dir_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere.env"
    target.write_text("TOKEN=file-value-plex\n")
    target.chmod(0o600)
    directory = secrets_dir(tmp_path, {})
    directory.chmod(0o700)
    (directory / "plex.env").symlink_to(target)
    with pytest.raises(SecretsError) as info:
        file_provider(directory=directory).fetch()
    assert str(info.value) == f"file: {directory / 'plex.env'} is a symlink (put the file itself in SECRETS_DIR)"


def test_secrets_dir_entries_must_be_regular_files(tmp_path):
    directory = secrets_dir(tmp_path, {})
    (directory / "plex.env").mkdir()
    with pytest.raises(SecretsError, match=r"plex.env is not a regular file$"):
        file_provider(directory=directory).fetch()
    (directory / "plex.env").rmdir()
    os.mkfifo(directory / "plex.env", 0o600)
    with pytest.raises(SecretsError, match=r"plex.env is not a regular file$"):
        file_provider(directory=directory).fetch()


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777, 0o1777])
def test_secrets_dir_writable_by_others_is_refused(tmp_path, mode):
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=file-value-plex\n"}, mode)
    with pytest.raises(SecretsError) as info:
        file_provider(directory=directory).fetch()
    assert str(info.value) == (
        f"file: SECRETS_DIR {directory} is writable by its group or others "
        f"(mode {mode & 0o777 | mode & 0o1000:04o}); run: chmod go-w {directory}"
    )


def test_secrets_dir_missing_or_not_a_directory(tmp_path):
    with pytest.raises(SecretsError) as info:
        file_provider(directory=tmp_path / "nope").fetch()
    assert str(info.value) == f"file: cannot open {tmp_path / 'nope'}: No such file or directory"
    (tmp_path / "file").write_text("")
    with pytest.raises(SecretsError, match=r"cannot open .*/file: Not a directory$"):
        file_provider(directory=tmp_path / "file").fetch()


def test_secrets_dir_files_hold_plain_names_only(tmp_path):
    """A stack's file can't give secrets to another stack."""
    directory = secrets_dir(tmp_path, {"plex.env": "TOKEN=1\nweb/TOKEN=file-value-web\n"})
    with pytest.raises(SecretsError) as info:
        file_provider(directory=directory).fetch()
    assert str(info.value) == (
        f"file: {directory / 'plex.env'}:2: invalid variable name before the = (letters, digits and _, not starting with a digit)"
    )


def test_secrets_dir_syntax_error_names_the_file_and_line(tmp_path):
    directory = secrets_dir(tmp_path, {"plex.env": "A=1\nfile-value-pasted\n"})
    with pytest.raises(SecretsError) as info:
        file_provider(directory=directory).fetch()
    assert str(info.value) == f"file: {directory / 'plex.env'}:2: expected KEY=VALUE"


# --- command -------------------------------------------------------------------------------


def test_command_key_value_output():
    provider = command_provider("printf 'A=cmd-value-1\\n# c\\nB=\"two words\"\\n'")
    assert provider.fetch() == {"A": "cmd-value-1", "B": "two words"}


def test_command_json_output():
    provider = command_provider("""printf '%s' '{"A": "cmd-value-1", "PEM": "x\\ny"}'""")
    assert provider.fetch() == {"A": "cmd-value-1", "PEM": "x\ny"}


def test_command_stack_scoped_keys():
    provider = command_provider("printf 'A=cmd-value-1\\nplex/A=cmd-value-plex\\nmy-app.v2/B=\"two words\"\\n'")
    assert provider.fetch() == {"A": "cmd-value-1", "plex/A": "cmd-value-plex", "my-app.v2/B": "two words"}
    provider = command_provider("""printf '%s' '{"A": "cmd-value-1", "plex/A": "cmd-value-plex"}'""")
    assert provider.fetch() == {"A": "cmd-value-1", "plex/A": "cmd-value-plex"}


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
            f"command: SECRETS_COMMAND output: key number 2 of the JSON object is not a valid variable name ({KEYS})",
        ),
        (
            '{"A": "x", "plex/db/cmd-value-garbage": "v"}',
            f"command: SECRETS_COMMAND output: key number 2 of the JSON object is not a valid variable name ({KEYS})",
        ),
        (
            "A=1\nplex/cmd-value/garbage=2\n",
            f"command: SECRETS_COMMAND output:2: invalid variable name before the = ({KEYS}) (expected KEY=VALUE lines or a JSON object)",
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
    assert "cmd-value" not in str(info.value)


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
