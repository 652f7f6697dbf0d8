"""Which image tags moved: a registry's current manifest digest for a tag, read without pulling.

For `composeflux update` (issue 12, detection): a service's image has a newer version behind
the same tag when the digest the registry has for the tag now is not among the local image's
RepoDigests. Reading it costs one HEAD request per distinct image reference (plus what
authentication needs); nothing is downloaded, and Docker Hub does not count HEAD requests
against its pull rate limit.

References are parsed and normalized as the docker CLI does (distribution's reference grammar
and its docker.io/library defaults). Authentication is what `docker pull` does: the registry's
401 challenge, a Bearer token from its token service or Basic credentials, read from the Docker
CLI's config.json and its credential helpers. Transport security is dockerd's: https with
verified TLS, except for the registries the caller names insecure (as dockerd's
insecure-registries, where 127.0.0.0/8 always is): https without verification, then plain http.

Nothing here raises for a registry's failure: each reference gets a Remote with a digest or a
problem saying why the digest is unknown. A problem is made of our own words, status codes and
origins only, never of an exception's text, a response body or a header the server sent back
(any of which can echo a request): no password, token or Authorization header reaches one.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import warnings
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import composeflux

if TYPE_CHECKING:
    import requests  # imported by Registry when one is made: parsing references needs no HTTP library

HUB_REGISTRY = "registry-1.docker.io"  # where Docker Hub's images are served from
HUB_CONFIG_KEY = "https://index.docker.io/v1/"  # Docker Hub's key in config.json (auths, credHelpers)
HUB_NAMES = ("docker.io", "index.docker.io")  # the names the CLI normalizes to Docker Hub
DEFAULT_TAG = "latest"
NAME_MAX = 255  # distribution's limit on a repository name, registry included

# What the HEAD accepts, newest first. A registry answers with the manifest (or index) a pull of
# the tag gets and its digest; without the list types it could answer with a converted manifest
# whose digest matches nothing a pull records.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

TOKEN_LIFETIME = 60  # seconds a token lives when the token service does not say (the spec's default)
TOKEN_MARGIN = 5  # seconds before its expiry a cached token is no longer used

# distribution/reference's grammar (reference/regexp.go), ASCII only.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?", re.ASCII)
_REMAINDER = re.compile(
    rf"(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?",
    re.ASCII,
)
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}  # the algorithms go-digest knows
_DIGEST_VALUE = re.compile(r"(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*[ \t]*(?=,|$)")  # a challenge's token68: a whole item, not name=value


# --- references --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reference:
    """An image reference, normalized: two spellings of one image (nginx, docker.io/library/nginx:latest)
    are equal, so they are checked once."""

    registry: str  # "registry-1.docker.io" for Docker Hub, else host[:port] as written
    repository: str  # "library/nginx", "org/app"
    tag: str | None  # "latest" when neither a tag nor a digest is given
    digest: str | None  # "sha256:..." when pinned by digest

    @property
    def pinned(self) -> bool:
        """Pinned by digest: the image cannot change behind it (a tag next to a digest is ignored, as by docker)."""
        return self.digest is not None

    def __str__(self) -> str:
        """The familiar form (nginx:latest, org/app:1, 127.0.0.1:5000/a/b@sha256:...); parse_reference reads it back equal."""
        if self.registry != HUB_REGISTRY:
            name = f"{self.registry}/{self.repository}"
        elif "/" not in self.repository:  # written as registry-1.docker.io/x: no library/ default there
            name = f"{HUB_REGISTRY}/{self.repository}"
        elif self.repository.startswith("library/") and self.repository.count("/") == 1:
            name = self.repository.removeprefix("library/")
        else:
            name = self.repository
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(image: str) -> Reference:
    """Parse an image reference as the docker CLI does (distribution's ParseNormalizedNamed).

    The first path component is the registry when it has a dot or a colon, is `localhost`, or has
    an uppercase letter; otherwise the image is on Docker Hub, where a one-component name is in
    library/ (nginx -> registry-1.docker.io/library/nginx). No tag and no digest means :latest;
    name:tag@digest is pinned by the digest. Raises ValueError, saying why, for what docker
    rejects: an uppercase repository, a bad tag or digest, a bare 64-hex image ID, a name of more
    than 255 characters.
    """
    if not image or image != image.strip():
        raise ValueError(f"invalid image reference {image!r}: empty, or blanks around it")
    if _IMAGE_ID.fullmatch(image):
        raise ValueError(f"invalid image reference {image!r}: a 64-hex image ID, not a repository name")
    slash = image.find("/")
    first = image[:slash]
    if slash == -1 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = "docker.io", image
    else:
        domain, remainder = first, image[slash + 1 :]
    if domain in HUB_NAMES:
        domain = "docker.io"
        if "/" not in remainder:
            remainder = "library/" + remainder
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"invalid image reference {image!r}: {domain!r} is not a registry host[:port]")
    repository = re.split(r"[:@]", remainder, maxsplit=1)[0]
    if repository != repository.lower():
        raise ValueError(f"invalid image reference {image!r}: the repository name must be lowercase")
    match = _REMAINDER.fullmatch(remainder)
    if not match:
        raise ValueError(f"invalid image reference {image!r}")
    path, tag, digest = match.group("path"), match.group("tag"), match.group("digest")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise ValueError(f"invalid image reference {image!r}: the name is longer than {NAME_MAX} characters")
    if digest is not None:
        algorithm, _, encoded = digest.partition(":")
        if algorithm not in _DIGEST_LENGTHS:
            raise ValueError(f"invalid image reference {image!r}: unsupported digest algorithm {algorithm!r}")
        length = _DIGEST_LENGTHS[algorithm]
        if len(encoded) != length or encoded != encoded.lower():
            raise ValueError(f"invalid image reference {image!r}: a {algorithm} digest is {length} lowercase hex digits")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(HUB_REGISTRY if domain == "docker.io" else domain, path, tag, digest)


def local_digests(repo_digests: Iterable[str], reference: Reference) -> set[str]:
    """The digests among an image's RepoDigests ("name@sha256:...", as `docker image inspect`
    lists them) that belong to this reference's repository on its registry, both normalized the
    same way (nginx@sha256:x belongs to registry-1.docker.io/library/nginx). The engine records
    one per repository the image was pulled from or pushed to; entries that do not parse (such
    as <none>@<none>) are skipped."""
    found = set()
    for entry in repo_digests:
        if "@" not in entry:
            continue
        try:
            parsed = parse_reference(entry)
        except ValueError:
            continue
        if parsed.digest and (parsed.registry, parsed.repository) == (reference.registry, reference.repository):
            found.add(parsed.digest)
    return found


# --- the answer --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Remote:
    """What the registry says about one reference's tag now."""

    reference: Reference
    digest: str | None  # the tag's current manifest digest (Docker-Content-Digest); None when unknown
    problem: str | None  # why it is unknown (None when digest is known); never a credential


