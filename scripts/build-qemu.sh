#!/bin/bash
# Build snowflock's QEMU: pristine upstream source + qemu/patches + our
# hw-sf/ and migration-sf/ trees, into build/qemu/qemu-system-x86_64.
#
#   scripts/build-qemu.sh [TARBALL]
#
# Source, first found wins: TARBALL (or $QEMU_TARBALL_PATH); the cache in
# ../shared/deps next to the repository; `apt-get source qemu/trixie`.
# The tarball is verified against qemu/SHA256SUMS (the apt fallback is
# verified by apt against Debian's signed .dsc instead, since Debian may
# have moved to a newer 10.0.x point release).
#
# Incremental: the patched tree (build/src-qemu) is recreated only when the
# tarball or a patch changes; our directories are symlinked into it, so
# touching a file in hw-sf/ or migration-sf/ rebuilds only that file (and
# ccache makes even a fresh tree cheap).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
. "$repo/qemu/UPSTREAM"
# Not build/qemu-*: meson treats paths that start with its build dir
# (build/qemu) as generated files.
src=$build/src-qemu
obj=$build/qemu
dl=$build/qemu-dl
mkdir -p "$build" "$dl"

log() { echo "build-qemu: $*"; }

find_tarball() {
    local cand
    for cand in "${1:-}" "${QEMU_TARBALL_PATH:-}" \
                "$repo/../shared/deps/$QEMU_TARBALL" "$dl/$QEMU_TARBALL"; do
        if [ -n "$cand" ] && [ -f "$cand" ]; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

fetch_from_debian() {
    local list=/etc/apt/sources.list.d/snowflock-trixie-src.list
    if ! grep -rqs '^deb-src .* trixie ' /etc/apt/sources.list /etc/apt/sources.list.d/ \
       && ! grep -rqs 'Types: deb-src' /etc/apt/sources.list.d/; then
        echo 'deb-src http://deb.debian.org/debian trixie main' > "$list"
    fi
    apt-get update -q >/dev/null
    # Its output to stderr: our stdout is the tarball's path alone.
    (cd "$dl" && apt-get source --download-only qemu/trixie) >&2
    local t
    t=$(ls "$dl"/qemu_10.0.*+ds.orig.tar.xz 2>/dev/null | sort -V | tail -n1)
    [ -n "$t" ] || { echo "build-qemu: apt-get source gave no qemu 10.0 tarball" >&2; exit 1; }
    echo "$t"
}

tarball=$(find_tarball "${1:-}") || tarball=""
verified_by=""
if [ -n "$tarball" ]; then
    sum=$(sha256sum "$tarball" | cut -d' ' -f1)
    if grep -q "^$sum " "$repo/qemu/SHA256SUMS"; then
        verified_by="sha256 $sum (qemu/SHA256SUMS)"
    else
        echo "build-qemu: $tarball: sha256 $sum is not in qemu/SHA256SUMS; refusing it" >&2
        exit 1
    fi
else
    log "no cached tarball; fetching qemu/trixie with apt-get source"
    tarball=$(fetch_from_debian)
    verified_by="apt (signed Debian .dsc)"
fi
log "source $tarball, verified by $verified_by"

# The stamp names everything the patched tree is made of.
stamp_want=$( { sha256sum "$tarball" | cut -d' ' -f1; cat "$repo"/qemu/patches/*.patch | sha256sum;
                cat "$repo/qemu/devices/snowflock.mak" | sha256sum; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$src/.sf-stamp" ] || [ "$(cat "$src/.sf-stamp")" != "$stamp_want" ]; then
    log "preparing patched tree in $src"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xJf "$tarball" -C "$src.tmp"
    top=$(ls "$src.tmp")
    mv "$src.tmp/$top" "$src"
    rmdir "$src.tmp"
    for p in "$repo"/qemu/patches/*.patch; do
        log "applying $(basename "$p")"
        patch -d "$src" -p1 --quiet --forward < "$p"
    done
    cp "$repo/qemu/devices/snowflock.mak" "$src/configs/devices/x86_64-softmmu/snowflock.mak"
    echo "$stamp_want" > "$src/.sf-stamp"
fi

# Our code, linked in rather than copied so edits rebuild incrementally.
ln -sfn "$repo/hw-sf" "$src/hw/sf"
ln -sfn "$repo/migration-sf" "$src/migration/sf"
ln -sfn "$repo/migration-sf/qapi-sf.json" "$src/qapi/sf.json"
ver_h="$src/include/sf-version.h"
ver_new="#define SF_VERSION \"$(cat "$repo/VERSION")\""
[ -f "$ver_h" ] && [ "$(cat "$ver_h")" = "$ver_new" ] || echo "$ver_new" > "$ver_h"

if [ ! -f "$obj/build.ninja" ]; then
    log "configuring in $obj"
    mkdir -p "$obj"
    kvm=--enable-kvm
    (cd "$obj" && "$src/configure" \
        --python=/usr/bin/python3 \
        --target-list=x86_64-softmmu \
        --without-default-features --without-default-devices \
        --with-devices-x86_64=snowflock \
        --enable-tcg $kvm --enable-linux-io-uring --enable-fdt=system \
        --enable-slirp --enable-zstd --enable-trace-backends=log \
        --disable-docs --disable-install-blobs --disable-rust \
        --disable-werror)
fi
log "building"
t0=$(date +%s)
ninja -C "$obj" qemu-system-x86_64
log "built $obj/qemu-system-x86_64 in $(( $(date +%s) - t0 )) s"

# Firmware.  The +ds source tarball ships none; Debian's seabios and
# qemu-system-data packages do.  A normal QEMU tree has the blobs in its
# pc-bios/ and the build links them into qemu-bundle/<prefix>/share/qemu,
# the data directory a QEMU run from the build tree searches
# (get_relocated_path()); do the same with the packaged ones, so that
# this QEMU finds its firmware without -L - as upstream's qtests run it.
# seabios first: its bios-microvm.bin is what -L /usr/share/seabios gives.
datadir=$(sed -n 's/^#define CONFIG_QEMU_DATADIR "\(.*\)"$/\1/p' "$obj/config-host.h")
bundle=$obj/qemu-bundle$datadir
mkdir -p "$bundle"
linked=0
for f in /usr/share/seabios/*.bin /usr/share/qemu/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    [ -e "$src/pc-bios/$name" ] || ln -s "$f" "$src/pc-bios/$name"
    if [ ! -e "$bundle/$name" ]; then
        ln -sfn "$src/pc-bios/$name" "$bundle/$name"
        linked=$((linked + 1))
    fi
done
[ "$linked" = 0 ] || log "firmware: linked $linked packaged files into $bundle"
