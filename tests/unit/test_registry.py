"""composeflux.registry without a network: reference parsing and normalization (as the docker
CLI's), RepoDigests matching, WWW-Authenticate parsing, the docker config and credential
helpers, and the request flow (media types, Bearer and Basic, caching, failures) against a fake
transport mounted on a requests.Session, so every byte a request would send can be read."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import requests.adapters

from composeflux.registry import (
    HUB_REGISTRY,
    MANIFEST_MEDIA_TYPES,
    Challenge,
    Credentials,
    DockerConfig,
    Helper,
    Reference,
    Registry,
    RegistryProblem,
    Remote,
    local_digests,
    parse_reference,
    parse_www_authenticate,
    read_docker_config,
    run_credential_helper,
)

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


# --- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        ("nginx", HUB_REGISTRY, "library/nginx", "latest", None),
        ("nginx:1.27", HUB_REGISTRY, "library/nginx", "1.27", None),
        ("docker.io/nginx", HUB_REGISTRY, "library/nginx", "latest", None),
        ("docker.io/library/nginx:latest", HUB_REGISTRY, "library/nginx", "latest", None),
        ("index.docker.io/nginx", HUB_REGISTRY, "library/nginx", "latest", None),
        ("grafana/grafana:11.0.0", HUB_REGISTRY, "grafana/grafana", "11.0.0", None),
        ("library/a/b", HUB_REGISTRY, "library/a/b", "latest", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("localhost:5000/a/b:t", "localhost:5000", "a/b", "t", None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
        ("ghcr.io/org/app:v1.2.3-rc.1", "ghcr.io", "org/app", "v1.2.3-rc.1", None),
        ("a.b/c@" + DIGEST, "a.b", "c", None, DIGEST),
        ("a.b/c:1@" + DIGEST, "a.b", "c", "1", DIGEST),
        ("nginx@" + DIGEST, HUB_REGISTRY, "library/nginx", None, DIGEST),
        ("[::1]:5000/x", "[::1]:5000", "x", "latest", None),
        ("Registry.Example/x", "Registry.Example", "x", "latest", None),  # the domain may have capitals
        ("Foo/bar", "Foo", "bar", "latest", None),  # an uppercase first component is a registry, as for docker
        ("a/b_c__d-e--f.g", HUB_REGISTRY, "a/b_c__d-e--f.g", "latest", None),
        ("x:Latest_1", HUB_REGISTRY, "library/x", "Latest_1", None),  # a tag may have capitals
    ],
)
def test_references_are_normalized_as_the_docker_cli_does(image, registry, repository, tag, digest):
    reference = parse_reference(image)
    assert reference == Reference(registry, repository, tag, digest)
    assert reference.pinned is (digest is not None)
    assert parse_reference(str(reference)) == reference


@pytest.mark.parametrize(
    ("image", "familiar"),
    [
        ("docker.io/library/nginx", "nginx:latest"),
        ("grafana/grafana:1", "grafana/grafana:1"),
        ("registry-1.docker.io/nginx", "registry-1.docker.io/nginx:latest"),
        ("localhost:5000/a@" + DIGEST, "localhost:5000/a@" + DIGEST),
        ("q.io/a:1@" + DIGEST, "q.io/a:1@" + DIGEST),
    ],
)
def test_str_is_the_familiar_form(image, familiar):
    assert str(parse_reference(image)) == familiar


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("", "empty"),
        (" nginx", "blanks"),
        ("NGINX", "lowercase"),
        ("example.com/Org/app", "lowercase"),
        ("nginx:", ""),
        ("nginx:-bad", ""),
        ("nginx:" + "t" * 129, ""),
        ("nginx@sha256:" + "a" * 40, "64 lowercase hex"),
        ("nginx@sha256:abc", ""),  # the grammar wants 32 hex digits at least
        ("nginx@sha256:" + "A" * 64, "lowercase hex"),
        ("nginx@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("nginx@sha256:", ""),
        ("a" * 64, "image ID"),
        ("-x/y", ""),
        ("a//b", ""),
        ("a/b/", ""),
        ("x.io/" + "a" * 251, "255"),
        ("exa_mple.com:5000/x", ""),
        ("a b", ""),
        ("ngïnx", ""),
    ],
)
def test_invalid_references_are_rejected(image, why):
    with pytest.raises(ValueError, match=why):
        parse_reference(image)


def test_local_digests_match_the_repository_under_every_spelling():
    hub = parse_reference("nginx:1.27")
    repo_digests = [
        "nginx@" + DIGEST,
        "docker.io/library/nginx@" + OTHER,
        "mirror.example/library/nginx@sha256:" + "c" * 64,  # another registry
        "nginx-other@sha256:" + "d" * 64,  # another repository
        "<none>@<none>",
        "nginx:1.27",  # a tag, not a digest
    ]
    assert local_digests(repo_digests, hub) == {DIGEST, OTHER}
    private = parse_reference("127.0.0.1:5000/a/b:t")
    assert local_digests(["127.0.0.1:5000/a/b@" + DIGEST, "127.0.0.1:5001/a/b@" + OTHER], private) == {DIGEST}
    assert local_digests([], private) == set()


# --- WWW-Authenticate ----------------------------------------------------------------------------


def test_a_docker_hub_bearer_challenge():
    value = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'
    parameters = {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull"}
    assert parse_www_authenticate(value) == [Challenge("bearer", parameters)]


def test_basic_several_challenges_escapes_and_unquoted_values():
    assert parse_www_authenticate('Basic realm="basic-realm"') == [Challenge("basic", {"realm": "basic-realm"})]
    value = 'Basic realm="a \\"quoted\\" realm", charset=UTF-8, BEARER realm = "https://t/token" ,error="insufficient_scope"'
    assert parse_www_authenticate(value) == [
        Challenge("basic", {"realm": 'a "quoted" realm', "charset": "UTF-8"}),
        Challenge("bearer", {"realm": "https://t/token", "error": "insufficient_scope"}),
    ]
    assert parse_www_authenticate("Negotiate dGVzdA==, Basic realm=x") == [Challenge("negotiate", {}), Challenge("basic", {"realm": "x"})]
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate('realm="x"') == []  # a parameter without a scheme
    assert parse_www_authenticate('Bearer realm="unterminated') == [Challenge("bearer", {})]


# --- the docker config ---------------------------------------------------------------------------


def write_config(directory: Path, document: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document))
    return directory


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auths_entries_in_every_form_the_cli_writes(tmp_path):
    config = read_docker_config(write_config(tmp_path, {"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hub:pass")},
        "ghcr.io": {"username": "u", "password": "p"},
        "https://quay.io/v2/": {"auth": b64("q:w")},
        "token.example": {"identitytoken": "refresh-me"},
        "empty.example": {},
        "nul.example": {"auth": b64("n:secret\x00\x00")},
    }}))
    assert config.lookup(HUB_REGISTRY) == Credentials("hubuser", "hub:pass")  # split at the first colon
    assert config.lookup("ghcr.io") == Credentials("u", "p")
    assert config.lookup("quay.io") == Credentials("q", "w")  # the key's scheme and path do not matter
    assert config.lookup("token.example") == Credentials("", "", "refresh-me")
    assert config.lookup("empty.example") is None  # what `docker login` leaves next to a credsStore
    assert config.lookup("nul.example") == Credentials("n", "secret")
    assert config.lookup("elsewhere.example") is None
    assert "hub:pass" not in repr(config) + repr(config.lookup(HUB_REGISTRY)) + repr(config.lookup("token.example"))


def test_docker_hub_under_its_other_names(tmp_path):
    for key in ("docker.io", "index.docker.io", "https://index.docker.io/v1/"):
        config = read_docker_config(write_config(tmp_path / key.replace("/", "_"), {"auths": {key: {"auth": b64("a:b")}}}))
        assert config.lookup(HUB_REGISTRY) == Credentials("a", "b")


def test_helpers_come_before_the_store_and_the_store_before_auths(tmp_path):
    config = read_docker_config(write_config(tmp_path, {
        "auths": {"ghcr.io": {"auth": b64("a:b")}, "q.io": {"auth": b64("c:d")}},
        "credHelpers": {"ghcr.io": "gh", "https://index.docker.io/v1/": "hub"},
        "credsStore": "pass",
    }))
    assert config.lookup("ghcr.io") == Helper("gh", "ghcr.io")
    assert config.lookup(HUB_REGISTRY) == Helper("hub", "https://index.docker.io/v1/")
    assert config.lookup("q.io") == Helper("pass", "q.io")  # the store holds every registry's credentials
    assert DockerConfig(None, {}, {}, "pass").lookup(HUB_REGISTRY) == Helper("pass", "https://index.docker.io/v1/")


def test_no_config_directory_or_file_is_anonymous(tmp_path):
    assert read_docker_config(None).lookup("ghcr.io") is None
    assert read_docker_config(tmp_path / "missing").lookup("ghcr.io") is None


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"auths": []}', '"auths" is not a JSON object'),
        ('{"credsStore": 3}', '"credsStore" is not a JSON string'),
    ],
)
def test_a_broken_config_file_is_a_problem(tmp_path, document, why):
    (tmp_path / "config.json").write_text(document)
    with pytest.raises(RegistryProblem, match=why):
        read_docker_config(tmp_path)


@pytest.mark.parametrize("entry", [{"auth": "!!!secret!!!"}, {"auth": b64("no-colon-secret")}, {"auth": 3}, "x"])
def test_a_broken_auth_entry_is_a_problem_without_its_value(tmp_path, entry):
    config = read_docker_config(write_config(tmp_path, {"auths": {"r.io": entry}}))
    with pytest.raises(RegistryProblem, match=r"r\.io") as raised:
        config.lookup("r.io")
    assert "secret" not in str(raised.value)


def helper_script(directory: Path, name: str, body: str) -> Helper:
    path = directory / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return Helper(name, "r.io")


@pytest.fixture
def on_path(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return directory


def test_credential_helpers_answers(on_path, monkeypatch):
    echo = 'read -r server; printf \'{"ServerURL":"%s","Username":"%s","Secret":"s3cret"}\' "$server" "$USERNAME_FOR_TEST"\n'
    helper = helper_script(on_path, "cfxunit", echo)
    monkeypatch.setenv("USERNAME_FOR_TEST", "bot")
    assert run_credential_helper(helper, timeout=5) == Credentials("bot", "s3cret")
    monkeypatch.setenv("USERNAME_FOR_TEST", "<token>")  # Secret is an identity token
    assert run_credential_helper(helper, timeout=5) == Credentials("", "", "s3cret")
    not_found = helper_script(on_path, "cfxnone", "echo 'credentials not found in native keychain'; exit 1\n")
    assert run_credential_helper(not_found, timeout=5) is None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("echo 'leaked-s3cret' >&2; exit 3\n", "failed \\(exit 3\\)"),
        ("echo 'leaked-s3cret not json'\n", "did not answer with its JSON object"),
        ("sleep 30 & sleep 30\n", "did not answer within 0.3 s"),
    ],
)
def test_a_failing_helper_is_a_problem_quoting_nothing_it_printed(on_path, body, why):
    helper = helper_script(on_path, "cfxbad", body)
    start = time.monotonic()
    with pytest.raises(RegistryProblem, match=why) as raised:
        run_credential_helper(helper, timeout=0.3)
    assert time.monotonic() - start < 5  # killed with its group: the background sleep holds no pipe open
    assert "s3cret" not in str(raised.value)


def test_a_missing_helper_is_a_problem(on_path):
    with pytest.raises(RegistryProblem, match=r"docker-credential-cfxabsent .* is not installed"):
        run_credential_helper(Helper("cfxabsent", "r.io"), timeout=1)


# --- the request flow, against a fake transport ---------------------------------------------------

Handler = Callable[[requests.PreparedRequest], tuple[int, dict[str, str], bytes]]


class FakeTransport(requests.adapters.BaseAdapter):
    """Answers each request with handler(request) -> (status, headers, body); keeps them all."""

    def __init__(self, handler: Handler):
        super().__init__()
        self.handler = handler
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        self.seen.append(request)
        request.verify = verify  # type: ignore[attr-defined]  # kept for the assertions
        result = self.handler(request)
        if isinstance(result, Exception):
            raise result
        status, headers, body = result
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = body
        response.url = request.url or ""
        response.request = request
        return response

    def close(self):
        pass


def registry_with(handler: Handler, docker_config: Path | None = None, **options) -> tuple[Registry, FakeTransport]:
    transport = FakeTransport(handler)
    session = requests.Session()
    session.mount("https://", transport)
    session.mount("http://", transport)
    return Registry(docker_config, session=session, **options), transport


def hub_like(tokens_issued: list[dict], *, user="hubuser", password="hubpass") -> Handler:
    """Docker Hub's protocol: registry-1.docker.io wants a Bearer token from auth.docker.io for
    the repository's pull scope; the token service accepts anonymous requests or this login."""

    def handle(request):
        url = urllib.parse.urlsplit(request.url)
        if url.hostname == "auth.docker.io":
            query = urllib.parse.parse_qs(url.query)
            authorization = request.headers.get("Authorization")
            if authorization and authorization != "Basic " + b64(f"{user}:{password}"):
                return 401, {}, b'{"details":"incorrect username or password"}'
            token = f"tok-{len(tokens_issued)}"
            tokens_issued.append({"token": token, "query": query, "authorization": authorization})
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": token, "expires_in": 300}).encode()
        repository = url.path.removeprefix("/v2/").rsplit("/manifests/", 1)[0]
        issued = {entry["token"]: entry for entry in tokens_issued}
        bearer = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        if bearer not in issued or issued[bearer]["query"]["scope"] != [f"repository:{repository}:pull"]:
            challenge = f'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:{repository}:pull"'
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Docker-Content-Digest": DIGEST}, b""

    return handle


