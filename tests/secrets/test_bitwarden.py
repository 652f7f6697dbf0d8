"""The bitwarden provider: its crypto pinned by Bitwarden's published test vectors, then the
whole protocol against the fake Bitwarden Secrets Manager (a separate process, over HTTPS)."""

import base64
import json
import logging
import time
import uuid

import pytest

from composeflux.errors import ConfigError, SecretsError
from composeflux.secrets import provider_from_settings, split_scopes
from composeflux.secrets.bitwarden import CryptoError, SymmetricKey, decrypt_enc_string, parse_access_token
from tests.secrets.conftest import (
    BITWARDEN_DEPLOY_KEY_ID,
    BITWARDEN_EMPTY_PROJECT,
    BITWARDEN_OTHER_PROJECT,
    BITWARDEN_PROJECT,
)

# Published by Bitwarden for its SDK tests (bitwarden/sdk-sm, crates/fake-server: the fake access
# token, the login's encrypted_payload and encrypted secrets, with the plaintexts the SDK's own
# tests expect in languages/python/test/crud.py).
VECTOR_TOKEN = "0.ec2c1d46-6a4b-4751-a310-af9601317f2d.C2IgxjjLF7qSshsbwe8JGcbM075YXw:X8vbvA0bduihIDe/qrzIQQ=="
VECTOR_PAYLOAD = (
    "2.E9fE8+M/VWMfhhim1KlCbQ==|eLsHR484S/tJbIkM6spnG/HP65tj9A6Tba7kAAvUp+rYuQmGLixiOCfMsqt5OvBctDfvvr/Aes"
    "Bu7cZimPLyOEhqEAjn52jF0eaI38XZfeOG2VJl0LOf60Wkfh3ryAMvfvLj3G4ZCNYU8sNgoC2+IQ==|lNApuCQ4Pyakfo/wwuuajWNaEX/2MW8/3rjXB/V7n+k="
)
VECTOR_CIPHERS = {
    "2.N2aCz0PU6Ga9YfJlvisnwQ==|3M8dF2PFub9FP/SbgdenSQ==|KbaUQSb5IjVwhSbXDbCJbKXGBaCHEKDArrhvQDr9/QM=": "FERRIS",
    "2.WYqmVCB2wZc08tkzNOCmTw==|FAsVol/nJnnDk3/mp7z6QQ==|uPJOCC8iAbMzz4t60c35iZm8KzWKMn0ueCVJZlfmTdY=": "btw",
    "2.DmcNJqtzi+nPWY9gJR4nMw==|IEkn2x+C0YLmnQ/qm0EfOcMGcRZDkexFkDW9BPw3wRQ=|TxxTeBKqL0QYLT+89F0KfI81BbBryXnNNAjU9DGKuuY=": (
        "Production Environment"
    ),
}


def vector_org_key() -> SymmetricKey:
    token = parse_access_token(VECTOR_TOKEN)
    payload = json.loads(decrypt_enc_string(VECTOR_PAYLOAD, token.encryption_key))
    return SymmetricKey.from_bytes(base64.b64decode(payload["encryptionKey"]))


def test_published_vectors_decrypt():
    token = parse_access_token(VECTOR_TOKEN)
    assert token.access_token_id == "ec2c1d46-6a4b-4751-a310-af9601317f2d"
    assert token.client_secret == "C2IgxjjLF7qSshsbwe8JGcbM075YXw"
    org_key = vector_org_key()
    for cipher, plaintext in VECTOR_CIPHERS.items():
        assert decrypt_enc_string(cipher, org_key).decode() == plaintext


def flip(cipher: str, piece: int) -> str:
    """The EncString with one bit of its iv (0), data (1) or mac (2) flipped."""
    enc_type, rest = cipher.split(".", 1)
    parts = rest.split("|")
    raw = bytearray(base64.b64decode(parts[piece]))
    raw[0] ^= 1
    parts[piece] = base64.b64encode(bytes(raw)).decode()
    return f"{enc_type}." + "|".join(parts)


