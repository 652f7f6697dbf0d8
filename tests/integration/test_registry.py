"""composeflux.registry against real registries: Debian's docker-registry (distribution 2.8) on
127.0.0.1, once anonymous over plain http, once with htpasswd (Basic) over TLS with a throw-away
CA, filled by the real `docker push` (tests/registry.py). The digests are checked against what
the engine itself records when it pulls."""

from __future__ import annotations

import base64
import json
import secrets
import stat
import time
from pathlib import Path

import pytest

from composeflux.registry import Registry, local_digests, parse_reference
from tests.registry import RegistryServer, start_registry

pytestmark = pytest.mark.docker

USER = "cfx-bot"
PASSWORD = "pw-" + secrets.token_hex(12)
LOOPBACK = ("127.0.0.0/8",)  # what dockerd always treats as insecure


@pytest.fixture(scope="module")
def plain(tmp_path_factory, docker_engine):
    with start_registry(tmp_path_factory.mktemp("plain"), tls=False, htpasswd=None) as server:
        yield server


@pytest.fixture(scope="module")
def private(tmp_path_factory, docker_engine):
    with start_registry(tmp_path_factory.mktemp("private"), tls=True, htpasswd=(USER, PASSWORD)) as server:
        yield server


def client(server: RegistryServer, docker_config: Path | None = None) -> Registry:
    """How composeflux would reach this server: the plain one as an insecure registry, the TLS
    one verified with its CA and logged in with `docker login`'s config unless told otherwise."""
    if server.ca_file is None:
        return Registry(docker_config, insecure=LOOPBACK, timeout=5)
    return Registry(docker_config or server.docker_config, ca_bundle=str(server.ca_file), timeout=5)


def config_dir(tmp_path: Path, document: dict) -> Path:
    directory = tmp_path / f"docker-{secrets.token_hex(3)}"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(document))
    return directory


@pytest.mark.parametrize("kind", ["plain", "private"])
def test_the_digest_of_a_tag_is_what_a_pull_records_and_moves_with_a_new_push(request, kind):
    server: RegistryServer = request.getfixturevalue(kind)
    pushed = server.push("app/moving", "stable")
    reference = parse_reference(server.image("app/moving", "stable"))
    registry = client(server)
    first = registry.head(reference)
    assert (first.digest, first.problem) == (pushed, None)
    repo_digests = server.pull("app/moving", "stable")
    assert local_digests(repo_digests, reference) == {first.digest}

    again = server.push("app/moving", "stable")  # a new image behind the same tag
    second = registry.head(reference)
    assert second.digest == again != first.digest
    assert second.digest not in local_digests(repo_digests, reference)  # what `update` will see: the tag moved


def test_pinned_references_are_skipped_and_one_reference_costs_one_head(plain, private):
    plain_digest = plain.push("app/many", "1")
    private.push("app/many", "1")
    spellings = [plain.image("app/many", "1")] * 3 + [f"{plain.host}/app/many:1"] * 2
    pinned = parse_reference(f"{plain.host}/app/many:1@{plain_digest}")
    registry = client(plain)
    results = registry.check([*map(parse_reference, spellings), pinned])
    assert list(results) == [parse_reference(spellings[0])]
    assert results[parse_reference(spellings[0])].digest == plain_digest
    assert registry.requests_made == 2  # the https attempt an insecure registry gets first (as from dockerd), then the HEAD

    registry = client(private)
    results = registry.check([parse_reference(private.image("app/many", "1"))] * 5)
    assert [remote.problem for remote in results.values()] == [None]
    assert registry.requests_made == 2  # the HEAD meeting the 401, the HEAD with the credentials
    registry.check([parse_reference(private.image("app/many", "missing"))] * 5)
    assert registry.requests_made == 3  # once the registry has asked, its credentials go with the first request