def test_the_head_asks_for_every_manifest_type_and_reads_the_digest():
    registry, transport = registry_with(lambda request: (200, {"Docker-Content-Digest": DIGEST}, b""))
    remote = registry.head(parse_reference("ghcr.io/org/app:1"))
    assert (remote.digest, remote.problem) == (DIGEST, None)
    (request,) = transport.seen
    assert (request.method, request.url) == ("HEAD", "https://ghcr.io/v2/org/app/manifests/1")
    assert [part.strip() for part in request.headers["Accept"].split(",")] == list(MANIFEST_MEDIA_TYPES)
    assert request.verify not in (False, None)  # type: ignore[attr-defined]  # True, or $REQUESTS_CA_BUNDLE
    assert "Authorization" not in request.headers
    assert registry.requests_made == 1


def test_docker_hub_anonymously_one_token_per_repository_cached_per_scope():
    issued: list[dict] = []
    registry, transport = registry_with(hub_like(issued))
    images = ["nginx", "nginx:latest", "docker.io/library/nginx", "redis:7", "nginx:1.27"]
    results = registry.check(parse_reference(image) for image in images)
    assert {str(reference): remote.digest for reference, remote in results.items()} == {
        "nginx:latest": DIGEST, "redis:7": DIGEST, "nginx:1.27": DIGEST,
    }
    assert all(entry["authorization"] is None for entry in issued)  # anonymous
    assert [entry["query"]["scope"] for entry in issued] == [["repository:library/nginx:pull"], ["repository:library/redis:pull"]]
    assert issued[0]["query"]["service"] == ["registry.docker.io"]
    # nginx: 401, token, HEAD; redis: token at once (the challenge is known), HEAD; nginx:1.27: the cached token.
    assert registry.requests_made == 6 == len(transport.seen)


