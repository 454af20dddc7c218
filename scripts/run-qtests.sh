#!/bin/bash
# Upstream QEMU's own qtests that apply to our machine set, run on our tree
# as a QEMU developer would (meson test in the QEMU build directory),
# against the QEMU binary scripts/build-qemu.sh built:
#
#   qmp-cmd-test            every query-like QMP command, on -machine none
#                           (qemu/patches/0010 lists vm-fork as "not a query")
#   qom-test                every QOM property of every machine we build
#   device-introspect-test  device-list-properties of every device type
#   test-hmp                every HMP command
#   migration-test          skips itself: its x86 tests need the pc or q35
#                           machine, which is not in our build (microvm
#                           only); listed so that it runs once q35 is
#
#   scripts/run-qtests.sh [MESON-TEST-ARGS...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
obj=$build/qemu
tests=(qmp-cmd-test qom-test device-introspect-test test-hmp migration-test)

[ -x "$obj/qemu-system-x86_64" ] || "$repo/scripts/build-qemu.sh"
t0=$(date +%s)
ninja -C "$obj" qemu-system-x86_64 "${tests[@]/#/tests/qtest/}" >/dev/null
# Two at a time: the machine has two cores and other work to do.
meson test -C "$obj" --no-rebuild --print-errorlogs --num-processes 2 \
    "${tests[@]/#/qtest-x86_64/}" "$@"
echo "run-qtests: ${#tests[@]} upstream qtests in $(( $(date +%s) - t0 )) s"