class RegistryProblem(Exception):
    """Why a digest is unknown: raised by the config and helper readers and inside Registry,
    which turns it into Remote.problem (it never leaves head()). `fallback`: plain http may
    still answer (a TLS or connection failure, not a timeout), for insecure registries."""

    def __init__(self, message: str, *, fallback: bool = False):
        super().__init__(message)
        self.fallback = fallback


# --- authentication: challenges and the docker config ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: the scheme (lowercased) and its parameters
    (names lowercased, values unquoted)."""

    scheme: str
    parameters: Mapping[str, str]


def parse_www_authenticate(value: str) -> list[Challenge]:
    """The challenges in a WWW-Authenticate value (RFC 9110 section 11.6.1; several headers arrive
    joined by commas): `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",
    scope="repository:library/nginx:pull"` -> [Challenge("bearer", {"realm": ..., ...})]. A
    token68 (as in `Basic dXNlcg==`) is skipped; parsing stops at anything malformed."""
    challenges: list[Challenge] = []
    parameters: dict[str, str] = {}
    position = 0
    while True:
        while position < len(value) and value[position] in " \t,":
            position += 1
        token = _TOKEN.match(value, position)
        if not token:
            break
        position = token.end()
        after = position
        while after < len(value) and value[after] in " \t":
            after += 1
        if after < len(value) and value[after] == "=" and challenges:
            position = after + 1
            while position < len(value) and value[position] in " \t":
                position += 1
            quoted = _QUOTED.match(value, position)
            if quoted:
                parameters[token.group().lower()] = re.sub(r"\\(.)", r"\1", quoted.group(1))
                position = quoted.end()
                continue
            plain = _TOKEN.match(value, position)
            if not plain:
                break
            parameters[token.group().lower()] = plain.group()
            position = plain.end()
        elif after < len(value) and value[after] == "=":
            break  # a parameter before any scheme
        else:
            parameters = {}
            challenges.append(Challenge(token.group().lower(), parameters))
            token68 = _TOKEN68.match(value, after)
            if token68:
                position = token68.end()
    return challenges


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A login for one registry. An identity token (docker's OAuth refresh token) replaces the
    password for token services. Never in a repr."""

    username: str
    password: str = dataclasses.field(repr=False)
    identity_token: str = dataclasses.field(default="", repr=False)


