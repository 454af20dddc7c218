#!/bin/bash
# Set everything up (scripts/build.sh), then:
#   1. under sfd, a program inside a VM forks its own VM (sf-job: C over
#      libsf), then sfclone does it from the guest's shell;
#   2. an operator forks a VM with QMP vm-fork, and every clone proves
#      its memory is the parent's at the fork instant;
#   3. clones on two other hosts (network namespaces) fed by the fork's
#      multicast group, its egress beside unicast's.
#   scripts/demo.sh [--clones N] [--mib M] [--no-prefetch]   (options: part 2)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/build.sh" > "${BUILD_DIR:-$repo/build}/build.log" 2>&1 || {
    echo "demo: build failed; see ${BUILD_DIR:-$repo/build}/build.log" >&2
    tail -20 "${BUILD_DIR:-$repo/build}/build.log" >&2
    exit 1
}
echo "== 1. a guest program forks its own VM (sfd, libsf, sfclone) =="
/usr/bin/python3 "$repo/scripts/demo_guest.py"
echo
echo "== 2. vm-fork over QMP: clones fetch memory lazily, verified page by page =="
/usr/bin/python3 "$repo/scripts/demo.py" "$@"
echo
echo "== 3. clones on other hosts: one multicast page serves every clone =="
exec /usr/bin/python3 "$repo/scripts/demo_mcast.py"
