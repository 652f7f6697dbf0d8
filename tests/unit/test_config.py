"""Configuration: sources, precedence and precise errors, all before anything is touched."""

import hashlib
from pathlib import Path

import pytest

from composeflux import config
from composeflux.errors import ConfigError


def load(tmp_path, file_text="", env=None, overrides=None, credentials=None):
    conf = tmp_path / "composeflux.conf"
    conf.write_text(file_text)
    environ = {"STATE_DIRECTORY": str(tmp_path / "state"), **(env or {})}
    if credentials:
        directory = tmp_path / "credentials"
        directory.mkdir()
        for key, value in credentials.items():
            (directory / key).write_text(value + "\n")
        environ["CREDENTIALS_DIRECTORY"] = str(directory)
    return config.load(conf, environ, overrides or {})


MINIMAL = "GIT_REPO_URL=https://git.example.org/home/stacks.git\nSTACK_PATH=stacks\n"


def test_defaults(tmp_path):
    cfg = load(tmp_path, MINIMAL)
    assert cfg.branch == "main"
    assert cfg.clone_path == tmp_path / "state" / "repo"
    assert cfg.stack_config_file == "stack.yml"
    assert cfg.remove_orphans is True and cfg.allow_prune_all is False
    assert cfg.ssh_host_key_checking == "yes"
    assert (cfg.log_level, cfg.log_format) == ("INFO", "text")


def test_precedence_file_then_environment_then_credentials_then_flags(tmp_path):
    cfg = load(tmp_path, MINIMAL + "GIT_BRANCH=from-file\nGIT_TOKEN=file-token\n", env={"GIT_BRANCH": "from-env"})
    assert cfg.branch == "from-env" and cfg.https_token == "file-token"
    cfg = load(tmp_path, MINIMAL + "GIT_BRANCH=from-file\n", env={"GIT_TOKEN": "env-token", "GIT_BRANCH": "from-env"},
               credentials={"GIT_TOKEN": "credential-token"}, overrides={"GIT_BRANCH": "from-flag"})
    assert cfg.https_token == "credential-token" and cfg.branch == "from-flag"


def test_host_environment_does_not_leak_into_settings(tmp_path):
    cfg = load(tmp_path, MINIMAL, env={"HOME": "/root", "SOME_PASSWORD": "x"})
    assert "HOME" not in cfg.settings and "SOME_PASSWORD" not in cfg.settings


def test_credentials_in_the_url_are_split_off(tmp_path):
    cfg = load(tmp_path, "GIT_REPO_URL=https://bot:s3cr%40t@git.example.org/r.git\nSTACK_PATH=.\n")
    assert cfg.repo_url == "https://git.example.org/r.git"
    assert (cfg.https_username, cfg.https_token) == ("bot", "s3cr@t")
    assert "s3cr" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("STACK_PATH=stacks\n", "GIT_REPO_URL: required"),
        ("GIT_REPO_URL=/srv/r.git\n", "STACK_PATH: required"),
        ("GIT_REPO_URL=/srv/r.git\nSTACK_PATH=../up\n", "STACK_PATH: must be a path inside the repository"),
        (MINIMAL + "REMOVE_ORPHANS=maybe\n", "REMOVE_ORPHANS: expected true or false"),
        (MINIMAL + "LOG_LEVEL=chatty\n", "LOG_LEVEL: expected one of"),
        (MINIMAL + "LOCK_TIMEOUT=soon\n", "LOCK_TIMEOUT: expected a number of seconds"),
        (MINIMAL + "LOCK_TIMEOUT=-1\n", "LOCK_TIMEOUT: must be at least 0 and at most 86400 seconds"),
        (MINIMAL + "DEPLOY_TIMEOUT=0\n", "DEPLOY_TIMEOUT: must be more than 0 and at most 86400 seconds"),
        (MINIMAL + "DEPLOY_TIMEOUT=1e9\n", "DEPLOY_TIMEOUT: must be more than 0 and at most 86400 seconds"),
        (MINIMAL + "DEPLOY_TIMEOUT=nan\n", "DEPLOY_TIMEOUT: expected a number of seconds"),
        (MINIMAL + "GIT_BRANCH=a..b\n", "GIT_BRANCH: not a valid branch name"),
        (MINIMAL + "GIT_CLONE_PATH=relative/dir\n", "GIT_CLONE_PATH: must be an absolute path"),
        (MINIMAL + "GIT_SSH_KEY_PATH=/nonexistent/key\n", "GIT_SSH_KEY_PATH: /nonexistent/key is not a readable file"),
        (MINIMAL + "GIT_SSH_HOST_KEY_CHECKING=no\n", "GIT_SSH_HOST_KEY_CHECKING: expected one of yes, accept-new"),
        (MINIMAL + "SECRETS_PROVIDER=vault\n", "SECRETS_PROVIDER: unknown provider 'vault'"),
        (MINIMAL + "CONFIG_FILE=/etc/stack.yml\n", "CONFIG_FILE: must be a file name relative to STACK_PATH"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(tmp_path, text)


def test_syntax_error_names_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"composeflux\.conf:3"):
        load(tmp_path, MINIMAL + "this is not a setting\n")


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(tmp_path / "absent.conf", {}, {})


def test_unknown_key_in_file_warns(tmp_path, caplog):
    load(tmp_path, MINIMAL + "GIT_BRNACH=dev\n")
    assert "unknown key GIT_BRNACH ignored" in caplog.text


def test_instance_id_ignores_transport_but_not_stack_path(tmp_path):
    ssh = load(tmp_path, "GIT_REPO_URL=git@git.example.org:home/stacks.git\nSTACK_PATH=stacks\n")
    https = load(tmp_path, MINIMAL)
    other = load(tmp_path, MINIMAL.replace("STACK_PATH=stacks", "STACK_PATH=other"))
    assert ssh.instance_id == https.instance_id != other.instance_id


def test_systemd_state_directory_list(tmp_path):
    (tmp_path / "c.conf").write_text(MINIMAL)
    cfg = config.load(tmp_path / "c.conf", {"STATE_DIRECTORY": "/var/lib/composeflux:/var/lib/other"}, {})
    assert cfg.state_dir == Path("/var/lib/composeflux")


def test_stack_path_may_name_several_directories(tmp_path):
    single = load(tmp_path, "GIT_REPO_URL=/srv/r.git\nSTACK_PATH=stacks\n")
    several = load(tmp_path, "GIT_REPO_URL=/srv/r.git\nSTACK_PATH=stacks, apps/home  /media/\n")
    assert [str(p) for p in several.stack_paths] == ["stacks", "apps/home", "media"]
    assert single.instance_id == hashlib.sha256(b"/srv/r.git\0stacks").hexdigest()[:16]  # as 0.1 had it
    assert several.instance_id != single.instance_id
    for overlapping in ("stacks stacks/inner", ". stacks"):
        with pytest.raises(ConfigError, match="lies inside"):
            load(tmp_path, f"GIT_REPO_URL=/srv/r.git\nSTACK_PATH={overlapping}\n")
