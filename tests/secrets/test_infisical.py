"""The infisical provider against the fake Infisical server (a separate process, real HTTP)."""

import logging
import time

import pytest

from composeflux.errors import ConfigError, SecretsError
from composeflux.secrets import all_keys, provider_from_settings
from tests.secrets.conftest import (
    INFISICAL_EMPTY_PROJECT,
    INFISICAL_OTHER_PROJECT,
    INFISICAL_PROJECT,
    FakeServer,
    infisical_state,
)

ALL_VALUES = ("value-db-pw-1", "value-api-key-1", "value-shared", "value-deploy", "client-secret-s3cr3t")


def assert_no_secrets(text: str) -> None:
    for value in ALL_VALUES:
        assert value not in text


def fetch_error(settings) -> str:
    with pytest.raises(SecretsError) as info:
        provider_from_settings(settings).fetch()
    message = str(info.value)
    assert message.startswith("infisical: ")
    # No chained exception that could carry a request, its headers or a value.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert_no_secrets(message)
    return message


DEPLOY_KEY_VALUE = "-----BEGIN KEY-----\nvalue-deploy\n-----END KEY-----\n"


def test_reads_the_root_path_by_default(infisical_fake, infisical_settings):
    # The folders right below / (/app, /deploy) are the scopes of the stacks named so.
    assert provider_from_settings(infisical_settings).fetch() == {
        "DB_PASSWORD": "value-db-pw-1",
        "SHARED": "value-shared-root",
        "app/API_KEY": "value-api-key-1",
        "app/SHARED": "value-shared-app",
        "deploy/DEPLOY_KEY": DEPLOY_KEY_VALUE,
    }
    lines = infisical_fake.requests()
    assert lines[0] == "POST /api/v1/auth/universal-auth/login"
    # One listing for the folder and all its stack folders.
    assert len(lines) == 2
    assert lines[1].startswith("GET /api/v4/secrets?projectId=")
    assert "&recursive=true" in lines[1] and "secretPath=%2F&" in lines[1]


def test_several_paths_last_one_wins(infisical_settings):
    # /app is a configured path, so its secrets are global (and not the scope of a stack "app").
    settings = {**infisical_settings, "INFISICAL_SECRET_PATH": "/, /app"}
    assert provider_from_settings(settings).fetch() == {
        "DB_PASSWORD": "value-db-pw-1",
        "SHARED": "value-shared-app",
        "API_KEY": "value-api-key-1",
        "deploy/DEPLOY_KEY": DEPLOY_KEY_VALUE,
    }
    settings["INFISICAL_SECRET_PATH"] = "/app,/"
    assert provider_from_settings(settings).fetch()["SHARED"] == "value-shared-root"


def test_environment_is_respected(infisical_settings):
    settings = {**infisical_settings, "INFISICAL_ENVIRONMENT": "dev"}
    assert provider_from_settings(settings).fetch() == {"DB_PASSWORD": "value-dev-db"}


def test_falls_back_to_v3_when_v4_is_missing(infisical_fake, infisical_settings):
    infisical_fake.set_state(infisical_state(v4=False))
    settings = {**infisical_settings, "INFISICAL_SECRET_PATH": "/,/app"}
    provider = provider_from_settings(settings)
    assert provider.fetch()["SHARED"] == "value-shared-app"
    paths = [line.split("?")[0] for line in infisical_fake.requests()]
    # One probe of v4, then v3 only for the rest of the sync.
    assert paths == [
        "POST /api/v1/auth/universal-auth/login",
        "GET /api/v4/secrets",
        "GET /api/v3/secrets/raw",
        "GET /api/v3/secrets/raw",
    ]
    assert "workspaceId=" in infisical_fake.requests()[-1]
    assert all("&recursive=true" in line for line in infisical_fake.requests()[1:])
    # The stack folders come through v3 as well.
    assert provider.fetch()["deploy/DEPLOY_KEY"] == DEPLOY_KEY_VALUE


def media_state(**folders) -> dict:
    state = infisical_state()
    state["projects"][INFISICAL_PROJECT]["prod"] = {
        "/": {"ROOT": "value-root"},
        "/media": {"DB_PASSWORD": "value-db-pw-1"},
        "/media/plex": {"PLEX_TOKEN": "value-plex-token", "DB_PASSWORD": "value-db-pw-plex"},
        "/media/plex/old": {"PLEX_TOKEN": "value-plex-old"},
        "/media/my-app.v2": {"KEY": "value-my-app"},
        "/media/_archive": {"KEY": "value-archive"},
        **folders,
    }
    return state


