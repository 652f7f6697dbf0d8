#!/bin/sh
# Prepare a Debian 12/13 machine (as root) to run composeflux and its test suite:
# Docker Engine, Docker Compose v2, git, OpenSSH, the Python libraries from Debian, and a
# local test image (no container registry is needed). Safe to run again: it only adds what is missing.
set -eu

export DEBIAN_FRONTEND=noninteractive
here=$(cd "$(dirname "$0")/.." && pwd)

# What the composeflux package itself depends on (so the demo and the tests run with what the .deb
# pulls in), read from Depends: in packaging/debian/control instead of being copied here: the
# Python libraries are listed once, in pyproject.toml, and control names their Debian packages
# (tests/test_dependencies.py checks pyproject.toml, control and this). Prints each entry that
# names one package, without its version constraint; skips substitution variables (${...}) and
# alternatives ("a | b", the Docker packages: TEST_PACKAGES and the Compose step below pick those).
runtime_packages() {
    awk '
        /^#/ { next }                                    # a comment line, allowed in debian/control
        /^[^ \t]/ { in_depends = sub(/^Depends:/, "") }  # a field starts: is it Depends:?
        in_depends { list = list "," $0 }
        END {
            n = split(list, entries, ",")
            for (i = 1; i <= n; i++) {
                entry = entries[i]
                if (entry ~ /[|$]/) continue
                sub(/[([<].*/, "", entry)                # a version, architecture or profile restriction
                gsub(/[ \t]/, "", entry)
                if (entry != "") print entry
            }
        }' "$1"
}
RUNTIME_PACKAGES=$(runtime_packages "$here/packaging/debian/control")
[ -n "$RUNTIME_PACKAGES" ] || { echo "setup: no Depends: found in packaging/debian/control" >&2; exit 1; }
# Not dependencies of the package, only for this host, the demo and the test suite: docker.io (of
# the Docker engines the package accepts, the one Debian ships), sshd and busybox for the test
# servers and the local test image, CA certificates, pytest, its timeout plugin (a hung test
# fails instead of hanging CI: pyproject.toml sets the limit) and xdist (the fast lane on every core);
# age (age-keygen, and the data keys of the tests' SOPS files) and gnupg for the SOPS tests;
# docker-registry and apache2-utils (htpasswd) for the registries the update tests start;
# apprise (the package only recommends it) and python3-aiosmtpd (the SMTP server its mailto:// is
# sent to) for the notification tests, prometheus-node-exporter for the metrics tests (it reads
# the textfile composeflux writes).
TEST_PACKAGES="docker.io openssh-server busybox-static ca-certificates python3-pytest python3-pytest-timeout python3-pytest-xdist age gnupg \
docker-registry apache2-utils apprise python3-aiosmtpd prometheus-node-exporter"
PACKAGES="$RUNTIME_PACKAGES $TEST_PACKAGES"

# --list prints the packages it would make sure are installed, each after where it comes from
# (runtime: packaging/debian/control; test: TEST_PACKAGES), and changes nothing; for
# tests/test_dependencies.py.
if [ "${1:-}" = "--list" ]; then
    for package in $RUNTIME_PACKAGES; do echo "runtime $package"; done
    for package in $TEST_PACKAGES; do echo "test $package"; done
    exit 0
fi

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -c "install ok installed" || true; }
registry_was_installed=$(installed docker-registry)
node_exporter_was_installed=$(installed prometheus-node-exporter)
# shellcheck disable=SC2086
"$here/scripts/ensure-packages.sh" $PACKAGES
# Installing docker-registry enables a registry on *:5000 where systemd runs, and
# prometheus-node-exporter an exporter on *:9100: the tests start their own on 127.0.0.1, so the
# ones this script brought in are switched off (those the host had are left alone).
if [ "$registry_was_installed" = 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
if [ "$node_exporter_was_installed" = 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true
fi

# Docker Compose v2. Debian 13 ships it as docker-compose (>= 2); Debian 12's docker-compose is
# the retired Python v1, so on bookworm take trixie's package and install its binary as the CLI plugin.
compose_major() { docker compose version --short 2>/dev/null | sed 's/^v//' | cut -d. -f1; }
if [ "$(compose_major)" = "" ] || [ "$(compose_major)" -lt 2 ]; then
    if apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: 2\.'; then
        apt-get install -y -qq docker-compose >/dev/null
    else
        echo "setup: fetching Docker Compose v2 from Debian 13 (trixie)"
        work=$(mktemp -d)
        mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
        echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
        apt_trixie="-o Dir::Etc::SourceList=$work/sources.list -o Dir::Etc::SourceParts=/dev/null \
            -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache -o APT::Sandbox::User=root"
        # shellcheck disable=SC2086
        apt-get $apt_trixie update -qq
        # shellcheck disable=SC2086
        (cd "$work" && apt-get $apt_trixie download docker-compose >/dev/null)
        dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
        install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" \
            /usr/local/lib/docker/cli-plugins/docker-compose
        rm -rf "$work"
    fi
fi

# The engine: through systemd where it is PID 1, else started here in the background.
if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl start docker
    else
        echo "setup: starting dockerd"
        nohup dockerd >/var/log/composeflux-dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see /var/log/composeflux-dockerd.log" >&2; exit 1; }
fi

# A local image for the example and the tests: busybox-static, imported (no registry needed).
IMAGE=composeflux-test/busybox:latest
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    root=$(mktemp -d)
    mkdir -p "$root/bin"
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh sleep cat echo ls true false env httpd; do ln -s busybox "$root/bin/$applet"; done
    tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
    rm -rf "$root"
fi
echo "setup: ready ($(docker compose version --short 2>/dev/null | sed 's/^/Docker Compose /'), engine $(docker version --format '{{.Server.Version}}'))"
