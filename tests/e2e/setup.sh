#!/bin/sh
# Install what the packaging tests and the systemd end-to-end test need on a Debian 12 or 13 host
# (as root). Idempotent; .ci/run calls it before the test suite.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH DEBIAN_FRONTEND=noninteractive
packages="debootstrap build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools lintian man-db git busybox-static apt-utils gnupg"
# shellcheck disable=SC2086
"$(dirname "$0")/../../scripts/ensure-packages.sh" $packages
# Build (or reuse) the cached Debian 13 image now, so the test's own timing excludes it.
if [ "${1:-}" = "--image" ]; then
    "$(dirname "$0")/build-rootfs.sh"
fi
