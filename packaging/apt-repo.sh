#!/bin/sh
# Build (or update) composeflux's signed apt repository from built .debs, with Debian's own tools
# (apt-ftparchive from apt-utils, and gpg). The result is plain files: copy OUTDIR to any static
# web host (docs/apt.md: "Publishing a release").
#
#   packaging/apt-repo.sh OUTDIR [DEB...]        (default DEBs: dist/composeflux_*_all.deb)
#
# With no .deb given and none in dist/, it indexes and signs OUTDIR's pool again (a new Date:,
# a new Valid-Until:, another key).
#
# OUTDIR may already hold the repository: the given .debs are added to its pool (a version that
# is there already must be the same file: a published version never changes), then every index
# is written again from the whole pool and signed. Layout:
#
#   composeflux-archive-keyring.gpg                  the public key(s), a binary OpenPGP keyring
#   pool/main/c/composeflux/composeflux_V_all.deb    every version ever published
#   pool/main/c/composeflux/composeflux_V.changelog  its debian/changelog, for `apt changelog`
#   dists/SUITE/{Release,Release.gpg,InRelease}
#   dists/SUITE/main/binary-all/Packages{,.gz,.xz}   the packages
#   dists/SUITE/main/binary-ARCH/Packages{,.gz,.xz}  empty, for each ARCH in Architectures
#
# Suites: `stable` holds the releases (versions without "~"), `testing` every version, releases
# and pre-releases (0.4.0~rc1 sorts before 0.4.0): a host following testing gets the newest of
# both. Both keep every older version too, so `apt install composeflux=VERSION` can go back.
#
# Environment:
#   CFX_APT_SIGNING_KEY   required: the key(s) that sign (fingerprint, or several separated by
#                         spaces while a key is rotated: each signs, and all are exported into
#                         composeflux-archive-keyring.gpg)
#   GNUPGHOME             gpg's home holding the secret key(s) (default ~/.gnupg)
#   CFX_APT_URL           where the repository is published, for the Changelogs: field
#                         (default https://apt.composeflux.example/)
#   CFX_APT_VALID_DAYS    if set, a Valid-Until: this many days ahead (the repository must then be
#                         signed again before it expires, or apt refuses it); default: none
#   CFX_APT_ARCHITECTURES the architectures apt may ask for (default below): each gets an empty
#                         binary-ARCH index, so `apt update` on any of them is warning-free
set -eu

usage() { echo "usage: $0 OUTDIR [DEB...]  (CFX_APT_SIGNING_KEY=FINGERPRINT)" >&2; exit 2; }
die() { echo "apt-repo: $*" >&2; exit 1; }

