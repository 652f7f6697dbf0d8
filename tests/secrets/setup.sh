#!/bin/sh
# Test-only dependencies of tests/secrets (run by scripts/test.sh, as root, before pytest):
# the official Infisical and Bitwarden SDKs from PyPI, which the fake servers are checked
# against. They go into their own venv, .venv-sdk/ (gitignored), never into composeflux's
# interpreter: composeflux itself needs no SDK. Safe to run again.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
venv="$here/.venv-sdk"
if "$venv/bin/python" -c 'import infisical_sdk, bitwarden_sdk' 2>/dev/null; then
    exit 0
fi
"$here/scripts/ensure-packages.sh" python3-venv
echo "setup: installing the official SDKs (test-only) into $venv"
/usr/bin/python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    infisicalsdk==1.0.18 bitwarden-sdk==2.1.0
