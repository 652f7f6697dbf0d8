#!/bin/sh
# The test suite. Run from anywhere in the checkout:
#   scripts/test.sh            everything, against real Docker, Git, sshd and systemd (root, Debian)
#   scripts/test.sh -k ssh     any pytest arguments narrow it down
#   scripts/test.sh --fast     the fast lane: the unit tests only, in seconds, as any user, with no
#                              apt, Docker or network (needs the Debian Python libraries that
#                              composeflux itself uses, plus python3-pytest, already installed)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if [ "${1:-}" = "--fast" ]; then
    shift
    # Debian's interpreter: it has the python3-* libraries the package depends on. With
    # python3-pytest-xdist, one worker per core: the lane is bound by git and python start-ups.
    parallel=""
    /usr/bin/python3 -c 'import xdist' 2>/dev/null && parallel="-n $(nproc)"
    # The throw-away repositories and state directories on tmpfs where there is one: the lane
    # makes thousands of small files and fsyncs the state file after every sync.
    # Removed afterwards: it is memory.
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
        scratch="/dev/shm/composeflux-fast-lane-$(id -u)-$$"
        trap 'rm -rf "$scratch"' EXIT
        # shellcheck disable=SC2086
        /usr/bin/python3 -m pytest -p no:cacheprovider -q $parallel --basetemp="$scratch" "$@" tests/unit tests/test_*.py
        exit $?
    fi
    # shellcheck disable=SC2086
    exec /usr/bin/python3 -m pytest -p no:cacheprovider -q $parallel "$@" tests/unit tests/test_*.py
fi
"$here/scripts/setup-host.sh"
for extra in "$here"/tests/*/setup.sh; do
    [ -x "$extra" ] && "$extra"
done
exec /usr/bin/python3 -m pytest -p no:cacheprovider "$@" tests
