"""Imports follow the data flow: each module imported alone, in a fresh interpreter, loads only
what it uses. The pure steps and the value types load no Docker SDK, Git, HTTP or crypto library,
and neither does the command line itself (so `composeflux --version` and `status` stay fast)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import composeflux

HEAVY = ("docker", "git", "requests", "cryptography")

# Modules allowed to load a heavy library, and which; every other module may load none.
ALLOWED = {
    "composeflux.secrets._http": {"requests"},
    "composeflux.secrets.infisical": {"requests"},
    "composeflux.secrets.bitwarden": {"requests", "cryptography"},
}
MUST_BE_LIGHT = {
    "composeflux.plan", "composeflux.stacks", "composeflux.checkout", "composeflux.deployed", "composeflux.rendered",
    "composeflux.outcome", "composeflux.state", "composeflux.config", "composeflux.masking", "composeflux.cli",
}

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(composeflux.__path__, "composeflux.")
    if info.name != "composeflux.__main__"  # running it runs the CLI
)

# A fresh interpreter that has imported nothing of composeflux forks once per module: each
# child imports that one module and reports what it brought in. As good as a new interpreter
# per module (nothing of composeflux and no heavy library is loaded before the fork), without
# paying its start-up once per module. The standard library and the light libraries every
# module uses (yaml, click) are loaded before the fork, once: the probe looks only for HEAVY.
PRELOADED = (
    "abc", "base64", "collections", "contextlib", "dataclasses", "datetime", "email.utils", "enum", "fcntl", "functools",
    "hashlib", "hmac", "importlib", "io", "ipaddress", "json", "logging", "os", "pathlib", "re", "resource", "secrets",
    "shlex", "shutil", "signal", "socket", "stat", "subprocess", "tempfile", "textwrap", "time", "typing", "urllib.parse",
    "warnings", "click", "yaml",
)
PROBE = r"""
import importlib, json, os, sys, traceback
heavy = set(json.loads(sys.argv[1]))
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
assert not {name.split(".")[0] for name in sys.modules} & heavy, "a preloaded module loads a heavy library"
results = {}
for module in sys.argv[3:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            report = {"ok": True, "heavy": sorted({name.split(".")[0] for name in sys.modules} & heavy)}
        except BaseException:
            report = {"ok": False, "error": traceback.format_exc()}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    results[module] = json.loads(b"".join(chunks) or b'{"ok": false, "error": "the probe died"}')
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, dict[str, object]]:
    """module -> {"ok", "heavy" or "error"} of importing it alone, from one probe process."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(PRELOADED), *MODULES],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    reports: dict[str, dict[str, object]] = json.loads(result.stdout)
    return reports


def test_the_list_of_light_modules_is_not_stale():
    assert set(MODULES) >= MUST_BE_LIGHT | set(ALLOWED)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_and_loads_only_what_it_uses(module, loaded):
    report = loaded[module]
    assert report["ok"], f"import {module} failed on its own:\n{report.get('error')}"
    heavy = set(report["heavy"])
    assert heavy <= ALLOWED.get(module, set()), f"{module} loads {sorted(heavy)}"


def test_the_probe_sees_a_heavy_import():
    """The check can fail: a module that imports requests is reported as loading it."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(PRELOADED), "composeflux.secrets.infisical"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout)["composeflux.secrets.infisical"]["heavy"] == ["requests"]