@dataclasses.dataclass(frozen=True)
class Helper:
    """A credential helper to run for a registry: docker-credential-<name> get, server on stdin."""

    name: str
    server: str


@dataclasses.dataclass(frozen=True)
class DockerConfig:
    """The parts of the Docker CLI's config.json that say where a registry's credentials are."""

    path: Path | None
    auths: Mapping[str, object] = dataclasses.field(default_factory=dict, repr=False)
    cred_helpers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    creds_store: str = ""

    def lookup(self, registry: str) -> Credentials | Helper | None:
        """Where this registry's credentials are, in the CLI's order: a credHelpers entry for it,
        else the credsStore (for every registry), else its "auths" entry (decoded here); None:
        anonymous. Docker Hub's key is https://index.docker.io/v1/ (its other names are tried
        too); another registry's is host[:port], or any key naming that host with a scheme or a
        path (https://host/v2/), as the CLI's ConvertToHostname allows. Raises RegistryProblem for an
        "auth" that is not base64 of user:password."""
        keys = config_keys(registry)
        for key in keys:
            if self.cred_helpers.get(key):
                return Helper(self.cred_helpers[key], key)
        if self.creds_store:
            return Helper(self.creds_store, keys[0])
        entry = next((self.auths[key] for key in keys if key in self.auths), None)
        if entry is None:
            hosts = {_config_hostname(key) for key in keys}
            entry = next((value for key, value in self.auths.items() if _config_hostname(key) in hosts), None)
        return None if entry is None else _decode_auth(entry, registry)


def config_keys(registry: str) -> list[str]:
    """The config.json keys that stand for this registry, the CLI's own first."""
    if registry == HUB_REGISTRY:
        return [HUB_CONFIG_KEY, "index.docker.io", "docker.io", HUB_REGISTRY]
    return [registry]


def _config_hostname(key: str) -> str:
    """The CLI's ConvertToHostname: https://host:port/v1/ -> host:port."""
    for scheme in ("http://", "https://"):
        key = key.removeprefix(scheme)
    return key.split("/", 1)[0]


def _decode_auth(entry: object, registry: str) -> Credentials | None:
    """An "auths" entry as the CLI reads it: "auth" (base64 of user:password, split at the first
    colon, NULs trimmed) wins over "username"/"password"; "identitytoken" replaces the password."""
    if not isinstance(entry, dict):
        raise RegistryProblem(f"the docker config's entry for {registry} is not an object")
    auth, identity = entry.get("auth") or "", entry.get("identitytoken") or ""
    username, password = entry.get("username") or "", entry.get("password") or ""
    if not all(isinstance(value, str) for value in (auth, identity, username, password)):
        raise RegistryProblem(f"the docker config's entry for {registry} has a value that is not a string")
    if auth:
        try:
            decoded = base64.b64decode(auth + "=" * (-len(auth) % 4), validate=True).decode()
        except ValueError:
            decoded = ""
        username, colon, password = decoded.partition(":")
        if not colon:
            raise RegistryProblem(f'the docker config\'s "auth" for {registry} is not base64 of user:password')
        password = password.strip("\x00")
    if identity:
        return Credentials(username, "", identity)
    if username or password:
        return Credentials(username, password)
    return None  # an empty entry, as `docker login` leaves next to a credsStore