def test_stack_folders_below_a_path(infisical_fake, infisical_settings, caplog):
    """<path>/<stack> is that stack's; deeper folders and folders no stack can be named after are not used."""
    caplog.set_level(logging.DEBUG, logger="composeflux.secrets")
    infisical_fake.set_state(media_state())
    settings = {**infisical_settings, "INFISICAL_SECRET_PATH": "/media/"}
    assert provider_from_settings(settings).fetch() == {
        "DB_PASSWORD": "value-db-pw-1",
        "plex/PLEX_TOKEN": "value-plex-token",
        "plex/DB_PASSWORD": "value-db-pw-plex",
        "my-app.v2/KEY": "value-my-app",
    }
    assert len(infisical_fake.requests()) == 2  # login, one listing
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert ignored == [
        "infisical: ignoring the secrets in /media/_archive: only /media itself and its folders named after a stack are read",
        "infisical: ignoring the secrets in /media/plex/old: only /media itself and its folders named after a stack are read",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "ignoring" in r.getMessage())
    assert "value-" not in caplog.text


def test_a_configured_path_is_never_a_stack_folder(infisical_fake, infisical_settings, caplog):
    """With / and /media configured, /media is global and /media/plex is plex's (from /media's listing)."""
    caplog.set_level(logging.DEBUG, logger="composeflux.secrets")
    infisical_fake.set_state(media_state())
    settings = {**infisical_settings, "INFISICAL_SECRET_PATH": "/,/media"}
    assert provider_from_settings(settings).fetch() == {
        "ROOT": "value-root",
        "DB_PASSWORD": "value-db-pw-1",
        "plex/PLEX_TOKEN": "value-plex-token",
        "plex/DB_PASSWORD": "value-db-pw-plex",
        "my-app.v2/KEY": "value-my-app",
    }
    # /media's folders are left to /media's listing: the one of / says nothing about them.
    assert "ignoring the secrets in /media/plex " not in caplog.text
    assert "only / itself" not in caplog.text


def test_scoped_secrets_last_path_wins(infisical_fake, infisical_settings):
    state = infisical_state()
    state["projects"][INFISICAL_PROJECT]["prod"] = {
        "/a": {}, "/a/web": {"X": "value-a", "Y": "value-a-only"}, "/b/web": {"X": "value-b"},
    }
    infisical_fake.set_state(state)
    settings = {**infisical_settings, "INFISICAL_SECRET_PATH": "/a,/b"}
    assert provider_from_settings(settings).fetch() == {"web/X": "value-b", "web/Y": "value-a-only"}


def test_invalid_name_in_a_stack_folder_names_the_folder(infisical_fake, infisical_settings):
    infisical_fake.set_state(media_state(**{"/media/plex": {"not-a-name": "value-db-pw-1"}}))
    message = fetch_error({**infisical_settings, "INFISICAL_SECRET_PATH": "/media"})
    assert message == (
        "infisical: secret 'not-a-name' in /media/plex is not a valid variable name "
        "(letters, digits and _, not starting with a digit)"
    )


def test_a_listing_without_secret_paths_is_an_error(infisical_fake, infisical_settings):
    """Which folder a secret is in decides whose it is: without secretPath, nothing is guessed."""
    infisical_fake.set_state(infisical_state(omit_secret_path=True))
    message = fetch_error(infisical_settings)
    assert message == "infisical: secrets in /: unexpected answer (a secret without secretPath)"


def test_empty_project_gives_no_secrets_and_a_warning(infisical_settings, caplog):
    settings = {**infisical_settings, "INFISICAL_PROJECT_ID": INFISICAL_EMPTY_PROJECT}
    assert provider_from_settings(settings).fetch() == {}
    assert "infisical: no secrets in / of environment prod (does that folder exist?)" in caplog.text


def test_login_failure(infisical_settings):
    message = fetch_error({**infisical_settings, "INFISICAL_CLIENT_SECRET": "client-secret-s3cr3t-wrong"})
    assert "login" in message and "HTTP 401" in message and "UnauthorizedError" in message


def test_wrong_project(infisical_settings):
    message = fetch_error({**infisical_settings, "INFISICAL_PROJECT_ID": "no-such-project"})
    assert "HTTP 404" in message and "no-such-project" in message
    message = fetch_error({**infisical_settings, "INFISICAL_PROJECT_ID": INFISICAL_OTHER_PROJECT})
    assert "HTTP 403" in message and "PermissionDenied" in message


def test_wrong_environment(infisical_settings):
    message = fetch_error({**infisical_settings, "INFISICAL_ENVIRONMENT": "staging"})
    assert "HTTP 404" in message and "staging" in message


def test_connection_refused(infisical_settings, closed_port):
    message = fetch_error({**infisical_settings, "INFISICAL_SITE_URL": f"http://{closed_port}"})
    assert message == f"infisical: login (universal auth): cannot connect to http://{closed_port}"


def test_server_that_never_answers_times_out(infisical_settings, silent_server):
    settings = {**infisical_settings, "INFISICAL_SITE_URL": f"http://{silent_server}", "SECRETS_TIMEOUT": "0.5"}
    started = time.monotonic()
    message = fetch_error(settings)
    assert time.monotonic() - started < 5
    assert "no answer from" in message and "within 0.5 s" in message