def test_docker_hub_with_the_configs_credentials(tmp_path):
    issued: list[dict] = []
    config = write_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")}}})
    registry, _ = registry_with(hub_like(issued), config)
    assert registry.head(parse_reference("hubuser/private:1")).digest == DIGEST
    assert issued[0]["authorization"] == "Basic " + b64("hubuser:hubpass")
    assert issued[0]["query"]["account"] == ["hubuser"]


def test_a_wrong_hub_password_is_refused_without_the_password(tmp_path):
    config = write_config(tmp_path, {"auths": {"docker.io": {"username": "hubuser", "password": "wrong-s3cret"}}})
    registry, _ = registry_with(hub_like([]), config)
    remote = registry.head(parse_reference("hubuser/private"))
    assert remote.digest is None
    assert remote.problem == "authentication refused (HTTP 401 from the token service https://auth.docker.io)"
    assert "s3cret" not in repr(remote)


def test_an_identity_token_is_exchanged_with_the_oauth2_post(tmp_path):
    posts = []

    def handle(request):
        if request.method == "POST":
            posts.append(urllib.parse.parse_qs(request.body))
            return 200, {}, b'{"access_token": "at-1"}'
        if request.headers.get("Authorization") == "Bearer at-1":
            return 200, {"Docker-Content-Digest": DIGEST}, b""
        return 401, {"WWW-Authenticate": 'Bearer realm="https://id.example/token",service="reg"'}, b""

    config = write_config(tmp_path, {"auths": {"reg.example": {"identitytoken": "refresh-s3cret"}}})
    registry, _ = registry_with(handle, config)
    assert registry.head(parse_reference("reg.example/a/b")).digest == DIGEST
    assert posts == [{
        "grant_type": ["refresh_token"], "refresh_token": ["refresh-s3cret"], "client_id": ["composeflux"],
        "service": ["reg"], "scope": ["repository:a/b:pull"],
    }]


