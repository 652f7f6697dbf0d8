#!/bin/sh
# Lint and type-check: ruff over all of the repository's Python, mypy (strict) over composeflux/.
# Exits non-zero on any finding of either. Configuration: pyproject.toml ([tool.ruff], [tool.mypy]).
#   scripts/lint.sh          check
#   scripts/lint.sh --fix    let ruff fix what it safely can first, then report the rest
# The tools and the libraries whose types mypy reads come pinned from scripts/lint-requirements.txt
# into .venv-lint/ (gitignored), built with Debian's /usr/bin/python3 on the first run and reused
# while that file is unchanged. On a fresh Debian machine, as root, it installs python3-venv.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv-lint"
requirements="$here/scripts/lint-requirements.txt"
stamp="$venv/.lint-requirements"

ruff_args=""
for arg in "$@"; do
    case "$arg" in
        --fix) ruff_args="--fix" ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "lint: unknown argument '$arg' (only --fix)" >&2; exit 2 ;;
    esac
done

# The venv is current when it was built from exactly this requirements file by this interpreter.
want() { /usr/bin/python3 --version; cat "$requirements"; }
if [ -x /usr/bin/python3 ] && [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null \
        && [ -f "$stamp" ] && [ "$(want)" = "$(cat "$stamp")" ]; then
    :
else
    "$here/scripts/ensure-packages.sh" python3 python3-venv
    echo "lint: building $venv from scripts/lint-requirements.txt"
    /usr/bin/python3 -m venv --clear "$venv"
    # --no-deps: the file lists every dependency itself, pinned; pip check proves none is missing.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --only-binary :all: --no-deps -r "$requirements"
    "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null \
        || { "$venv/bin/python" -m pip check; echo "lint: scripts/lint-requirements.txt is incomplete" >&2; exit 1; }
    want > "$stamp.new" && mv "$stamp.new" "$stamp"
fi

# Caches inside the venv: never in the work tree, and gone with a rebuilt venv.
export RUFF_CACHE_DIR="$venv/cache/ruff" MYPY_CACHE_DIR="$venv/cache/mypy"
cd "$here"
status=0
echo "lint: $("$venv/bin/ruff" --version) check"
# shellcheck disable=SC2086
"$venv/bin/ruff" check $ruff_args || status=1
echo "lint: $("$venv/bin/mypy" --version | cut -d' ' -f1-2) (strict)"
"$venv/bin/mypy" || status=1
[ "$status" -eq 0 ] && echo "lint: clean"
exit "$status"
