#!/bin/bash
# Set everything up (scripts/build.sh), boot a VM under snowflock's QEMU,
# fork it into clones with vm-fork and print what happened, per clone.
#   scripts/demo.sh [--clones N] [--mib M] [--no-prefetch]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/build.sh" > "${BUILD_DIR:-$repo/build}/build.log" 2>&1 || {
    echo "demo: build failed; see ${BUILD_DIR:-$repo/build}/build.log" >&2
    tail -20 "${BUILD_DIR:-$repo/build}/build.log" >&2
    exit 1
}
exec /usr/bin/python3 "$repo/scripts/demo.py" "$@"