def read_docker_config(directory: Path | None) -> DockerConfig:
    """<directory>/config.json (the directory is what DOCKER_CONFIG names). No directory or no
    file: no credentials. Raises RegistryProblem for a file that cannot be read or is not the JSON
    object the CLI writes."""
    if directory is None:
        return DockerConfig(None)
    path = directory / "config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DockerConfig(path)
    except OSError as exc:
        raise RegistryProblem(f"cannot read the docker config {path}: {exc.strerror}") from None
    except ValueError:
        raise RegistryProblem(f"cannot read the docker config {path}: not valid JSON") from None
    if not isinstance(document, dict):
        raise RegistryProblem(f"cannot read the docker config {path}: not a JSON object")
    for key, kind in (("auths", dict), ("credHelpers", dict), ("credsStore", str)):
        if document.get(key) is not None and not isinstance(document[key], kind):
            raise RegistryProblem(f'cannot read the docker config {path}: "{key}" is not a JSON {"object" if kind is dict else "string"}')
    helpers = {key: value for key, value in (document.get("credHelpers") or {}).items() if isinstance(value, str)}
    return DockerConfig(path, document.get("auths") or {}, helpers, document.get("credsStore") or "")


def run_credential_helper(helper: Helper, timeout: float) -> Credentials | None:
    """`docker-credential-<name> get` with the server on stdin, as the CLI runs it: its stdout is
    {"ServerURL", "Username", "Secret"}; Username "<token>" means Secret is an identity token.
    "credentials not found" (exit 1) is anonymous. Killed with its process group after `timeout`
    seconds. Raises RegistryProblem naming the helper, never quoting what it printed (a secret, maybe)."""
    program = f"docker-credential-{helper.name}"
    executable = shutil.which(program)
    if not executable:
        raise RegistryProblem(f"credential helper {program} (named in the docker config for {helper.server}) is not installed")
    try:
        process = subprocess.Popen(
            [executable, "get"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: a timeout kills what it started too
        )
    except OSError as exc:
        raise RegistryProblem(f"cannot run credential helper {program}: {exc.strerror}") from None
    try:
        stdout, stderr = process.communicate(helper.server, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RegistryProblem(f"credential helper {program} did not answer within {timeout:g} s") from None
    if process.returncode != 0:
        if "credentials not found" in (stdout + stderr).lower():
            return None
        raise RegistryProblem(f"credential helper {program} failed (exit {process.returncode})")
    try:
        answer = json.loads(stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("Secret", ""), str) or not isinstance(answer.get("Username", ""), str):
        raise RegistryProblem(f"credential helper {program} did not answer with its JSON object")
    username, secret = answer.get("Username") or "", answer.get("Secret") or ""
    if not secret:
        return None
    if username == "<token>":
        return Credentials("", "", secret)
    return Credentials(username, secret)


# --- the client ---------------------------------------------------------------------------------


class Registry:
    """Reads tags' current digests from their registries, authenticated as `docker pull` is.

    One object serves one check: it caches the docker config, each registry's credentials (a
    helper runs once per registry), its last challenge (later requests send their credentials or
    token at once instead of meeting a 401 first), the scheme an insecure registry answered on,
    and Bearer tokens per (registry, scope) until they expire. Not for use from several threads.
    """

    def __init__(
        self,
        docker_config: Path | None,
        *,
        timeout: float = 10,
        ca_bundle: str | None = None,
        insecure: Collection[str] = (),
        session: requests.Session | None = None,
    ):
        """docker_config: the directory holding config.json (as DOCKER_CONFIG); None: no
        credentials at all. timeout: seconds per connection attempt and per read. ca_bundle: the
        CA certificates TLS is verified with (default: the system's). insecure: registries
        (host[:port] exactly, or a CIDR such as 10.0.0.0/8, matched against IP-address hosts and
        localhost; hostnames are not resolved) tried over https without verification, then plain
        http, as dockerd's insecure-registries (the caller should include 127.0.0.0/8, which
        dockerd always adds)."""
        self.docker_config = docker_config
        self.timeout = timeout
        # Passed with each request: a Session.verify would lose to $REQUESTS_CA_BUNDLE.
        self.verify: str | bool = ca_bundle or True
        import requests

        self.session = session or requests.Session()
        self.requests_made = 0  # HTTP requests sent, redirects and failed attempts included
        self._insecure_names: set[str] = set()
        self._insecure_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in insecure:
            entry = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
            if "/" in entry:  # as dockerd: a CIDR has a slash; anything else is a registry name (10.0.0.5 is not 10.0.0.5:5000)
                try:
                    self._insecure_networks.append(ipaddress.ip_network(entry, strict=False))
                    continue
                except ValueError:
                    pass
            self._insecure_names.add(entry)
        self._config: DockerConfig | RegistryProblem | None = None
        self._credentials: dict[str, Credentials | RegistryProblem | None] = {}
        self._challenges: dict[str, Challenge] = {}
        self._schemes: dict[str, str] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    # -- the public calls --

    def check(self, references: Iterable[Reference]) -> dict[Reference, Remote]:
        """head() of each distinct reference, in order; pinned references are skipped (their
        image cannot move) and are not in the result. References are distinct by (registry,
        repository, tag): spellings of one image are equal once parsed."""
        results: dict[Reference, Remote] = {}
        for reference in references:
            if not reference.pinned and reference not in results:
                results[reference] = self.head(reference)
        return results

    def head(self, reference: Reference) -> Remote:
        """The tag's current manifest digest: HEAD /v2/<repository>/manifests/<tag>, its
        Docker-Content-Digest. On a 401 it authenticates as the challenge asks and retries once.
        A pinned reference's answer is its own digest, with no request. Never raises."""
        if reference.digest is not None:
            return Remote(reference, reference.digest, None)
        if not reference.tag:
            return Remote(reference, None, "no tag and no digest")
        try:
            return Remote(reference, self._head(reference), None)
        except RegistryProblem as problem:
            return Remote(reference, None, str(problem))

    # -- the manifest request --

    def _head(self, reference: Reference) -> str:
        path = f"/v2/{reference.repository}/manifests/{reference.tag}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        authorization = self._known_authorization(reference)
        response = self._registry_request(reference.registry, path, {**headers, **authorization})
        if response.status_code == 401:
            challenge = self._challenge(response, reference.registry)
            credentials = self._credentials_for(reference.registry)
            if challenge.scheme == "basic" and authorization.get("Authorization", "").startswith("Basic "):
                raise RegistryProblem(self._refused(reference.registry, challenge, credentials))  # these very credentials were just refused
            authorization = self._authorization(reference, challenge, credentials, fresh=True)
            response = self._registry_request(reference.registry, path, {**headers, **authorization})
            if response.status_code == 401:
                raise RegistryProblem(self._refused(reference.registry, self._challenge(response, reference.registry), credentials))
        return self._digest(response)

    def _digest(self, response: requests.Response) -> str:
        status = response.status_code
        if status == 200:
            digest = response.headers.get("Docker-Content-Digest", "").strip()
            if not digest:
                raise RegistryProblem("the registry sent no Docker-Content-Digest for the tag")
            if not _DIGEST_VALUE.fullmatch(digest):
                raise RegistryProblem(f"the registry sent an invalid Docker-Content-Digest ({digest[:80]!r})")
            return digest
        if status == 404:
            raise RegistryProblem("no such tag or repository (HTTP 404)")
        if status == 403:
            raise RegistryProblem("access denied (HTTP 403)")
        if status == 429:
            raise RegistryProblem(_rate_limited(response))
        raise RegistryProblem(f"HTTP {status} from {_origin(response.url)}")

    def _registry_request(self, registry: str, path: str, headers: Mapping[str, str]) -> requests.Response:
        """HEAD on the registry: https, verified; for an insecure registry https without
        verification and, when that fails to connect or to shake hands, plain http, as dockerd
        does; the scheme that answered is used from then on."""
        if not self._is_insecure(registry):
            return self._send("HEAD", f"https://{registry}{path}", "registry", headers=headers, verify=self.verify)
        scheme = self._schemes.get(registry)
        if scheme:
            return self._send("HEAD", f"{scheme}://{registry}{path}", "registry", headers=headers, verify=False)
        try:
            response = self._send("HEAD", f"https://{registry}{path}", "registry", headers=headers, verify=False)
            self._schemes[registry] = "https"
        except RegistryProblem as problem:
            if not problem.fallback:
                raise
            response = self._send("HEAD", f"http://{registry}{path}", "registry", headers=headers, verify=False)
            self._schemes[registry] = "http"
        return response

    def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        verify: str | bool,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> requests.Response:
        """One request (redirects followed, as docker does: requests drops the Authorization
        header when one leaves the host and never re-sends `auth`); transport failures become a
        RegistryProblem about `what` ("registry", "token service"), with nothing of the
        exception's text."""
        import requests

        self.requests_made += 1
        try:
            with warnings.catch_warnings():
                # verify=False is asked for (an insecure registry): urllib3's warning would only repeat that.
                warnings.filterwarnings("ignore", message="Unverified HTTPS request")
                response = self.session.request(
                    method,
                    url,
                    headers={"User-Agent": f"composeflux/{composeflux.__version__}", **(headers or {})},
                    params=params,
                    data=data,
                    auth=auth,
                    timeout=self.timeout,
                    verify=verify,
                    allow_redirects=True,
                )
        except requests.exceptions.SSLError:
            message = f"TLS verification of {_origin(url)} failed (an unknown CA, or a wrong certificate)"
            raise RegistryProblem(message, fallback=True) from None
        except requests.exceptions.Timeout:
            raise RegistryProblem(f"{what} unreachable: no answer from {_origin(url)} within {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError:
            raise RegistryProblem(f"{what} unreachable: cannot connect to {_origin(url)}", fallback=True) from None
        except requests.exceptions.RequestException as exc:
            raise RegistryProblem(f"{what} unreachable: the request to {_origin(url)} failed ({type(exc).__name__})") from None
        self.requests_made += len(response.history)
        return response

    def _is_insecure(self, registry: str) -> bool:
        if registry in self._insecure_names:
            return True
        host = urllib.parse.urlsplit(f"//{registry}").hostname or ""
        addresses = ["127.0.0.1", "::1"] if host == "localhost" else [host]
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            if any(ip.version == network.version and ip in network for network in self._insecure_networks):
                return True
        return False

    # -- authentication --

    def _challenge(self, response: requests.Response, registry: str) -> Challenge:
        """The challenge of a 401 to answer (Bearer before Basic), remembered for the registry."""
        challenges = {c.scheme: c for c in parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))}
        challenge = challenges.get("bearer") or challenges.get("basic")
        if challenge is None:
            schemes = ", ".join(sorted(challenges)) or "none"
            raise RegistryProblem(f"authentication required (HTTP 401) with a scheme composeflux does not speak ({schemes})")
        self._challenges[registry] = challenge
        return challenge

    def _known_authorization(self, reference: Reference) -> dict[str, str]:
        """What to send with the first request: nothing on first contact with a registry; after
        its first challenge, the credentials (Basic) or a token for this repository (Bearer: from
        the cache, or fetched now, which saves the 401 round trip)."""
        challenge = self._challenges.get(reference.registry)
        if challenge is None:
            return {}
        credentials = self._credentials_for(reference.registry)
        if challenge.scheme == "basic" and credentials is None:
            return {}
        return self._authorization(reference, challenge, credentials, fresh=False)

    def _authorization(self, reference: Reference, challenge: Challenge, credentials: Credentials | None, *, fresh: bool) -> dict[str, str]:
        if challenge.scheme == "basic":
            if credentials is None:
                raise RegistryProblem(f"authentication required (HTTP 401): {self._no_credentials(reference.registry)}")
            if not credentials.password:
                only_token = f"the docker config has only an identity token for {reference.registry}"
                raise RegistryProblem(f"authentication required (HTTP 401): Basic, and {only_token}")
            return {"Authorization": "Basic " + base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()}
        # fresh: a 401 answered the last attempt; its challenge's scope says what the token must grant.
        scope = (challenge.parameters.get("scope") if fresh else None) or f"repository:{reference.repository}:pull"
        cached = self._tokens.get((reference.registry, scope))
        if cached and not fresh and cached[1] > time.monotonic():
            return {"Authorization": f"Bearer {cached[0]}"}
        return {"Authorization": f"Bearer {self._fetch_token(reference.registry, challenge, scope, credentials)}"}

    def _fetch_token(self, registry: str, challenge: Challenge, scope: str, credentials: Credentials | None) -> str:
        """A token from the challenge's realm, as docker gets one: GET with the service and scope
        (Basic credentials when there are any, else anonymous), or with an identity token the
        OAuth2 refresh-token POST. Cached per (registry, scope) until TOKEN_MARGIN before expiry."""
        realm = challenge.parameters.get("realm", "")
        parsed = urllib.parse.urlsplit(realm)
        if not parsed.hostname or parsed.scheme not in ("https", "http"):
            raise RegistryProblem("the registry's Bearer challenge names no token service (realm)")
        if parsed.scheme == "http" and not self._is_insecure(registry):
            raise RegistryProblem(f"the registry's token service {_origin(realm)} is plain http, and the registry is not insecure")
        verify: str | bool = False if self._is_insecure(registry) else self.verify
        fields = {key: value for key, value in (("service", challenge.parameters.get("service", "")), ("scope", scope)) if value}
        if credentials and credentials.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token, "client_id": "composeflux", **fields}
            response = self._send("POST", realm, "token service", verify=verify, data=form)
        elif credentials:
            fields["account"] = credentials.username
            login = (credentials.username, credentials.password)
            response = self._send("GET", realm, "token service", verify=verify, params=fields, auth=login)
        else:
            response = self._send("GET", realm, "token service", verify=verify, params=fields)
        if response.status_code in (401, 403):
            if credentials:
                raise RegistryProblem(f"authentication refused (HTTP {response.status_code} from the token service {_origin(realm)})")
            refusal = f"the token service {_origin(realm)} refused an anonymous token (HTTP {response.status_code})"
            raise RegistryProblem(f"{refusal}; {self._no_credentials(registry)}")
        if response.status_code == 429:
            raise RegistryProblem(_rate_limited(response))
        if response.status_code != 200:
            raise RegistryProblem(f"the token service {_origin(realm)} answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryProblem(f"the token service {_origin(realm)} sent no token")
        assert isinstance(answer, dict)
        lifetime = answer.get("expires_in")
        lifetime = lifetime if isinstance(lifetime, int) and lifetime > 0 else TOKEN_LIFETIME
        self._tokens[(registry, scope)] = (token, time.monotonic() + lifetime - TOKEN_MARGIN)
        return token

    def _credentials_for(self, registry: str) -> Credentials | None:
        """This registry's credentials from the docker config or its helper, once per registry;
        a failure (unreadable config, failing helper) is remembered and raised each time."""
        if registry not in self._credentials:
            try:
                if self._config is None:
                    try:
                        self._config = read_docker_config(self.docker_config)
                    except RegistryProblem as problem:
                        self._config = problem
                if isinstance(self._config, RegistryProblem):
                    raise self._config
                found = self._config.lookup(registry)
                self._credentials[registry] = run_credential_helper(found, self.timeout) if isinstance(found, Helper) else found
            except RegistryProblem as problem:
                self._credentials[registry] = problem
        value = self._credentials[registry]
        if isinstance(value, RegistryProblem):
            raise RegistryProblem(str(value))
        return value

    def _no_credentials(self, registry: str) -> str:
        where = f"{self.docker_config / 'config.json'}" if self.docker_config else "no docker config given"
        return f"no credentials for {registry} ({where}), or no such repository"

    def _refused(self, registry: str, challenge: Challenge, credentials: Credentials | None) -> str:
        """Why a 401 stands after authenticating (Docker Hub answers so for a missing repository too)."""
        if credentials is None:
            return f"authentication required (HTTP 401): {self._no_credentials(registry)}"
        if challenge.parameters.get("error") == "insufficient_scope":
            return "authentication refused (HTTP 401): the credentials give no pull access, or there is no such repository"
        return "authentication refused (HTTP 401)"


def _rate_limited(response: requests.Response) -> str:
    """'HTTP 429 (rate limited; retry after N s)', from Retry-After in seconds or as an HTTP date."""
    value = response.headers.get("Retry-After", "").strip()
    seconds: int | None = None
    if value.isdigit():
        seconds = int(value)
    elif value:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = max(0, round((when - datetime.now(UTC)).total_seconds()))
        except (TypeError, ValueError):
            seconds = None
    return f"HTTP 429 (rate limited; retry after {seconds} s)" if seconds is not None else "HTTP 429 (rate limited)"


def _origin(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}"
