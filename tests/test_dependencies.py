"""The runtime Python dependencies are listed once, in pyproject.toml; the others follow it.

packaging/debian/control must name the Debian package of each (and no other python3-* package),
and scripts/setup-host.sh, which reads its runtime packages from control, must install exactly
those. Plain pytest: no root, no Docker, no network.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTROL = ROOT / "packaging" / "debian" / "control"

# Debian names a Python library python3-<its PyPI name, normalized>; these are the exceptions
# (Debian uses the import name).
DEBIAN_NAMES = {
    "gitpython": "python3-git",
    "pyyaml": "python3-yaml",
    "systemd-python": "python3-systemd",
}
# Extras the .deb always provides: journal (python3-systemd), since the service runs under systemd.
DEB_EXTRAS = ("journal",)


def _project_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalized as PEP 503 says."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert name, f"cannot read the name of requirement {requirement!r} in pyproject.toml"
    return re.sub(r"[-_.]+", "-", name.group(1)).lower()


def debian_package(requirement: str) -> str:
    name = _project_name(requirement)
    return DEBIAN_NAMES.get(name, f"python3-{name}")


def pyproject_packages() -> dict[str, str]:
    """Debian package -> the pyproject.toml requirement it stands for."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in DEB_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    return {debian_package(r): r for r in requirements}


def control_stanzas() -> list[dict[str, str]]:
    """debian/control as deb822 stanzas (field names lowercased); comment lines dropped."""
    stanzas: list[dict[str, str]] = [{}]
    name = ""
    for line in CONTROL.read_text().splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanzas[-1]:
                stanzas.append({})
        elif line[0].isspace():
            stanzas[-1][name] += "\n" + line
        else:
            field, _, value = line.partition(":")
            name = field.strip().lower()
            stanzas[-1][name] = value
    return [stanza for stanza in stanzas if stanza]


def control_depends() -> list[list[str]]:
    """Depends: of the binary package: each entry as its alternatives, names only."""
    (binary,) = [stanza for stanza in control_stanzas() if stanza.get("package", "").strip() == "composeflux"]
    entries = [entry.strip() for entry in binary["depends"].split(",") if entry.strip()]
    return [[re.split(r"[\s(\[<]", alt.strip(), maxsplit=1)[0] for alt in entry.split("|")] for entry in entries]


def control_python_packages() -> set[str]:
    """Every python3-* package control's Depends names, alternatives included (not python3 itself)."""
    return {alt for entry in control_depends() for alt in entry if alt.startswith("python3-")}


def setup_host_list() -> dict[str, set[str]]:
    """What `scripts/setup-host.sh --list` says it installs: {"runtime": {...}, "test": {...}}."""
    result = subprocess.run(["sh", str(ROOT / "scripts" / "setup-host.sh"), "--list"], capture_output=True,
                            text=True, check=True, timeout=10)
    listed: dict[str, set[str]] = {"runtime": set(), "test": set()}
    for line in result.stdout.splitlines():
        kind, package = line.split()
        listed[kind].add(package)
    return listed


def test_every_pyproject_dependency_is_in_control():
    missing = {pkg: req for pkg, req in pyproject_packages().items() if pkg not in control_python_packages()}
    assert not missing, f"pyproject.toml dependencies without their Debian package in {CONTROL.name} Depends: {missing}"


def test_control_has_no_python_package_that_pyproject_lacks():
    extra = control_python_packages() - set(pyproject_packages())
    assert not extra, f"{CONTROL.name} Depends names python3 packages that pyproject.toml does not list: {sorted(extra)}"


def test_control_names_each_python_package_on_its_own():
    # Alternatives ("python3-a | python3-b") would leave setup-host.sh, which skips alternatives,
    # without the library; ${python3:Depends} is not enough either (it omits the journal extra).
    for entry in control_depends():
        if len(entry) > 1:
            assert not any(alt.startswith("python3") for alt in entry), f"python3 package as an alternative: {entry}"


def test_setup_host_installs_the_runtime_packages_of_control():
    listed = setup_host_list()
    plain = {entry[0] for entry in control_depends() if len(entry) == 1 and not entry[0].startswith("${")}
    assert listed["runtime"] == plain
    runtime_python = {p for p in listed["runtime"] if p.startswith("python3-")}
    assert runtime_python == control_python_packages()
    assert "python3" in listed["runtime"]


def test_setup_host_keeps_no_copy_of_the_runtime_python_packages():
    # Its own list holds what the tests need on top (pytest, ...), never a runtime dependency.
    copied = setup_host_list()["test"] & (control_python_packages() | set(pyproject_packages()))
    assert not copied, f"scripts/setup-host.sh TEST_PACKAGES repeats runtime dependencies: {sorted(copied)}"


def test_debian_package_names():
    assert debian_package("GitPython") == "python3-git"
    assert debian_package("PyYAML>=6") == "python3-yaml"
    assert debian_package("systemd-python") == "python3-systemd"
    assert debian_package("requests[socks] >= 2; python_version >= '3.11'") == "python3-requests"
    assert debian_package("Foo_Bar.baz") == "python3-foo-bar-baz"
