"""The version lives in composeflux/__init__.py and packaging/debian/changelog, and nowhere else:
pyproject.toml reads __version__ (attr), and `--version` prints it. They must agree, in
Python's spelling of the Debian version (scripts/bump-version.sh: "~rc1" is "rc1", "~dev1" ".dev1").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import composeflux

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = ROOT / "packaging" / "debian" / "changelog"
# The top entry's first line: "composeflux (VERSION) DISTRIBUTION; urgency=...".
TOP = re.compile(r"\Acomposeflux \(([^()\s]+)\) [a-z-]+; urgency=[a-z]+\n")


def python_spelling(debian: str) -> str:
    return re.sub(r"~dev(\d+)", r".dev\1", re.sub(r"~(a|b|rc)(\d+)", r"\1\2", debian))


def changelog_version() -> str:
    match = TOP.match(CHANGELOG.read_text(encoding="utf-8"))
    assert match, "packaging/debian/changelog does not start with a composeflux (VERSION) entry"
    return match.group(1)


def test_the_changelog_and_version_agree():
    assert python_spelling(changelog_version()) == composeflux.__version__


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "composeflux.__version__"}
    setuptools = pytest.importorskip("setuptools.config.expand")
    # What setuptools resolves the attr to (statically, as a build does first).
    assert setuptools.read_attr("composeflux.__version__", root_dir=str(ROOT)) == composeflux.__version__


def test_the_cli_prints_it():
    result = subprocess.run([sys.executable, "-m", "composeflux", "--version"], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == f"composeflux, version {composeflux.__version__}"


def test_the_changelog_parses_as_dpkg_reads_it():
    if not shutil.which("dpkg-parsechangelog"):
        pytest.skip("dpkg-parsechangelog is not installed (dpkg-dev)")
    fields = subprocess.run(["dpkg-parsechangelog", "-l", str(CHANGELOG)], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert re.search(r"^Version: (.+)$", fields, re.M).group(1) == changelog_version()
    assert re.search(r"^Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", fields, re.M), fields


@pytest.mark.parametrize(("debian", "python"), [
    ("0.3.0", "0.3.0"), ("0.4.0~rc1", "0.4.0rc1"), ("0.4.0~a2", "0.4.0a2"), ("0.4.0~dev3", "0.4.0.dev3"),
    ("0.3.0+test1", "0.3.0+test1"),
])
def test_the_spelling_matches_bump_version(debian, python):
    """The same mapping as scripts/bump-version.sh's sed."""
    script = (ROOT / "scripts" / "bump-version.sh").read_text(encoding="utf-8")
    assert r"s/~(a|b|rc)([0-9]+)/\1\2/; s/~dev([0-9]+)/.dev\1/" in script
    assert python_spelling(debian) == python


def test_bump_version_writes_an_entry_dpkg_accepts(tmp_path):
    if not shutil.which("dpkg-parsechangelog"):
        pytest.skip("dpkg-parsechangelog is not installed (dpkg-dev)")
    for name in ("scripts/bump-version.sh", "composeflux/__init__.py", "packaging/debian/changelog", "packaging/debian/control",
                 "man/composeflux.8"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    new = changelog_version() + "+bump1~rc1"
    subprocess.run([str(tmp_path / "scripts" / "bump-version.sh"), new, "First change.", "A second change " + "long " * 20 + "end."],
                   capture_output=True, text=True, check=True, timeout=60, env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "1796196621"})
    fields = subprocess.run(["dpkg-parsechangelog", "-l", str(tmp_path / "packaging/debian/changelog")],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert f"\nVersion: {new}\n" in fields
    assert "\nDate: Wed, 02 Dec 2026 07:30:21 +0000\n" in fields
    assert "\nMaintainer: composeflux developers <composeflux@example.org>\n" in fields
    assert "  * First change.\n" in fields
    entry = (tmp_path / "packaging/debian/changelog").read_text().split("\n\n -- ", 1)[0]
    assert max(map(len, entry.splitlines())) <= 80
    assert f'__version__ = "{python_spelling(new)}"' in (tmp_path / "composeflux/__init__.py").read_text()
    assert f'"composeflux {python_spelling(new)}"' in (tmp_path / "man/composeflux.8").read_text().splitlines()[0]
    # Not backwards.
    again = subprocess.run([str(tmp_path / "scripts" / "bump-version.sh"), "0.0.1", "x"], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "does not sort after" in again.stderr
