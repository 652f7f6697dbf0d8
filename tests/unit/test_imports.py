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
    "composeflux.engine": {"docker", "requests"},
    "composeflux.gitsource": {"git"},
    "composeflux.sync": {"git"},
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

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & {heavy})))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, tuple[int, str, str]]:
    """module -> (exit status, stdout, stderr) of importing it alone; all probes run at once."""
    probes = {
        module: subprocess.Popen(
            [sys.executable, "-c", PROBE.format(module=module, heavy=set(HEAVY))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for module in MODULES
    }
    results = {}
    for module, process in probes.items():
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results[module] = (process.returncode, out, err)
    return results


def test_the_list_of_light_modules_is_not_stale():
    assert set(MODULES) >= MUST_BE_LIGHT | set(ALLOWED)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_and_loads_only_what_it_uses(module, loaded):
    status, out, err = loaded[module]
    assert status == 0, f"import {module} failed on its own:\n{err}"
    heavy = set(json.loads(out))
    assert heavy <= ALLOWED.get(module, set()), f"{module} loads {sorted(heavy)}"
