"""End to end: `apt install composeflux` by name from the project's signed apt repository, and an
upgrade from it, on the same booted Debian 13 (systemd as PID 1) as tests/e2e/test_systemd.py.

Builds the .deb of this checkout and of a copy bumped to VERSION+test1 (scripts/bump-version.sh),
makes a throw-away OpenPGP key, builds the repository with packaging/apt-repo.sh, serves it over
HTTP on 127.0.0.1 in the container (busybox httpd, from a read-only bind mount), adds it exactly
as README's "Install on a server" says, installs by name, syncs one stack from a local bare
repository, publishes the newer version and upgrades: the edited conffile, the state, the enabled
timer and the running container stay, the upgrade starts no sync, and the next one runs the new
version; `apt changelog` reads the new entry from the repository; a repository signed by another
key is refused. Everything it makes is named cfx-apt-* and removed at the end (the cached
Debian 13 image is test_systemd's and stays).

Same prerequisites and skip logic as test_systemd (plus apt-ftparchive and gpg: tests/e2e/setup.sh).
COMPOSEFLUX_E2E_KEEP=1 keeps the container and the scratch directory for a post-mortem.
    /usr/bin/python3 -m pytest tests/e2e/test_apt_repository.py -v
The tests in this module run in order and share one booted system.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_systemd import BOOT_FLAGS, HERE, IN_CI, MISSING as SYSTEMD_MISSING, ROOT, Repo, System, run, wait_until

PREFIX = "cfx-apt-"
LABEL = "composeflux.test=e2e-apt"
PORT = 8080  # the repository, in the container
ROGUE_PORT = 8081  # the same packages signed by another key
PUBLISHED = "https://apt.composeflux.example/"  # README's placeholder for the published location
KEYRING = "/etc/apt/keyrings/composeflux-archive-keyring.gpg"
CONF = "/etc/composeflux/composeflux.conf"
STATE = "/var/lib/composeflux/state.json"
# docs/apt.md's line for unattended-upgrades.
UNATTENDED = 'Unattended-Upgrade::Origins-Pattern { "origin=composeflux,codename=stable"; };'
CONF_MARK = "# cfx-apt: an edit the upgrade must keep"
# Shows in the journal of every sync which composeflux the unit runs.
VERSION_DROPIN = "[Service]\nExecStartPre=/usr/bin/composeflux --version\n"
# The timer fires as soon as it is started (its OnBootSec= has passed), then 5 minutes after each
# sync: an hour here, so that no periodic sync can be taken for one the upgrade started. (The
# empty assignment resets every On*Sec= of the unit: OnBootSec= is given again.)
TIMER_DROPIN = "[Timer]\nOnUnitInactiveSec=\nOnBootSec=1min\nOnUnitInactiveSec=1h\n"


def _missing() -> str | None:
    if SYSTEMD_MISSING is not None:
        return SYSTEMD_MISSING
    for tool in ("apt-ftparchive", "gpg"):
        if not shutil.which(tool):
            return f"{tool} is not installed (tests/e2e/setup.sh installs it)"
    return None


MISSING = _missing()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(MISSING is not None and not IN_CI, reason=f"apt repository end-to-end test: {MISSING}"),
]


@pytest.fixture(autouse=True, scope="module")
def _prerequisites():
    if MISSING is not None:
        pytest.fail(f"apt repository end-to-end test cannot run in CI: {MISSING}")


def changelog_version(tree: Path) -> str:
    return run("dpkg-parsechangelog", "-l", str(tree / "packaging" / "debian" / "changelog"), "-S", "Version").stdout.strip()


def readme_repository_commands() -> str:
    """README's "Install on a server" commands up to `apt update` (adding the repository),
    for a shell: the first indented block of that section, its URL the test's."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install on a server\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n\n((?:    .*\n|\n)+)", section).group(1)
    script = textwrap.dedent(block)
    assert "\napt update\n" in script and "apt install composeflux" in script, script
    return script.split("\napt update\n", 1)[0].replace(PUBLISHED, f"http://127.0.0.1:{PORT}/") + "\n"


def apt_quiet(result: subprocess.CompletedProcess) -> str:
    """apt's stderr without the lines every apt in a non-interactive shell may print."""
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("debconf: ", "WARNING: apt does not have a stable CLI"))]
    return "\n".join(lines)


