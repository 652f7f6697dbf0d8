"""Fixtures for the secrets providers: fake servers in their own processes, a throwaway CA."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FAKES = Path(__file__).resolve().parent.parent / "fakes"


class FakeServer:
    """A fake started as `python3 FAKE.py STATE.json`; rewrite its state with set_state()."""

    def __init__(self, script: str, state: dict, directory: Path, tls: tuple[Path, Path] | None = None):
        self.state_path = directory / f"{Path(script).stem}-state.json"
        self.set_state(state)
        command = [sys.executable, str(FAKES / script), str(self.state_path)]
        if tls:
            command += ["--tls", str(tls[0]), str(tls[1])]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{script} did not start")
        self.port = int(line.split()[-1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def set_state(self, state: dict) -> None:
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        temporary.replace(self.state_path)  # atomic: the fake never reads half a file

    def requests(self) -> list[str]:
        log = Path(str(self.state_path) + ".log")
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


# --- Infisical ---------------------------------------------------------------------------

INFISICAL_PROJECT = "6f1c2d3e-0000-4000-8000-00000000a001"
INFISICAL_OTHER_PROJECT = "6f1c2d3e-0000-4000-8000-00000000a002"  # exists, identity not a member
INFISICAL_EMPTY_PROJECT = "6f1c2d3e-0000-4000-8000-00000000a003"


def infisical_state(**changes) -> dict:
    state = {
        "identities": {
            "client-id-1": {
                "client_secret": "client-secret-s3cr3t-infisical",
                "projects": [INFISICAL_PROJECT, INFISICAL_EMPTY_PROJECT],
            }
        },
        "projects": {
            INFISICAL_PROJECT: {
                "prod": {
                    "/": {"DB_PASSWORD": "value-db-pw-1", "SHARED": "value-shared-root"},
                    "/app": {"API_KEY": "value-api-key-1", "SHARED": "value-shared-app"},
                    "/deploy": {"DEPLOY_KEY": "-----BEGIN KEY-----\nvalue-deploy\n-----END KEY-----\n"},
                },
                "dev": {"/": {"DB_PASSWORD": "value-dev-db"}},
            },
            INFISICAL_OTHER_PROJECT: {"prod": {"/": {"OTHER": "value-other"}}},
            INFISICAL_EMPTY_PROJECT: {"prod": {"/": {}}},
        },
        "v4": True,
    }
    state.update(changes)
    return state


@pytest.fixture
def infisical_fake(tmp_path):
    server = FakeServer("infisical_server.py", infisical_state(), tmp_path)
    yield server
    server.stop()


@pytest.fixture
def infisical_settings(infisical_fake):
    return {
        "SECRETS_PROVIDER": "infisical",
        "INFISICAL_SITE_URL": infisical_fake.url,
        "INFISICAL_CLIENT_ID": "client-id-1",
        "INFISICAL_CLIENT_SECRET": "client-secret-s3cr3t-infisical",
        "INFISICAL_PROJECT_ID": INFISICAL_PROJECT,
        "INFISICAL_ENVIRONMENT": "prod",
        "SECRETS_TIMEOUT": "5",
    }


# --- Throwaway CA ------------------------------------------------------------------------


def _certificate(subject: str, public_key, issuer_name, signing_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = (
            builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
            )
        )
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """(ca.pem, server cert, server key) made for this test run only."""
    directory = tmp_path_factory.mktemp("ca")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("composeflux test CA", ca_key.public_key(), None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("127.0.0.1", server_key.public_key(), ca_cert.subject, ca_key, ca=False)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


# --- Bitwarden ---------------------------------------------------------------------------

BITWARDEN_ORGANIZATION = "f4e44a7f-1190-432a-9d4a-af96013127cb"
BITWARDEN_PROJECT = "a8f5d1c2-3b4e-4f60-8a1b-000000000b01"
BITWARDEN_OTHER_PROJECT = "a8f5d1c2-3b4e-4f60-8a1b-000000000b02"  # exists, no access
BITWARDEN_EMPTY_PROJECT = "a8f5d1c2-3b4e-4f60-8a1b-000000000b03"
BITWARDEN_DEPLOY_KEY_ID = "5e0c8a11-7d2f-4c3b-9e4a-00000000d001"


class BitwardenAccount:
    """A machine account: its access token and the fake's state that goes with it."""

    def __init__(self):
        self.id = str(uuid.uuid4())
        self.client_secret = "bw-client-s3cr3t-" + secrets.token_hex(8)
        self.seed = base64.b64encode(os.urandom(16)).decode()
        self.access_token = f"0.{self.id}.{self.client_secret}:{self.seed}"
        self.org_key = base64.b64encode(os.urandom(64)).decode()

    def state(self, secrets_list: list[dict] | None = None, **changes) -> dict:
        if secrets_list is None:
            secrets_list = [
                {"id": str(uuid.uuid4()), "key": "DB_PASSWORD", "value": "bw-value-db-pw", "project_id": BITWARDEN_PROJECT},
                {"id": str(uuid.uuid4()), "key": "API_KEY", "value": "bw-value-api-key", "project_id": BITWARDEN_PROJECT},
                {"id": str(uuid.uuid4()), "key": "OTHER", "value": "bw-value-other", "project_id": BITWARDEN_OTHER_PROJECT},
                {
                    "id": BITWARDEN_DEPLOY_KEY_ID,
                    "key": "DEPLOY_KEY",
                    "value": "-----BEGIN KEY-----\nbw-deploy\n-----END KEY-----\n",
                    "project_id": BITWARDEN_PROJECT,
                },
            ]
        state = {
            "organization_id": BITWARDEN_ORGANIZATION,
            "org_key": self.org_key,
            "machine_accounts": {
                self.id: {
                    "client_secret": self.client_secret,
                    "seed": self.seed,
                    "projects": [BITWARDEN_PROJECT, BITWARDEN_EMPTY_PROJECT],
                }
            },
            "projects": {BITWARDEN_PROJECT: "homelab", BITWARDEN_OTHER_PROJECT: "other", BITWARDEN_EMPTY_PROJECT: "empty"},
            "secrets": secrets_list,
            "tampered": [],
        }
        state.update(changes)
        return state


@pytest.fixture
def bitwarden_account():
    return BitwardenAccount()


@pytest.fixture
def bitwarden_fake(tmp_path, test_ca, bitwarden_account):
    server = FakeServer("bitwarden_server.py", bitwarden_account.state(), tmp_path, tls=test_ca[1:])
    yield server
    server.stop()


@pytest.fixture
def bitwarden_settings(bitwarden_fake, bitwarden_account, test_ca):
    return {
        "SECRETS_PROVIDER": "bitwarden",
        "BITWARDEN_ACCESS_TOKEN": bitwarden_account.access_token,
        "BITWARDEN_PROJECT_ID": BITWARDEN_PROJECT,
        "BITWARDEN_API_URL": f"{bitwarden_fake.url}/api",
        "BITWARDEN_IDENTITY_URL": f"{bitwarden_fake.url}/identity",
        "SECRETS_CA_BUNDLE": str(test_ca[0]),
        "SECRETS_TIMEOUT": "5",
    }


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections (kernel backlog) but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def closed_port():
    """A port nothing listens on: connections are refused."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"127.0.0.1:{port}"