def test_a_wrong_password_is_refused_and_not_repeated(private, tmp_path):
    private.push("app/secret", "1")
    wrong = "wrong-" + secrets.token_hex(8)
    config = config_dir(tmp_path, {"auths": {private.host: {"auth": base64.b64encode(f"{USER}:{wrong}".encode()).decode()}}})
    remote = client(private, config).head(parse_reference(private.image("app/secret", "1")))
    assert (remote.digest, remote.problem) == (None, "authentication refused (HTTP 401)")
    assert wrong not in repr(remote) and PASSWORD not in repr(remote)


def test_no_credentials_for_the_private_registry(private, tmp_path):
    remote = client(private, tmp_path / "empty").head(parse_reference(private.image("app/secret", "1")))
    assert remote.digest is None
    assert remote.problem and remote.problem.startswith("authentication required (HTTP 401): no credentials for 127.0.0.1:")


def test_a_missing_tag_and_a_missing_repository(plain, private):
    plain.push("app/here", "1")
    for server in (plain, private):
        registry = client(server)
        for image in (server.image("app/here", "no-such-tag"), server.image("no/such/repository", "1")):
            assert registry.head(parse_reference(image)).problem == "no such tag or repository (HTTP 404)"


def test_a_stopped_registry_is_unreachable(tmp_path, docker_engine):
    server = start_registry(tmp_path, tls=False, htpasswd=None)
    server.stop()
    start = time.monotonic()
    remote = client(server).head(parse_reference(server.image("app/gone", "1")))
    assert remote.digest is None
    assert remote.problem == f"registry unreachable: cannot connect to http://{server.host}"  # https refused, then http
    assert time.monotonic() - start < 5


def test_tls_is_verified_unless_the_registry_is_insecure(private):
    private.push("app/tls", "1")
    reference = parse_reference(private.image("app/tls", "1"))
    unverified = Registry(private.docker_config, timeout=5).head(reference)
    assert unverified.problem == f"TLS verification of https://{private.host} failed (an unknown CA, or a wrong certificate)"
    as_dockerd = Registry(private.docker_config, insecure=LOOPBACK, timeout=5)  # https without verification, as dockerd for 127.0.0.1
    assert as_dockerd.head(reference).problem is None
    assert as_dockerd.requests_made == 2  # no plain-http attempt: https answered (401, then the HEAD with credentials)


def test_a_config_with_auth_in_base64(private, tmp_path):
    digest = private.push("app/b64", "1")
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = config_dir(tmp_path, {"auths": {f"https://{private.host}/v2/": {"auth": auth}}})  # a key with a scheme and a path
    assert client(private, config).head(parse_reference(private.image("app/b64", "1"))).digest == digest


def write_helper(directory: Path, name: str, script: str) -> None:
    path = directory / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def helper_bin(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}:/usr/local/bin:/usr/bin:/bin")
    return directory


def test_credential_helpers_and_the_store(private, tmp_path, helper_bin):
    digest = private.push("app/helped", "1")
    asked = tmp_path / "asked"
    answer = json.dumps({"ServerURL": private.host, "Username": USER, "Secret": PASSWORD})
    write_helper(helper_bin, "cfxtest", f"read -r server; echo \"$1 $server\" >> {asked}; echo '{answer}'\n")
    reference = parse_reference(private.image("app/helped", "1"))
    for document in ({"credHelpers": {private.host: "cfxtest"}}, {"credsStore": "cfxtest", "auths": {private.host: {}}}):
        registry = client(private, config_dir(tmp_path, document))
        assert registry.check([reference, parse_reference(private.image("app/helped", "other"))])[reference].digest == digest
    assert asked.read_text().splitlines() == [f"get {private.host}"] * 2  # once per registry and check

    write_helper(helper_bin, "cfxfail", f"echo 'cannot unlock {PASSWORD}' >&2; exit 1\n")
    remote = client(private, config_dir(tmp_path, {"credHelpers": {private.host: "cfxfail"}})).head(reference)
    assert (remote.digest, remote.problem) == (None, "credential helper docker-credential-cfxfail failed (exit 1)")