class Archive:
    """The repository on the host (bind-mounted into the container) and its signing keys."""

    def __init__(self, scratch: Path):
        self.gnupg = scratch / "gnupg"
        self.gnupg.mkdir(mode=0o700)
        self.env = {**os.environ, "GNUPGHOME": str(self.gnupg)}
        self.key = self._new_key("composeflux test archive <archive@cfx-apt.example>")
        self.rogue = self._new_key("someone else <rogue@cfx-apt.example>")

    def _new_key(self, uid: str) -> str:
        subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
                       env=self.env, check=True, capture_output=True, timeout=60)
        listing = run("gpg", "--batch", "--with-colons", "--list-secret-keys", uid, env=self.env).stdout
        return re.search(r"^fpr:+([0-9A-F]{40}):", listing, re.M).group(1)

    def publish(self, out: Path, *debs: Path, key: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**self.env, "CFX_APT_SIGNING_KEY": key or self.key, "CFX_APT_URL": f"http://127.0.0.1:{PORT}/"}
        return run(str(ROOT / "packaging" / "apt-repo.sh"), str(out), *map(str, debs), env=env, timeout=120, check=check)

    def close(self):
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def scratch():
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        yield path
    finally:
        if os.environ.get("COMPOSEFLUX_E2E_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(scratch):
    archive = Archive(scratch)
    try:
        yield archive
    finally:
        archive.close()


@pytest.fixture(scope="module")
def debs(scratch) -> dict[str, Path]:
    """The .deb of this checkout ("old") and of a copy bumped to VERSION+test1 ("new")."""
    old = run(str(ROOT / "packaging" / "build-deb.sh"), str(scratch / "dist-old"), timeout=600).stdout.split()[-1]
    # The copy: the files Git knows (as build-deb.sh takes them), in a throw-away repository of
    # their own so that the copy's build-deb.sh finds them the same way.
    copy = scratch / "newer"
    copy.mkdir()
    files = run("git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    tar = subprocess.run(["tar", "-C", str(ROOT), "--null", "-T", "-", "--ignore-failed-read", "-cf", "-"],
                         input=files.encode(), capture_output=True, check=True)
    subprocess.run(["tar", "-C", str(copy), "-xf", "-"], input=tar.stdout, check=True)
    new_version = changelog_version(ROOT) + "+test1"
    run(str(copy / "scripts" / "bump-version.sh"), new_version, "cfx-apt: the upgrade under test (tests/e2e/test_apt_repository.py).")
    run("git", "-C", str(copy), "init", "-q")
    run("git", "-C", str(copy), "add", "-A")
    new = run(str(copy / "packaging" / "build-deb.sh"), str(scratch / "dist-new"), timeout=600).stdout.split()[-1]
    return {"old": Path(old), "new": Path(new)}


@pytest.fixture(scope="module")
def image() -> str:
    return run(str(HERE / "build-rootfs.sh"), timeout=900).stdout.strip()


@pytest.fixture(scope="module")
def repo(scratch) -> Repo:
    bare = scratch / "git" / "stacks.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(bare))
    run("git", "clone", "-q", str(bare), str(scratch / "git" / "work"))
    repo = Repo(scratch / "git" / "work")
    repo.git("checkout", "-q", "-b", "main")
    repo.write_stack("web", "hello v1")
    repo.commit_and_push("v1: web")
    return repo


@pytest.fixture(scope="module")
def system(debs, archive, image, repo, scratch):
    workdir = scratch / "mnt"
    workdir.mkdir()
    archive.publish(workdir / "apt", debs["old"])
    # The test image for the nested engine: a busybox-static root filesystem; busybox's httpd
    # serves the repository.
    shutil.copy("/bin/busybox", workdir / "busybox")
    rootfs = scratch / "busybox-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    run("tar", "-C", str(rootfs), "-cf", str(workdir / "busybox.tar"), ".")

    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    run(
        "docker", "run", "-d", "--name", name, "--label", LABEL, "--hostname", "cfx-apt",
        *BOOT_FLAGS,
        "-v", f"{workdir}:/e2e:ro", "-v", f"{repo.path.parent / 'stacks.git'}:/srv/git/stacks.git:ro",
        image, "/lib/systemd/systemd",
    )
    system = System(name, workdir)
    try:
        wait_until(
            lambda: system.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded"),
            60, "systemd to boot",
        )
        system.sh(
            f"""
            set -e
            # Nested engine, as in test_systemd: vfs, no iptables, the veth IPv6 setting.
            mkdir -p /etc/docker /etc/systemd/system/docker.service.d
            echo '{{"storage-driver":"vfs","iptables":false}}' > /etc/docker/daemon.json
            printf '[Service]\\nEnvironment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\\n' \
                > /etc/systemd/system/docker.service.d/cfx-e2e.conf
            printf '[safe]\\n\\tdirectory = /srv/git/stacks.git\\n' > /etc/gitconfig
            systemd-run -q --unit=cfx-apt-repo /e2e/busybox httpd -f -p 127.0.0.1:{PORT} -h /e2e/apt
            # What the README's commands use that a minimal system lacks.
            apt-get update -q
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl
            """,
            timeout=600,
        )
        yield system
    finally:
        if os.environ.get("COMPOSEFLUX_E2E_KEEP") != "1":
            run("docker", "rm", "-f", name, check=False)


def test_the_repository_is_signed_and_complete(debs, archive, scratch):
    """The layout, the Release fields apt and unattended-upgrades read, valid signatures, and a
    pre-release in testing only (the packages are ours: the built .deb with another version)."""
    out = scratch / "layout"
    archive.publish(out, debs["old"])
    prerelease = scratch / "prerelease"
    run("dpkg-deb", "-R", str(debs["old"]), str(prerelease))
    control = prerelease / "DEBIAN" / "control"
    version = changelog_version(ROOT)
    control.write_text(control.read_text().replace(f"\nVersion: {version}\n", f"\nVersion: {version}+test1~rc1\n"))
    run("dpkg-deb", "-Zxz", "-b", str(prerelease), str(scratch / "prerelease.deb"))
    archive.publish(out, scratch / "prerelease.deb")
    assert (out / "composeflux-archive-keyring.gpg").read_bytes()[:1] != b"-"  # binary, not armoured
    pool = out / "pool" / "main" / "c" / "composeflux"
    assert (pool / f"composeflux_{version}_all.deb").is_file()
    assert f"composeflux ({version})" in (pool / f"composeflux_{version}.changelog").read_text()
    for suite, versions in (("stable", [version]), ("testing", [version, f"{version}+test1~rc1"])):
        dist = out / "dists" / suite
        release = (dist / "Release").read_text()
        fields = dict(re.findall(r"^([A-Za-z-]+): (.+)$", release, re.M))
        assert fields["Origin"] == fields["Label"] == "composeflux"
        assert fields["Suite"] == fields["Codename"] == suite
        assert fields["Components"] == "main"
        assert {"all", "amd64", "arm64"} <= set(fields["Architectures"].split())
        assert fields["Changelogs"] == f"http://127.0.0.1:{PORT}/pool/@CHANGEPATH@.changelog"
        assert "Date" in fields and "SHA256" in release
        for name in ("Packages", "Packages.gz", "Packages.xz"):
            assert f" main/binary-all/{name}\n" in release
        packages = (dist / "main" / "binary-all" / "Packages").read_text()
        assert sorted(re.findall(r"^Version: (.+)$", packages, re.M)) == sorted(versions), packages
        keyring = str(out / "composeflux-archive-keyring.gpg")
        for signed in (["InRelease"], ["Release.gpg", "Release"]):
            check = run("gpgv", "--keyring", keyring, *(str(dist / f) for f in signed), check=False)
            assert check.returncode == 0, check.stderr
    # A published version never changes: the same version with other contents is refused.
    control.write_text(control.read_text().replace("\nDescription: ", "\nDescription: tampered "))
    run("dpkg-deb", "-Zxz", "-b", str(prerelease), str(scratch / "tampered.deb"))
    result = archive.publish(out, scratch / "tampered.deb", check=False)
    assert result.returncode != 0 and "already published with other contents" in result.stderr, result.stderr


def test_install_by_name_as_the_readme_says(system, debs):
    system.sh(readme_repository_commands())
    assert system.out(f"stat -c %a {KEYRING}") == "644"
    update = system.sh("apt-get update -q", check=False)
    assert update.returncode == 0 and apt_quiet(update) == "", update.stderr
    install = system.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q composeflux", check=False, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    old_version = changelog_version(ROOT)
    assert system.out("dpkg-query -W -f '${Version}' composeflux") == old_version
    assert f"127.0.0.1:{PORT} stable/main all Packages" in system.out("apt-cache policy composeflux")
    # A conffile: dpkg keeps the admin's edits over an upgrade.
    assert CONF in system.out("dpkg-query -W -f '${Conffiles}' composeflux")


def test_a_sync_deploys_the_stack(system):
    system.sh(
        f"""
        set -e
        docker import - cfx-e2e/busybox:latest < /e2e/busybox.tar >/dev/null
        printf 'GIT_REPO_URL=file:///srv/git/stacks.git\\nSTACK_PATH=stacks\\n' >> {CONF}
        mkdir -p /etc/systemd/system/composeflux.service.d /etc/systemd/system/composeflux.timer.d
        printf '{VERSION_DROPIN}' > /etc/systemd/system/composeflux.service.d/cfx-apt.conf
        printf '{TIMER_DROPIN}' > /etc/systemd/system/composeflux.timer.d/cfx-apt.conf
        systemctl daemon-reload
        systemctl enable --now composeflux.timer
        """
    )
    try:
        wait_until(lambda: system.running("web-web-1"), 150, "web to run")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{system.sh('journalctl -u composeflux -n 40 --no-pager', check=False).stdout}") from None
    system.wait_idle()
    assert system.prop("composeflux.service", "Result") == "success"
    assert "GREETING=hello v1" in system.env_of("web-web-1")
    assert system.sh(f"test -s {STATE}", check=False).returncode == 0
    # An edit of the conffile (composeflux.path starts a sync for it: let it finish).
    before = len(system.invocations())
    system.sh(f"echo '{CONF_MARK}' >> {CONF}")
    wait_until(lambda: len(system.invocations()) > before, 30, "the sync the edit starts")
    system.wait_idle()
    assert system.prop("composeflux.service", "Result") == "success"


def test_a_newer_version_is_published_with_its_changelog(system, archive, debs):
    archive.publish(system.workdir / "apt", debs["new"])
    update = system.sh("apt-get update -q", check=False)
    assert update.returncode == 0 and apt_quiet(update) == "", update.stderr
    new_version = changelog_version(ROOT) + "+test1"
    assert f"Candidate: {new_version}" in system.out("apt-cache policy composeflux")
    # The candidate is not installed, so apt fetches its changelog from the repository
    # (Changelogs: .../pool/@CHANGEPATH@.changelog).
    uri = urllib.parse.unquote(system.out("apt-get changelog --print-uris composeflux"))  # "+" as %2b
    assert uri.startswith(f"'http://127.0.0.1:{PORT}/pool/main/c/composeflux/composeflux_{new_version}.changelog'"), uri
    changelog = system.sh("apt changelog composeflux", check=False)
    assert changelog.returncode == 0, changelog.stderr
    # "Get:1 http://127.0.0.1:8080 composeflux VERSION Changelog [...]", then the changelog, newest first.
    assert f"http://127.0.0.1:{PORT} composeflux {new_version} Changelog" in changelog.stdout, changelog.stdout[:500]
    assert re.search(rf"^composeflux \({re.escape(new_version)}\)", changelog.stdout, re.M), changelog.stdout[:500]
    assert "cfx-apt: the upgrade under test" in changelog.stdout


def test_unattended_upgrades_would_upgrade_it(system):
    """docs/apt.md's Origins-Pattern matches what apt-ftparchive wrote (Origin:, Codename:)."""
    system.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q unattended-upgrades", timeout=600)
    system.sh(f"printf '%s\\n' '{UNATTENDED}' > /etc/apt/apt.conf.d/51composeflux-unattended")
    result = system.sh("unattended-upgrade --dry-run --debug", check=False, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    listed = re.search(r"^Packages that will be upgraded: (.*)$", output, re.M)
    assert listed and "composeflux" in listed.group(1).split(), output[-3000:]
    assert "composeflux" in re.search(r"^Allowed origins are: (.*)$", output, re.M).group(1)


def test_the_upgrade_keeps_everything_and_starts_no_sync(system):
    system.wait_idle()
    new_version = changelog_version(ROOT) + "+test1"
    container = system.container_id("web-web-1")
    state = system.out(f"sha256sum {STATE}")
    runs = len(system.invocations())
    units = {unit: system.prop(unit, "ActiveEnterTimestampMonotonic") for unit in ("composeflux.timer", "composeflux.path")}
    upgrade = system.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --only-upgrade composeflux", check=False, timeout=600)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert system.out("dpkg-query -W -f '${Version}' composeflux") == new_version
    assert CONF_MARK in system.out(f"cat {CONF}")
    assert system.out(f"stat -c '%a %U:%G' {CONF}") == "640 root:composeflux"
    journal = system.sh("journalctl -u composeflux -n 15 --no-pager", check=False).stdout
    assert system.idle() and len(system.invocations()) == runs, f"the upgrade started a sync:\n{journal}"
    assert system.out(f"sha256sum {STATE}") == state
    for unit, since in units.items():
        assert system.prop(unit, "UnitFileState") == "enabled"
        assert system.prop(unit, "ActiveState") == "active"
        # Not restarted: a restarted timer would start a sync within seconds (OnBootSec= passed).
        assert system.prop(unit, "ActiveEnterTimestampMonotonic") == since, f"{unit} was restarted"
    assert system.running("web-web-1") and system.container_id("web-web-1") == container
    assert system.out("composeflux --version") == f"composeflux, version {new_version}"
    # The next sync runs the new version and leaves the stack as it runs.
    result = system.sh("systemctl start composeflux-sync", check=False)
    assert result.returncode == 0, result.stderr
    invocation = system.invocations()[-1]
    assert f"composeflux, version {new_version}" in system.log_of(invocation)
    assert system.container_id("web-web-1") == container


def test_a_repository_signed_by_another_key_is_refused(system, archive, debs):
    archive.publish(system.workdir / "rogue", debs["new"], key=archive.rogue)
    system.sh(f"systemd-run -q --unit=cfx-apt-rogue /e2e/busybox httpd -f -p 127.0.0.1:{ROGUE_PORT} -h /e2e/rogue")
    wait_until(lambda: system.sh(f"exec 3<>/dev/tcp/127.0.0.1/{ROGUE_PORT}", check=False).returncode == 0,
               30, "the second repository to listen")
    system.sh(
        f"printf 'Types: deb\\nURIs: http://127.0.0.1:{ROGUE_PORT}/\\nSuites: stable\\nComponents: main\\n"
        f"Signed-By: {KEYRING}\\n' > /etc/apt/sources.list.d/cfx-apt-rogue.sources"
    )
    try:
        update = system.sh("apt-get update -q", check=False)
        assert update.returncode != 0, update.stdout + update.stderr
        # gpgv (Debian 12) says NO_PUBKEY and the key's long ID, sqv (13) "Missing key" and its fingerprint.
        assert re.search(r"NO_PUBKEY|Missing key", update.stderr) and archive.rogue[-16:] in update.stderr, update.stderr
        assert f"The repository 'http://127.0.0.1:{ROGUE_PORT} stable InRelease' is not signed" in update.stderr, update.stderr
    finally:
        system.sh("rm -f /etc/apt/sources.list.d/cfx-apt-rogue.sources")
    update = system.sh("apt-get update -q", check=False)
    assert update.returncode == 0 and apt_quiet(update) == "", update.stderr


def test_a_downgrade_to_the_previous_version_keeps_the_state(system):
    """The state format is the same (version 1): going back works and the stack stays."""
    system.wait_idle()
    old_version = changelog_version(ROOT)
    container = system.container_id("web-web-1")
    result = system.sh(
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades composeflux={old_version}",
        check=False, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert CONF_MARK in system.out(f"cat {CONF}")
    sync = system.sh("systemctl start composeflux-sync", check=False)
    assert sync.returncode == 0, sync.stderr
    log = system.log_of(system.invocations()[-1])
    assert f"composeflux, version {old_version}" in log
    assert "cannot be used" not in log, log
    assert system.container_id("web-web-1") == container
    assert system.sh(f"test -s {STATE}", check=False).returncode == 0