def test_basic_credentials_are_sent_up_front_once_the_registry_asked_for_them(tmp_path):
    def handle(request):
        if request.headers.get("Authorization") == "Basic " + b64("u:p"):
            return 200, {"Docker-Content-Digest": DIGEST}, b""
        return 401, {"WWW-Authenticate": 'Basic realm="basic-realm"'}, b""

    registry, _ = registry_with(handle, write_config(tmp_path, {"auths": {"r.io": {"auth": b64("u:p")}}}))
    results = registry.check([parse_reference("r.io/a"), parse_reference("r.io/b"), parse_reference("r.io/c:2")])
    assert {remote.digest for remote in results.values()} == {DIGEST}
    assert registry.requests_made == 4  # the first meets the 401; the others send the credentials at once


def test_wrong_basic_credentials_are_refused_once_per_reference(tmp_path):
    config = write_config(tmp_path, {"auths": {"r.io": {"auth": b64("u:s3cret")}}})
    registry, _ = registry_with(lambda request: (401, {"WWW-Authenticate": 'Basic realm="x"'}, b""), config)
    first, second = registry.head(parse_reference("r.io/a")), registry.head(parse_reference("r.io/b"))
    assert first.problem == second.problem == "authentication refused (HTTP 401)"
    assert registry.requests_made == 3  # a: 401, with credentials 401; b: with credentials 401, no retry


