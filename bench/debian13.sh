#!/bin/sh
# bench/compare.py on Debian 13 (trixie): its Python, its python3-* packages (newer PyYAML, click
# and cryptography than Debian 12's; python3-docker only for the SDK's figure), its docker-cli and docker-compose, against
# this host's Docker engine (the socket is shared with the container; no engine runs inside).
#
#     bench/debian13.sh [compare.py options]      e.g. bench/debian13.sh --stacks 50 --repeat 3
#
# The image is the end-to-end test's Debian 13 root filesystem (tests/e2e/build-rootfs.sh) with
# composeflux's dependencies installed from the Debian registry once, kept as
# cfx-bench-trixie:<key of the recipe> (`docker rmi` it to rebuild). The checkout is mounted
# read-only; everything the benchmark creates is removed at its end, as on the host. Root, a
# running dockerd and debootstrap (tests/e2e/setup.sh installs it) are needed.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="procps python3 python3-yaml python3-click python3-cryptography python3-requests python3-docker git docker-cli docker-compose"
base=$(tests/e2e/build-rootfs.sh)
key=$(printf '%s %s' "$base" "$PACKAGES" | sha256sum | cut -c1-12)
image="cfx-bench-trixie:$key"

if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "debian13: installing $PACKAGES into $image (once)" >&2
    name="cfx-bench-build-$$"
    trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
    docker run --name "$name" --network host --entrypoint /bin/sh "$base" -c \
        "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null"
    docker commit "$name" "$image" >/dev/null
    docker rm "$name" >/dev/null
    trap - EXIT
fi

# The local test image every bench stack runs (built on the host, where the test helpers are).
/usr/bin/python3 -c 'import sys; sys.path.insert(0, "bench"); import compare; compare.ensure_image()'

docker run --rm --network host --entrypoint /bin/sh \
    -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD:/src:ro" --tmpfs /tmp:exec \
    -e PYTHONPYCACHEPREFIX=/tmp/pycache "$image" -c \
    'echo "debian13: $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version), python3-docker $(dpkg-query -W -f "\${Version}" python3-docker), docker-compose $(dpkg-query -W -f "\${Version}" docker-compose)"; cd /src && exec python3 bench/compare.py "$@"' \
    debian13 "$@"
