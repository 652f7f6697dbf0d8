#!/bin/sh
# The front door: on a fresh Debian machine (as root), set everything up and run a real sync of
# the bundled example stacks (examples/stacks), served from a local Git repository built here.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-host.sh"

demo=${COMPOSEFLUX_DEMO_DIR:-/tmp/composeflux-demo}
rm -rf "$demo/work"
mkdir -p "$demo"
[ -d "$demo/remote.git" ] || git init -q --bare --initial-branch=main "$demo/remote.git"
git init -q --initial-branch=main "$demo/work"
cp -r "$here/examples/stacks" "$demo/work/stacks"
git -C "$demo/work" add -A
git -C "$demo/work" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "Example stacks"
git -C "$demo/work" push -q --force "$demo/remote.git" HEAD:main

cat > "$demo/composeflux.conf" <<CONF
GIT_REPO_URL=$demo/remote.git
GIT_BRANCH=main
STACK_PATH=stacks
CONF
echo "demo: syncing $demo/remote.git (stacks/) with composeflux"
export PYTHONPATH="$here" STATE_DIRECTORY="$demo/state"
/usr/bin/python3 -m composeflux --config "$demo/composeflux.conf" sync
/usr/bin/python3 -m composeflux --config "$demo/composeflux.conf" status
docker ps --filter label=compose.stack.managed-by=composeflux \
    --format 'table {{.Names}}\t{{.Status}}\t{{.Label "compose.stack.commit"}}'
cat <<DONE

demo: done. Edit $demo/work/stacks, commit, push to $demo/remote.git and run again:
  PYTHONPATH=$here STATE_DIRECTORY=$demo/state python3 -m composeflux --config $demo/composeflux.conf sync
Remove the example stacks with:
  docker compose -p example-web down && docker compose -p example-worker down && rm -rf $demo
DONE