@pytest.mark.parametrize("piece", [0, 1, 2])
def test_any_tampering_is_a_mac_failure(piece):
    cipher = next(iter(VECTOR_CIPHERS))
    with pytest.raises(CryptoError, match="MAC mismatch"):
        decrypt_enc_string(flip(cipher, piece), vector_org_key())


def test_wrong_key_is_a_mac_failure():
    wrong = SymmetricKey.from_bytes(bytes(64))
    with pytest.raises(CryptoError, match="MAC mismatch"):
        decrypt_enc_string(next(iter(VECTOR_CIPHERS)), wrong)


@pytest.mark.parametrize(
    "cipher",
    ["0.aGVsbG8=|aGVsbG8=", "2.abc", "2.!!|!!|!!", "2.AAAA|AAAA|AAAA", "hello"],
)
def test_malformed_enc_strings(cipher):
    with pytest.raises(CryptoError):
        decrypt_enc_string(cipher, vector_org_key())


@pytest.mark.parametrize(
    "token", ["", "1.ec2c1d46-6a4b-4751-a310-af9601317f2d.x:X8vbvA0bduihIDe/qrzIQQ==", "0.not-a-uuid.x:X8vbvA0bduihIDe/qrzIQQ==",
              "0.ec2c1d46-6a4b-4751-a310-af9601317f2d.x:c2hvcnQ=", "0.ec2c1d46-6a4b-4751-a310-af9601317f2d.x"]
)
def test_malformed_access_tokens_are_config_errors(token):
    settings = {"SECRETS_PROVIDER": "bitwarden", "BITWARDEN_ACCESS_TOKEN": token, "BITWARDEN_PROJECT_ID": BITWARDEN_PROJECT}
    with pytest.raises(ConfigError, match=r"^BITWARDEN_ACCESS_TOKEN: ") as info:
        provider_from_settings(settings)
    if token:
        assert token not in str(info.value)


# --- against the fake server ---------------------------------------------------------------


def fetch_error(settings, values=("bw-value", "bw-client-s3cr3t", "bw-deploy")) -> str:
    with pytest.raises(SecretsError) as info:
        provider_from_settings(settings).fetch()
    message = str(info.value)
    assert message.startswith("bitwarden: ")
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    for value in values:
        assert value not in message
    return message


def test_reads_the_project(bitwarden_fake, bitwarden_settings):
    assert provider_from_settings(bitwarden_settings).fetch() == {
        "DB_PASSWORD": "bw-value-db-pw",
        "API_KEY": "bw-value-api-key",
        "DEPLOY_KEY": "-----BEGIN KEY-----\nbw-deploy\n-----END KEY-----\n",
    }
    assert [line.split("?")[0] for line in bitwarden_fake.requests()] == [
        "POST /identity/connect/token",
        f"GET /api/projects/{BITWARDEN_PROJECT}/secrets",
        "POST /api/secrets/get-by-ids",
    ]


def test_empty_project(bitwarden_settings):
    settings = {**bitwarden_settings, "BITWARDEN_PROJECT_ID": BITWARDEN_EMPTY_PROJECT}
    assert provider_from_settings(settings).fetch() == {}


def test_project_without_access(bitwarden_settings):
    message = fetch_error({**bitwarden_settings, "BITWARDEN_PROJECT_ID": BITWARDEN_OTHER_PROJECT})
    assert f"listing project {BITWARDEN_OTHER_PROJECT}: no such project" in message


def test_login_failure(bitwarden_settings, bitwarden_account):
    wrong = bitwarden_account.access_token.replace(bitwarden_account.client_secret, "bw-client-s3cr3t-wrong")
    message = fetch_error({**bitwarden_settings, "BITWARDEN_ACCESS_TOKEN": wrong})
    assert message == "bitwarden: login (machine account access token): HTTP 400: invalid_client"


