#!/bin/sh
# The whole test suite, against real Docker, Git, sshd and systemd. Run as root on Debian:
#   scripts/test.sh            everything
#   scripts/test.sh -k ssh     any pytest arguments narrow it down
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-host.sh"
for extra in "$here"/tests/*/setup.sh; do
    [ -x "$extra" ] && "$extra"
done
cd "$here"
exec /usr/bin/python3 -m pytest -p no:cacheprovider "$@" tests
