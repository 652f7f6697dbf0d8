#!/bin/sh
# Build (or reuse) the Debian 13 (trixie) systemd image used by the end-to-end test.
#
# The root filesystem is made with debootstrap from the Debian registry and cached under
# $CFX_E2E_CACHE (default /var/cache/composeflux-test), keyed by a hash of this recipe, so a
# second run only re-imports it (or reuses the already imported image) in a few seconds.
# Prints the image name on stdout. Needs root, debootstrap and a running dockerd.
set -eu

MIRROR=${CFX_E2E_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
INCLUDE=systemd,systemd-sysv,dbus,ca-certificates
CACHE=${CFX_E2E_CACHE:-/var/cache/composeflux-test}

# Everything that changes the result goes into the key.
RECIPE="v1 debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
TARBALL="$CACHE/rootfs-$SUITE-$KEY.tar"
IMAGE="cfx-e2e-trixie:$KEY"

log() { echo "build-rootfs: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "reusing image $IMAGE"
    echo "$IMAGE"
    exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    work=$(mktemp -d "$CACHE/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    log "debootstrap $SUITE into $work/root (about a minute)"
    env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/root" "$MIRROR" >&2
    # Small adjustments for a container boot: no getty on a console that isn't there,
    # a machine-id generated on first boot, apt without recommends (smaller, faster).
    rm -f "$work/root/etc/machine-id" && : > "$work/root/etc/machine-id"
    printf 'APT::Install-Recommends "false";\n' > "$work/root/etc/apt/apt.conf.d/90cfx-e2e"
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$work/root/etc/apt/sources.list"
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages
    tar -C "$work/root" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi
log "importing $TARBALL as $IMAGE"
docker import --change 'CMD ["/lib/systemd/systemd"]' "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE"
