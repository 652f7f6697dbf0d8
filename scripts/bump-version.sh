#!/bin/sh
# Set the version of the next release in both places it lives, from the checkout's root:
#
#   scripts/bump-version.sh NEW_VERSION "change line" ["another change line" ...]
#
# NEW_VERSION is the Debian version (what apt shows and compares): 0.4.0, 0.4.0~rc1 for a
# pre-release (it sorts before 0.4.0 and goes to the repository's testing suite), 0.3.0+test1.
# It must sort after the top entry of packaging/debian/changelog. The script
#   - sets __version__ in composeflux/__init__.py to the same version in Python's spelling
#     (PEP 440: "~rc1" is written "rc1", "~a1" "a1", "~b1" "b1", "~dev1" ".dev1"; anything else as
#     it is); pyproject.toml reads it from there; the man pages' .TH lines name it too;
#   - prepends a packaging/debian/changelog entry with one "  * " item per change line, the
#     maintainer from packaging/debian/control (or DEBFULLNAME/DEBEMAIL) and the current date
#     (RFC 2822, as dpkg-parsechangelog wants it; SOURCE_DATE_EPOCH if set).
# tests/test_version.py checks that the two agree.
set -eu

die() { echo "bump-version: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 NEW_VERSION \"change line\" [...]"
here=$(cd "$(dirname "$0")/.." && pwd)
new=$1
shift
init=$here/composeflux/__init__.py
changelog=$here/packaging/debian/changelog
control=$here/packaging/debian/control

printf '%s\n' "$new" | grep -Eq '^[0-9][0-9A-Za-z.+~]*$' || die "not a native Debian version: $new"
old=$(dpkg-parsechangelog -l "$changelog" -S Version)
dpkg --compare-versions "$new" gt "$old" || die "$new does not sort after the current version $old"

python=$(printf '%s\n' "$new" | sed -E 's/~(a|b|rc)([0-9]+)/\1\2/; s/~dev([0-9]+)/.dev\1/')
case $python in *~*) die "$new: no PEP 440 spelling for this pre-release (use ~aN, ~bN, ~rcN or ~devN)" ;; esac

grep -q '^__version__ = "[^"]*"$' "$init" || die "no __version__ line in $init"

if [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then
    maintainer="$DEBFULLNAME <$DEBEMAIL>"
else
    maintainer=$(sed -n 's/^Maintainer: *//p' "$control")
fi
[ -n "$maintainer" ] || die "no maintainer: set DEBFULLNAME and DEBEMAIL"
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    date=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
else
    date=$(LC_ALL=C date -R)
fi
distribution=$(dpkg-parsechangelog -l "$changelog" -S Distribution)

tmp=$(mktemp "$changelog.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    printf 'composeflux (%s) %s; urgency=medium\n\n' "$new" "$distribution"
    for change in "$@"; do
        # Wrapped at 78 columns, continuation lines indented under the text.
        printf '%s\n' "$change" | fold -s -w 74 | sed -e 's/ *$//' -e '1s/^/  * /' -e '1!s/^/    /'
    done
    printf '\n -- %s  %s\n\n' "$maintainer" "$date"
    cat "$changelog"
} >"$tmp"
dpkg-parsechangelog -l "$tmp" -S Version >/dev/null 2>&1 || die "the new changelog does not parse"
cat "$tmp" >"$changelog"
rm -f "$tmp"
trap - EXIT
sed -i "s/^__version__ = \"[^\"]*\"\$/__version__ = \"$python\"/" "$init"
# The man pages name the version in their .TH line (tests/test_manpages.py checks it).
for page in "$here"/man/*.[58]; do
    [ -f "$page" ] || continue
    sed -i "1s/\"composeflux [^\"]*\"/\"composeflux $python\"/" "$page"
done
echo "bump-version: $old -> $new (__version__ = \"$python\")" >&2
