"""A real container registry for the tests and the benchmark: Debian's `docker-registry`
(github.com/docker/distribution 2.8, package docker-registry) bound to 127.0.0.1 on a free port.

    with start_registry(tmp_path, tls=True, htpasswd=("user", "password")) as server:
        digest = server.push("app", "latest")
        ...

Each server keeps everything under its own directory in tmp_path: the registry's config and
storage, its log (registry.log, for a failing test), a throw-away CA and a server certificate for
127.0.0.1 (tls=True; made here with python3-cryptography; the CA file is what a client gives as
its CA bundle), the htpasswd file (bcrypt, from htpasswd of apache2-utils), and a DOCKER_CONFIG
directory that `docker login` writes to, so the host's ~/.docker is never read or changed.

The engine and TLS: dockerd 20.10 counts 127.0.0.0/8 as an insecure registry, always (it is
added to whatever daemon.json says). For an insecure registry it tries https without verifying
the certificate, then plain http: it pushes to the plain-http server and to the TLS one alike
without /etc/docker/certs.d/<host>/ca.crt, and it never reads that file for a 127.0.0.1 registry
(certs.d is only loaded for secure ones). So nothing under /etc is written here; the tests
verify the TLS server's certificate on the composeflux side only, where it matters.

stop() stops the registry and removes every image this server's push() built or pulled, by the
image IDs it recorded (each build gets a fresh label, so its ID is its own), and the docker
config directory; nothing else on the engine is touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "/usr/bin/docker-registry"
TEST_IMAGE = "composeflux-test/busybox:latest"
PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def _run(*command: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class RegistryServer:
    url: str  # "https://127.0.0.1:<port>" or "http://127.0.0.1:<port>"
    host: str  # "127.0.0.1:<port>": the registry part of an image reference
    port: int
    ca_file: Path | None  # the CA that signed the server certificate (tls=True), PEM
    credentials: tuple[str, str] | None  # (user, password) the htpasswd file accepts
    docker_config: Path  # a DOCKER_CONFIG directory; for an htpasswd server, `docker login` has written its login there
    directory: Path
    process: subprocess.Popen[bytes]
    image_ids: list[str] = dataclasses.field(default_factory=list)
    images_before: set[str] = dataclasses.field(default_factory=set)  # images named after this host before it started
    pushes: int = 0
    logged_in: bool = False

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def image(self, name: str, tag: str = "latest") -> str:
        return f"{self.host}/{name}:{tag}"

    def _docker(self, *arguments: str, input: str | None = None) -> str:
        env = {**os.environ, "DOCKER_CONFIG": str(self.docker_config)}
        return _run("docker", *arguments, input=input, env=env)

    def login(self) -> None:
        """`docker login` to this server (htpasswd only), into this server's DOCKER_CONFIG: a
        config.json with "auths": {"127.0.0.1:<port>": {"auth": base64(user:password)}}."""
        if self.credentials and not self.logged_in:
            user, password = self.credentials
            self._docker("login", "--username", user, "--password-stdin", self.host, input=password)
            self.logged_in = True

    def push(self, name: str, tag: str = "latest") -> str:
        """Build a new image (the test image plus a label no other build has) as
        <host>/<name>:<tag> and push it; returns the manifest digest the push reported."""
        self.pushes += 1
        reference = self.image(name, tag)
        dockerfile = f"FROM {TEST_IMAGE}\nLABEL v={self.pushes} nonce={secrets.token_hex(8)}\n"
        self.image_ids.append(self._docker("build", "-q", "-t", reference, "-", input=dockerfile).strip())
        output = self._docker("push", reference)
        found = PUSHED_DIGEST.search(output)
        assert found, f"docker push printed no digest: {output}"
        return found.group(1)

    def pull(self, name: str, tag: str = "latest") -> list[str]:
        """Remove the local <host>/<name>:<tag>, pull it back, return its RepoDigests."""
        reference = self.image(name, tag)
        subprocess.run(["docker", "rmi", reference], capture_output=True, timeout=60, cwd="/")
        self._docker("pull", "-q", reference)
        image_id = self._docker("image", "inspect", "--format", "{{.Id}}", reference).strip()
        if image_id not in self.image_ids:
            self.image_ids.append(image_id)
        return self._docker("image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", reference).split()

    def _named_images(self) -> set[str]:
        listing = subprocess.run(["docker", "images", "--no-trunc", "--format", "{{.Repository}} {{.ID}}"],
                                 capture_output=True, text=True, timeout=60, cwd="/").stdout
        return {image for repository, _, image in (line.partition(" ") for line in listing.splitlines())
                if repository.startswith(f"{self.host}/")}

    def stop(self) -> None:
        """Stop the registry (SIGTERM, then SIGKILL after 10 s), remove the images this server
        built or pulled and its docker config. Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # Also what the engine pulled from this server on its own (`pull_policy: always`, an
        # update applied): every image named after this host that was not there before it started.
        pulled = self._named_images() - self.images_before
        if self.image_ids or pulled:
            subprocess.run(["docker", "rmi", "-f", *dict.fromkeys([*self.image_ids, *sorted(pulled)])],
                           capture_output=True, timeout=120, cwd="/")
            self.image_ids.clear()
        shutil.rmtree(self.docker_config, ignore_errors=True)
        self.logged_in = False


def start_registry(tmp_path: Path, *, tls: bool, htpasswd: tuple[str, str] | None) -> RegistryServer:
    """Start docker-registry on 127.0.0.1:<free port> with storage under tmp_path; returns once
    it answers GET /v2/ and, with htpasswd, once `docker login` to it has written the server's
    docker config. The caller stops it (stop(), or use the server as a context manager)."""
    assert Path(REGISTRY_BINARY).exists(), "docker-registry (Debian package docker-registry) is needed for the registry tests"
    directory = tmp_path / f"registry-{secrets.token_hex(3)}"
    directory.mkdir(parents=True)
    port = _free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {directory / 'storage'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    ca_file = None
    if tls:
        ca_file, certificate, key = _make_certificates(directory)
        lines += ["  tls:", f"    certificate: {certificate}", f"    key: {key}"]
    if htpasswd:
        user, password = htpasswd
        (directory / "htpasswd").write_text(_run("htpasswd", "-iBn", user, input=password))
        lines += ["auth:", "  htpasswd:", "    realm: composeflux-test", f"    path: {directory / 'htpasswd'}"]
    (directory / "config.yml").write_text("\n".join(lines) + "\n")
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BINARY, "serve", str(directory / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = RegistryServer(
        url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        host=f"127.0.0.1:{port}",
        port=port,
        ca_file=ca_file,
        credentials=htpasswd,
        docker_config=directory / "docker-config",
        directory=directory,
        process=process,
    )
    server.docker_config.mkdir()
    server.images_before = server._named_images()
    try:
        _wait_until_serving(server)
        server.login()
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_serving(server: RegistryServer, seconds: float = 10) -> None:
    """GET /v2/ answers (200, or 401 with htpasswd): the registry is listening and serving."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"docker-registry exited ({server.process.returncode}): {(server.directory / 'registry.log').read_text()}")
        try:
            response = requests.get(f"{server.url}/v2/", timeout=2, verify=str(server.ca_file) if server.ca_file else True)
            if response.status_code in (200, 401):
                return
        except requests.exceptions.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"docker-registry does not answer on {server.url} after {seconds} s")


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate it signs for 127.0.0.1 and localhost (subject
    alternative names: Go's TLS ignores the common name). Returns (ca.crt, server.crt, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "composeflux test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths
