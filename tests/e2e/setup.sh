#!/bin/sh
# Install what the packaging tests and the systemd end-to-end test need on a Debian 12 or 13 host
# (as root). Idempotent; .ci/run calls it before the test suite.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH DEBIAN_FRONTEND=noninteractive
packages="debootstrap build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools lintian man-db git busybox-static"
missing=""
for p in $packages; do
    dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends $missing
fi
# Build (or reuse) the cached Debian 13 image now, so the test's own timing excludes it.
if [ "${1:-}" = "--image" ]; then
    "$(dirname "$0")/build-rootfs.sh"
fi
