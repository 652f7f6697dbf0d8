#!/bin/sh
# Install those of the named Debian packages that are missing (as root; quiet, no recommends).
#   scripts/ensure-packages.sh PACKAGE...
# The one place the set-up scripts (setup-host.sh, lint.sh, tests/*/setup.sh) call apt from.
set -eu
export DEBIAN_FRONTEND=noninteractive
missing=""
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing="$missing $package"
done
[ -n "$missing" ] || exit 0
echo "setup: installing$missing"
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