[ $# -ge 1 ] || usage
here=$(cd "$(dirname "$0")/.." && pwd)
out=$1
shift
if [ $# -eq 0 ]; then
    # The default: dist/'s .debs, if any (none: the pool is indexed and signed again as it is).
    set -- "$here"/dist/composeflux_*_all.deb
    [ -e "$1" ] || set --
fi
[ -n "${CFX_APT_SIGNING_KEY:-}" ] || die "set CFX_APT_SIGNING_KEY to the fingerprint of the signing key"
command -v apt-ftparchive >/dev/null || die "apt-ftparchive is missing (apt-get install apt-utils)"
command -v gpg >/dev/null || die "gpg is missing (apt-get install gnupg)"

URL=${CFX_APT_URL:-https://apt.composeflux.example/}
case $URL in */) ;; *) URL=$URL/ ;; esac
ARCHES=${CFX_APT_ARCHITECTURES:-amd64 arm64 armel armhf i386 mips64el ppc64el riscv64 s390x}
POOL=pool/main/c/composeflux
SUITES="stable testing"

mkdir -p "$out/$POOL"
out=$(cd "$out" && pwd)

# 1. The pool: add the new .debs.
for deb in "$@"; do
    [ -f "$deb" ] || die "no such .deb: $deb"
    package=$(dpkg-deb -f "$deb" Package)
    version=$(dpkg-deb -f "$deb" Version)
    arch=$(dpkg-deb -f "$deb" Architecture)
    [ "$package" = composeflux ] && [ "$arch" = all ] || die "$deb is $package/$arch, not composeflux/all"
    target=$out/$POOL/composeflux_${version}_all.deb
    if [ -e "$target" ]; then
        cmp -s "$deb" "$target" || die "$target is already published with other contents: bump the version"
        continue
    fi
    cp "$deb" "$target.tmp"
    mv "$target.tmp" "$target"
    echo "apt-repo: added composeflux $version" >&2
done

# 2. The changelog of every version, where the Changelogs: field points apt:
#    ${URL}pool/@CHANGEPATH@.changelog, @CHANGEPATH@ = main/c/composeflux/composeflux_VERSION.
for deb in "$out/$POOL"/composeflux_*_all.deb; do
    [ -e "$deb" ] || die "the pool is empty: no .deb given and none in dist/"
    version=$(dpkg-deb -f "$deb" Version)
    changelog=$out/$POOL/composeflux_${version}.changelog
    [ -s "$changelog" ] && continue
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/share/doc/composeflux/changelog.gz | gzip -dc >"$changelog.tmp"
    [ -s "$changelog.tmp" ] || die "$deb has no /usr/share/doc/composeflux/changelog.gz"
    mv "$changelog.tmp" "$changelog"
done

# 3. The indices, from scratch in a temporary dists/ that replaces the old one at the end.
cd "$out"
work=$(mktemp -d "$out/.dists.XXXXXX")
trap 'rm -rf "$work"' EXIT
all=$work/all-packages
apt-ftparchive packages "$POOL" >"$all"

compress() {
    gzip -9n -c "$1" >"$1.gz"
    xz -9 -c "$1" >"$1.xz"
}

date=$(LC_ALL=C date -u -R)
valid=""
if [ -n "${CFX_APT_VALID_DAYS:-}" ]; then
    valid=$(LC_ALL=C date -u -R -d "+${CFX_APT_VALID_DAYS} days")
fi

for suite in $SUITES; do
    dir=$work/dists/$suite
    mkdir -p "$dir/main/binary-all"
    if [ "$suite" = stable ]; then
        # Releases only: no stanza whose Version has a "~".
        awk 'BEGIN { RS = ""; ORS = "\n\n" } !/(^|\n)Version: [^\n]*~/' "$all" >"$dir/main/binary-all/Packages"
    else
        cp "$all" "$dir/main/binary-all/Packages"
    fi
    compress "$dir/main/binary-all/Packages"
    for arch in $ARCHES; do
        mkdir -p "$dir/main/binary-$arch"
        : >"$dir/main/binary-$arch/Packages"
        compress "$dir/main/binary-$arch/Packages"
    done
    (
        cd "$dir"
        set -- -o APT::FTPArchive::Release::Origin=composeflux \
            -o APT::FTPArchive::Release::Label=composeflux \
            -o APT::FTPArchive::Release::Suite="$suite" \
            -o APT::FTPArchive::Release::Codename="$suite" \
            -o APT::FTPArchive::Release::Architectures="all $ARCHES" \
            -o APT::FTPArchive::Release::Components=main \
            -o APT::FTPArchive::Release::Description="composeflux: GitOps for Docker Compose ($suite)" \
            -o APT::FTPArchive::Release::Date="$date" \
            -o APT::FTPArchive::Release::MD5=false \
            -o APT::FTPArchive::Release::SHA1=false
        [ -z "$valid" ] || set -- "$@" -o APT::FTPArchive::Release::Valid-Until="$valid"
        apt-ftparchive "$@" release . >"$work/Release.$suite"
    )
    # apt-ftparchive writes no Changelogs: field: add it before the checksums.
    awk -v field="Changelogs: ${URL}pool/@CHANGEPATH@.changelog" \
        '!done && /^(MD5Sum|SHA1|SHA256|SHA512):/ { print field; done = 1 } { print }' \
        "$work/Release.$suite" >"$dir/Release"
    signers=""
    for key in $CFX_APT_SIGNING_KEY; do signers="$signers --local-user $key"; done
    # shellcheck disable=SC2086
    gpg --batch --yes --quiet --digest-algo SHA512 $signers --clearsign -o "$dir/InRelease" "$dir/Release"
    # shellcheck disable=SC2086
    gpg --batch --yes --quiet --digest-algo SHA512 $signers --armor --detach-sign -o "$dir/Release.gpg" "$dir/Release"
done

# shellcheck disable=SC2086
gpg --batch --export $CFX_APT_SIGNING_KEY >"$work/keyring"
[ -s "$work/keyring" ] || die "gpg exported no public key for $CFX_APT_SIGNING_KEY"

rm -rf "$out/dists.old"
[ ! -e "$out/dists" ] || mv "$out/dists" "$out/dists.old"
mv "$work/dists" "$out/dists"
rm -rf "$out/dists.old"
mv "$work/keyring" "$out/composeflux-archive-keyring.gpg"
echo "apt-repo: $out: $(grep -c '^Package:' "$out/dists/stable/main/binary-all/Packages" || true) version(s) in stable," \
    "$(grep -c '^Package:' "$out/dists/testing/main/binary-all/Packages" || true) in testing" >&2