def test_wrong_encryption_key_in_token(bitwarden_settings, bitwarden_account):
    """Right id and secret, wrong key part: the payload's MAC fails, nothing is decrypted."""
    wrong_seed = base64.b64encode(bytes(16)).decode()
    token = bitwarden_account.access_token.rsplit(":", 1)[0] + ":" + wrong_seed
    message = fetch_error({**bitwarden_settings, "BITWARDEN_ACCESS_TOKEN": token})
    assert "cannot decrypt the organization key: MAC mismatch" in message


def test_tampered_secret_is_an_error_not_garbage(bitwarden_fake, bitwarden_account, bitwarden_settings):
    state = bitwarden_account.state()
    tampered = state["secrets"][1]
    state["tampered"] = [tampered["id"]]
    bitwarden_fake.set_state(state)
    message = fetch_error(bitwarden_settings)
    assert message == f"bitwarden: secret {tampered['id']}: cannot decrypt: MAC mismatch (altered data or wrong key)"


def test_duplicate_names_are_refused(bitwarden_fake, bitwarden_account, bitwarden_settings):
    state = bitwarden_account.state()
    state["secrets"][1]["key"] = "DB_PASSWORD"
    bitwarden_fake.set_state(state)
    assert "two secrets named 'DB_PASSWORD'" in fetch_error(bitwarden_settings)


def test_invalid_names_are_refused(bitwarden_fake, bitwarden_account, bitwarden_settings):
    state = bitwarden_account.state()
    state["secrets"][0]["key"] = "db password"
    bitwarden_fake.set_state(state)
    assert "is named 'db password', which is not a valid variable name" in fetch_error(bitwarden_settings)


def test_stack_scoped_names_come_back_as_they_are(bitwarden_fake, bitwarden_account, bitwarden_settings):
    """STACK/NAME is a secret of that stack; it may sit next to a global secret of the same NAME."""
    state = bitwarden_account.state()
    state["secrets"] += [
        {"id": str(uuid.uuid4()), "key": "plex/DB_PASSWORD", "value": "bw-value-plex-db", "project_id": BITWARDEN_PROJECT},
        {"id": str(uuid.uuid4()), "key": "my-app.v2/TOKEN", "value": "bw-value-token", "project_id": BITWARDEN_PROJECT},
        {"id": str(uuid.uuid4()), "key": "web/OTHER", "value": "bw-value-other-2", "project_id": BITWARDEN_OTHER_PROJECT},
    ]
    bitwarden_fake.set_state(state)
    secrets = provider_from_settings(bitwarden_settings).fetch()
    assert secrets["DB_PASSWORD"] == "bw-value-db-pw"
    assert secrets["plex/DB_PASSWORD"] == "bw-value-plex-db"
    assert secrets["my-app.v2/TOKEN"] == "bw-value-token"
    assert "web/OTHER" not in secrets  # another project's, as for global names
    assert split_scopes(secrets).stacks == {"plex": {"DB_PASSWORD": "bw-value-plex-db"}, "my-app.v2": {"TOKEN": "bw-value-token"}}


@pytest.mark.parametrize(
    "key, problem",
    [
        ("plex/db/PASSWORD", "has more than one / (expected NAME or STACK/NAME)"),
        ("/PASSWORD", "has no valid stack name before the /"),
        ("-plex/PASSWORD", "has no valid stack name before the /"),
        ("my plex/PASSWORD", "has no valid stack name before the /"),
        ("plex/", "has no valid variable name after the /"),
        ("plex/db-password", "has no valid variable name after the /"),
    ],
)
def test_malformed_scoped_names_are_refused(bitwarden_fake, bitwarden_account, bitwarden_settings, key, problem):
    state = bitwarden_account.state()
    state["secrets"][0]["key"] = key
    bitwarden_fake.set_state(state)
    message = fetch_error(bitwarden_settings)
    assert message.startswith(f"bitwarden: secret {state['secrets'][0]['id']} is named {key!r}, which {problem}")


