#!/bin/bash
# Set up and build everything snowflock needs on a fresh Debian 12, as root:
# host packages, our QEMU, the host-side library/tools/unit tests, and the
# guest image.  Idempotent: reruns reuse what is built.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
export BUILD_DIR=$build

step() { echo; echo "=== $* ==="; }

step "host packages"
"$repo/scripts/setup-host.sh"

step "QEMU (pinned upstream + qemu/patches + hw-sf, migration-sf)"
"$repo/scripts/build-qemu.sh"

step "host library, tools and unit tests"
if [ ! -f "$build/host/build.ninja" ]; then
    meson setup "$build/host" "$repo"
fi
ninja -C "$build/host"

# Both after the host build: the images take the guest agent from $build/host.
step "guest image (busybox initramfs)"
t=$SECONDS
"$repo/scripts/build-guest.sh"
echo "build: busybox guest $((SECONDS - t)) s"

# ~40 s from scratch (debootstrap, .debs cached in $build/guest-debian/cache),
# seconds when only the snowflock-guest package changed.
step "Debian 12 guest image (read-only root disk + snowflock-guest .deb)"
t=$SECONDS
"$repo/scripts/build-guest-debian.sh"
echo "build: Debian guest $((SECONDS - t)) s"