def test_no_credentials_for_a_registry_that_wants_them():
    registry, _ = registry_with(lambda request: (401, {"WWW-Authenticate": 'Basic realm="x"'}, b""))
    assert registry.head(parse_reference("r.io/a")).problem == (
        "authentication required (HTTP 401): no credentials for r.io (no docker config given), or no such repository"
    )
    unknown, _ = registry_with(lambda request: (401, {"WWW-Authenticate": 'Negotiate realm="x"'}, b""))
    assert "does not speak (negotiate)" in (unknown.head(parse_reference("r.io/a")).problem or "")


def test_a_failing_helper_makes_only_its_registrys_images_unknown(tmp_path, on_path):
    helper_script(on_path, "cfxbroken", "echo 'Secret: leaked-s3cret' >&2; exit 2\n")

    def handle(request):
        if request.url.startswith("https://private.example/"):
            return 401, {"WWW-Authenticate": 'Basic realm="x"'}, b""
        return 200, {"Docker-Content-Digest": DIGEST}, b""

    registry, _ = registry_with(handle, write_config(tmp_path, {"credHelpers": {"private.example": "cfxbroken"}}))
    results = registry.check(parse_reference(image) for image in ("private.example/a", "private.example/b", "public.example/c"))
    problems = {str(reference): remote.problem for reference, remote in results.items()}
    assert problems == {
        "private.example/a:latest": "credential helper docker-credential-cfxbroken failed (exit 2)",
        "private.example/b:latest": "credential helper docker-credential-cfxbroken failed (exit 2)",
        "public.example/c:latest": None,
    }


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"Retry-After": "60"}, "HTTP 429 (rate limited; retry after 60 s)"),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, "HTTP 429 (rate limited; retry after 0 s)"),
        ({}, "HTTP 429 (rate limited)"),
    ],
)
def test_rate_limits_say_when_to_retry(headers, problem):
    registry, _ = registry_with(lambda request: (429, headers, b""))
    assert registry.head(parse_reference("nginx")).problem == problem


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ((404, {}, b""), "no such tag or repository (HTTP 404)"),
        ((403, {}, b""), "access denied (HTTP 403)"),
        ((503, {}, b""), "HTTP 503 from https://r.io"),
        ((200, {}, b""), "the registry sent no Docker-Content-Digest for the tag"),
        ((200, {"Docker-Content-Digest": "md5:abc"}, b""), "the registry sent an invalid Docker-Content-Digest ('md5:abc')"),
        (requests.exceptions.ConnectTimeout(), "registry unreachable: no answer from https://r.io within 10 s"),
        (requests.exceptions.ReadTimeout(), "registry unreachable: no answer from https://r.io within 10 s"),
        (requests.exceptions.ConnectionError(), "registry unreachable: cannot connect to https://r.io"),
        (requests.exceptions.SSLError(), "TLS verification of https://r.io failed (an unknown CA, or a wrong certificate)"),
    ],
)
def test_failures_are_problems_never_exceptions(answer, problem):
    registry, _ = registry_with(lambda request: answer)
    assert registry.head(parse_reference("r.io/a")) == Remote(parse_reference("r.io/a"), None, problem)