def test_organization_check(bitwarden_settings):
    settings = {**bitwarden_settings, "BITWARDEN_ORGANIZATION_ID": "f4e44a7f-1190-432a-9d4a-af96013127cb"}
    assert "DB_PASSWORD" in provider_from_settings(settings).fetch()
    settings["BITWARDEN_ORGANIZATION_ID"] = "00000000-0000-4000-8000-000000000000"
    assert "not BITWARDEN_ORGANIZATION_ID" in fetch_error(settings)


def test_deploy_key_by_id(bitwarden_fake, bitwarden_settings):
    provider = provider_from_settings(bitwarden_settings)
    assert provider.fetch_deploy_key(BITWARDEN_DEPLOY_KEY_ID) == "-----BEGIN KEY-----\nbw-deploy\n-----END KEY-----\n"
    assert bitwarden_fake.requests()[-1] == f"GET /api/secrets/{BITWARDEN_DEPLOY_KEY_ID}"
    # One login per provider object, i.e. per sync.
    provider.fetch()
    assert sum("connect/token" in line for line in bitwarden_fake.requests()) == 1
    with pytest.raises(SecretsError, match="no such secret"):
        provider.fetch_deploy_key("00000000-0000-4000-8000-000000000000")
    with pytest.raises(ConfigError, match="GIT_DEPLOY_KEY_SECRET_REF: expected a Bitwarden secret id"):
        provider.fetch_deploy_key("DEPLOY_KEY")


def test_https_needs_the_ca(bitwarden_settings):
    settings = {k: v for k, v in bitwarden_settings.items() if k != "SECRETS_CA_BUNDLE"}
    assert "TLS verification of https://127.0.0.1:" in fetch_error(settings)


def test_unreachable(bitwarden_settings, closed_port, silent_server):
    settings = {**bitwarden_settings, "BITWARDEN_IDENTITY_URL": f"https://{closed_port}/identity"}
    assert f"cannot connect to https://{closed_port}" in fetch_error(settings)
    settings = {**bitwarden_settings, "BITWARDEN_IDENTITY_URL": f"https://{silent_server}", "SECRETS_TIMEOUT": "0.5"}
    started = time.monotonic()
    assert "within 0.5 s" in fetch_error(settings)
    assert time.monotonic() - started < 5


def test_nothing_secret_in_logs(bitwarden_fake, bitwarden_account, bitwarden_settings, caplog):
    caplog.set_level(logging.DEBUG)
    provider_from_settings(bitwarden_settings).fetch()
    state = bitwarden_account.state()
    state["tampered"] = [s["id"] for s in state["secrets"]]
    bitwarden_fake.set_state(state)
    fetch_error(bitwarden_settings)
    for value in ("bw-value", "bw-deploy", bitwarden_account.client_secret, bitwarden_account.seed):
        assert value not in caplog.text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"BITWARDEN_PROJECT_ID": ""}, "BITWARDEN_PROJECT_ID: required when SECRETS_PROVIDER=bitwarden"),
        ({"BITWARDEN_PROJECT_ID": "homelab"}, "BITWARDEN_PROJECT_ID: expected a UUID"),
        ({"BITWARDEN_ORGANIZATION_ID": "acme"}, "BITWARDEN_ORGANIZATION_ID: expected a UUID"),
        ({"BITWARDEN_API_URL": "http://bitwarden.example/api"}, "BITWARDEN_API_URL: plain http is only allowed"),
        ({"BITWARDEN_IDENTITY_URL": "https://user:pw@x/identity"}, "BITWARDEN_IDENTITY_URL: the URL must not contain credentials"),
        ({"GIT_DEPLOY_KEY_SECRET_REF": "DEPLOY_KEY"}, "GIT_DEPLOY_KEY_SECRET_REF: expected a Bitwarden secret id (UUID)"),
    ],
)
def test_configuration_errors_name_the_key(bitwarden_settings, change, message):
    with pytest.raises(ConfigError) as info:
        provider_from_settings({**bitwarden_settings, **change})
    assert str(info.value).startswith(message)