def test_https_is_verified(infisical_settings, test_ca, tmp_path):
    """An https server with a certificate from an unknown CA is refused without SECRETS_CA_BUNDLE."""
    (tmp_path / "tls").mkdir()
    server = FakeServer("infisical_server.py", infisical_state(), tmp_path / "tls", tls=test_ca[1:])
    try:
        settings = {**infisical_settings, "INFISICAL_SITE_URL": server.url}
        assert "TLS verification" in fetch_error(settings)
        settings["SECRETS_CA_BUNDLE"] = str(test_ca[0])
        assert provider_from_settings(settings).fetch()["DB_PASSWORD"] == "value-db-pw-1"
    finally:
        server.stop()


def test_deploy_key_by_name_and_by_path(infisical_fake, infisical_settings):
    settings = {**infisical_settings, "INFISICAL_SECRET_PATH": "/deploy"}
    key = provider_from_settings(settings).fetch_deploy_key("DEPLOY_KEY")
    assert key == "-----BEGIN KEY-----\nvalue-deploy\n-----END KEY-----\n"
    # Fetched by name: one secret, not the whole folder.
    assert infisical_fake.requests()[-1].startswith("GET /api/v4/secrets/DEPLOY_KEY?")
    assert provider_from_settings(infisical_settings).fetch_deploy_key("/deploy/DEPLOY_KEY") == key


def test_deploy_key_on_v3(infisical_fake, infisical_settings):
    infisical_fake.set_state(infisical_state(v4=False))
    key = provider_from_settings(infisical_settings).fetch_deploy_key("/deploy/DEPLOY_KEY")
    assert "value-deploy" in key
    assert infisical_fake.requests()[-1].startswith("GET /api/v3/secrets/raw/DEPLOY_KEY?")


def test_deploy_key_name_need_not_be_a_variable_name(infisical_fake, infisical_settings):
    state = infisical_state()
    state["projects"][INFISICAL_PROJECT]["prod"]["/deploy"]["git-deploy-key"] = "value-deploy-2"
    infisical_fake.set_state(state)
    assert provider_from_settings(infisical_settings).fetch_deploy_key("/deploy/git-deploy-key") == "value-deploy-2"


def test_missing_deploy_key(infisical_settings):
    with pytest.raises(SecretsError, match=r"infisical: deploy key secret 'NOPE' not found in /"):
        provider_from_settings(infisical_settings).fetch_deploy_key("NOPE")


def test_invalid_secret_name_is_refused(infisical_fake, infisical_settings):
    state = infisical_state()
    state["projects"][INFISICAL_PROJECT]["prod"]["/"] = {"not-a-name": "value-db-pw-1"}
    infisical_fake.set_state(state)
    message = fetch_error(infisical_settings)
    assert "'not-a-name'" in message and "not a valid variable name" in message


def test_nothing_secret_in_logs(infisical_settings, caplog):
    caplog.set_level(logging.DEBUG)
    provider_from_settings({**infisical_settings, "INFISICAL_SECRET_PATH": "/,/app"}).fetch()
    with pytest.raises(SecretsError):
        provider_from_settings({**infisical_settings, "INFISICAL_CLIENT_SECRET": "client-secret-s3cr3t-x"}).fetch()
    assert_no_secrets(caplog.text)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"INFISICAL_CLIENT_ID": ""}, "INFISICAL_CLIENT_ID: required when SECRETS_PROVIDER=infisical"),
        ({"INFISICAL_CLIENT_SECRET": " "}, "INFISICAL_CLIENT_SECRET: required"),
        ({"INFISICAL_PROJECT_ID": ""}, "INFISICAL_PROJECT_ID: required"),
        ({"INFISICAL_ENVIRONMENT": ""}, "INFISICAL_ENVIRONMENT: required"),
        ({"INFISICAL_SITE_URL": "http://infisical.example"}, "INFISICAL_SITE_URL: plain http is only allowed to localhost"),
        ({"INFISICAL_SITE_URL": "ftp://x"}, "INFISICAL_SITE_URL: expected an https:// URL"),
        ({"INFISICAL_SECRET_PATH": "app"}, "INFISICAL_SECRET_PATH: 'app' must start with /"),
        ({"SECRETS_TIMEOUT": "soon"}, "SECRETS_TIMEOUT: expected a number of seconds"),
        ({"SECRETS_CA_BUNDLE": "/nonexistent/ca.pem"}, "SECRETS_CA_BUNDLE: /nonexistent/ca.pem is not a file"),
    ],
)
def test_configuration_errors_name_the_key(infisical_settings, change, message):
    with pytest.raises(ConfigError) as info:
        provider_from_settings({**infisical_settings, **change})
    assert str(info.value).startswith(message)
    assert "client-secret-s3cr3t" not in str(info.value)


def test_keys_are_known_to_the_config_layer():
    assert {"INFISICAL_CLIENT_SECRET", "INFISICAL_SECRET_PATH", "SECRETS_TIMEOUT"} <= all_keys()