def test_pinned_references_cost_nothing():
    registry, transport = registry_with(lambda request: (200, {"Docker-Content-Digest": DIGEST}, b""))
    pinned = parse_reference("nginx:1@" + OTHER)
    assert registry.check([pinned, pinned]) == {}
    assert registry.head(pinned).digest == OTHER
    assert transport.seen == []


def test_insecure_registries_try_unverified_https_then_plain_http():
    def handle(request):
        if request.url.startswith("https://"):
            return requests.exceptions.SSLError()
        return 200, {"Docker-Content-Digest": DIGEST}, b""

    registry, transport = registry_with(handle, insecure=["127.0.0.0/8", "http://lan.example:5000"])
    for image in ("127.0.0.1:5000/a", "127.0.0.1:5000/b", "localhost:5001/c", "lan.example:5000/d"):
        assert registry.head(parse_reference(image)).digest == DIGEST
    assert [(request.url, request.verify) for request in transport.seen] == [  # type: ignore[attr-defined]
        ("https://127.0.0.1:5000/v2/a/manifests/latest", False),
        ("http://127.0.0.1:5000/v2/a/manifests/latest", False),
        ("http://127.0.0.1:5000/v2/b/manifests/latest", False),  # the scheme that answered, from then on
        ("https://localhost:5001/v2/c/manifests/latest", False),
        ("http://localhost:5001/v2/c/manifests/latest", False),
        ("https://lan.example:5000/v2/d/manifests/latest", False),
        ("http://lan.example:5000/v2/d/manifests/latest", False),
    ]
    by_name, transport = registry_with(handle, insecure=["10.0.0.5", "10.0.0.6:5000"])  # names, not networks: the port counts
    assert by_name.head(parse_reference("10.0.0.5/a")).digest == by_name.head(parse_reference("10.0.0.6:5000/a")).digest == DIGEST
    for image in ("10.0.0.5:5000/a", "10.0.0.6/a"):
        assert (by_name.head(parse_reference(image)).problem or "").startswith("TLS verification of https://10.0.0.")
    secure, transport = registry_with(handle, insecure=["127.0.0.0/8"])
    assert secure.head(parse_reference("10.0.0.1:5000/a")).problem == (
        "TLS verification of https://10.0.0.1:5000 failed (an unknown CA, or a wrong certificate)"
    )
    assert len(transport.seen) == 1  # never plain http for a registry that is not insecure


def test_an_insecure_registry_that_times_out_is_not_tried_again_over_http():
    registry, transport = registry_with(lambda request: requests.exceptions.ConnectTimeout(), insecure=["127.0.0.1:5000"])
    assert registry.head(parse_reference("127.0.0.1:5000/a")).problem == (
        "registry unreachable: no answer from https://127.0.0.1:5000 within 10 s"
    )
    assert len(transport.seen) == 1


def test_the_ca_bundle_is_given_to_every_verified_request():
    registry, transport = registry_with(lambda request: (200, {"Docker-Content-Digest": DIGEST}, b""), ca_bundle="/etc/ca.pem")
    registry.head(parse_reference("r.io/a"))
    assert transport.seen[0].verify == "/etc/ca.pem"  # type: ignore[attr-defined]


def test_a_plain_http_token_service_is_refused_for_a_secure_registry(tmp_path):
    registry, transport = registry_with(
        lambda request: (401, {"WWW-Authenticate": 'Bearer realm="http://auth.r.io/token"'}, b""),
        write_config(tmp_path, {"auths": {"r.io": {"auth": b64("u:s3cret")}}}),
    )
    assert registry.head(parse_reference("r.io/a")).problem == (
        "the registry's token service http://auth.r.io is plain http, and the registry is not insecure"
    )
    assert len(transport.seen) == 1  # the credentials went nowhere


def test_an_expired_token_is_fetched_again(monkeypatch):
    issued: list[dict] = []
    registry, _ = registry_with(hub_like(issued))
    assert registry.head(parse_reference("nginx")).digest == DIGEST
    now = time.monotonic()
    monkeypatch.setattr("composeflux.registry.time.monotonic", lambda: now + 301)
    assert registry.head(parse_reference("nginx:2")).digest == DIGEST
    assert len(issued) == 2
