#!/bin/sh
# Build the composeflux .deb and source package, unsigned, from this checkout (Debian 12 or 13
# build host).
#
#   packaging/build-deb.sh [OUTDIR]          (default OUTDIR: ./dist)
#
# Needs: build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
# (and lintian for CFX_LINTIAN=1). Copies the files Git knows about (tracked, plus untracked ones
# that are not ignored; so it also works in a fresh clone) into a temporary tree, copies
# packaging/debian/ there as debian/ (debian/rules takes the units from packaging/systemd/ itself),
# runs
#   dpkg-buildpackage -us -uc
# with a plain Debian PATH (a pyenv python3 earlier on PATH must not hijack pybuild) and copies
# the .deb, the source package (.dsc and .tar.xz, format per debian/source/format) and the
# .buildinfo/.changes to OUTDIR. With CFX_LINTIAN=1 it then runs lintian on the .deb and the .dsc
# and fails on any error or warning. Prints the path of the .deb on stdout.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYENV_VERSION

work=$(mktemp -d "${TMPDIR:-/tmp}/composeflux-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/composeflux

mkdir "$src"
cd "$here"
git ls-files -z --cached --others --exclude-standard -- . ':!:debian' ':!:dist' |
    xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
    tar --null -T - -cf - | tar -C "$src" -xf -

# A copy, not a symlink: the source package then has a real debian/ directory, as dpkg-source
# and lintian expect.
cp -r "$src/packaging/debian" "$src/debian"

cd "$src"
# A full build (source, then binary): the source package is built from the clean tree.
LC_ALL=C.UTF-8 dpkg-buildpackage -us -uc >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed" >&2
    exit 1
}

version=$(dpkg-parsechangelog -S Version)
deb=composeflux_${version}_all.deb
dsc=composeflux_${version}.dsc
# The source package is the .dsc and the files its Files: field names (for "3.0 (native)" one
# .tar.xz): copy exactly those, whatever the format.
for f in "$deb" "$dsc" $(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]\{32\} [0-9]* //p' "$work/$dsc"); do
    cp "$work/$f" "$out/"
done
for f in "$work"/composeflux_"${version}"_*.buildinfo "$work"/composeflux_"${version}"_*.changes; do
    [ -e "$f" ] && cp "$f" "$out/"
done

if [ "${CFX_LINTIAN:-0}" = 1 ]; then
    lintian --fail-on error,warning --info "$out/$deb" "$out/$dsc" >&2
fi
echo "$out/$deb"
