#!/bin/bash
# Set everything up (scripts/build.sh) and run the whole test suite:
# unit tests (GLib g_test, via meson), upstream QEMU's qtests that apply
# to our tree (scripts/run-qtests.sh) and integration tests (pytest, real
# VMs under our QEMU).  Prints counts; exits non-zero if anything failed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
export BUILD_DIR=$build

"$repo/scripts/build.sh" || { echo "run-tests: build failed" >&2; exit 1; }

echo; echo "=== unit tests ==="
meson test -C "$build/host" --print-errorlogs
unit_rc=$?

echo; echo "=== upstream QEMU qtests ==="
"$repo/scripts/run-qtests.sh"
qtest_rc=$?

echo; echo "=== integration tests ==="
cd "$repo/tests/integration"
# Debian's python3 has pytest (python3-pytest); a pyenv python3 may not.
/usr/bin/python3 -m pytest -v -p no:cacheprovider "$@" .
int_rc=$?

echo
echo "run-tests: unit rc=$unit_rc, qtest rc=$qtest_rc, integration rc=$int_rc"
[ $unit_rc = 0 ] && [ $qtest_rc = 0 ] && [ $int_rc = 0 ]
