#!/bin/bash
# Build the snowflock Debian 12 guest: a read-only ext4 root disk booted by
# the busybox initramfs of scripts/build-guest.sh with sf.root=/dev/vda.
#
# Outputs ($BUILD_DIR defaults to <repo>/build):
#   $BUILD_DIR/guest-debian/rootfs.img   raw ext4 (label sfroot, no journal):
#                                        debootstrap --variant=minbase bookworm
#                                        + python3 iproute2 procps, the
#                                        snowflock-guest .deb installed with
#                                        dpkg, /sbin/sf-init (guest-debian/sf-init)
#   $BUILD_DIR/guest-debian/vmlinuz      -> ../guest/vmlinuz    (same kernel)
#   $BUILD_DIR/guest-debian/initrd.img   -> ../guest/initrd.img (same initramfs)
#
# Boot it (tests/integration/sfvm.py: VM(..., debian=True)):
#   -kernel vmlinuz -initrd initrd.img -append '... sf.root=/dev/vda'
#   -drive file=rootfs.img,format=raw,if=none,readonly=on,id=root
#   -device virtio-blk-device,drive=root
# The initramfs mounts the disk read-only under an overlay whose upper layer
# is a tmpfs, so every VM and every clone writes only to its own RAM; the
# image is never written and can back any number of VMs at once.
#
# Caches (so a rebuild takes seconds): the .debs debootstrap downloads
# ($OUT/cache, debootstrap --cache-dir) and the bootstrapped tree ($OUT/base,
# redone only when the package list or mirror changes).  The image is rebuilt
# when the base, the snowflock-guest package, sf-init or this script change.
#
# Environment:
#   BUILD_DIR               build root
#   DEBIAN_MIRROR           default http://deb.debian.org/debian
#   SF_GUEST_DEB_PARTIAL=1  build the image even if the snowflock-guest
#                           package lacks parts (see scripts/build-guest-deb.sh)
#   FORCE=1                 rebuild the image; FORCE=2 also redo debootstrap
# Needs root, debootstrap, e2fsprogs (mkfs.ext4 -d), dpkg-deb.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
export BUILD_DIR
OUT=$BUILD_DIR/guest-debian
CACHE=$OUT/cache
BASE=$OUT/base
STAGE=$OUT/rootfs
IMG=$OUT/rootfs.img
STAMP=$OUT/.build-stamp
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
INCLUDE=python3,iproute2,procps
SF_INIT=$ROOT/guest-debian/sf-init
SELF=$ROOT/scripts/build-guest-debian.sh

log() { echo "build-guest-debian: $*" >&2; }
die() { echo "build-guest-debian: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$(now)

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mkfs -d with owners)"
for tool in debootstrap mkfs.ext4 dpkg-deb chroot; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/setup-host.sh installs it)"
done
mkdir -p "$OUT" "$CACHE"

# ---------------------------------------------------------------- kernel + initramfs
"$ROOT/scripts/build-guest.sh"
ln -sfn ../guest/vmlinuz "$OUT/vmlinuz"
ln -sfn ../guest/initrd.img "$OUT/initrd.img"

# ---------------------------------------------------------------- base tree
BASE_KEY="suite=$SUITE variant=minbase include=$INCLUDE mirror=$MIRROR"
if [ "${FORCE:-0}" = 2 ] || [ ! -f "$BASE/.sf-base" ] || [ "$(cat "$BASE/.sf-base")" != "$BASE_KEY" ]; then
    t=$(now)
    log "debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR"
    rm -rf "$BASE" "$BASE.tmp"
    # debootstrap mounts /proc and /sys in the target; unmount them if it dies.
    trap 'umount -R "$BASE.tmp/proc" "$BASE.tmp/sys" 2>/dev/null || true' EXIT
    debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE" \
        "$SUITE" "$BASE.tmp" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 || {
        tail -n 30 "$OUT/debootstrap.log" >&2
        die "debootstrap failed (full log: $OUT/debootstrap.log)"
    }
    trap - EXIT
    rm -rf "$BASE.tmp"/var/cache/apt/archives/*.deb "$BASE.tmp"/var/lib/apt/lists/*_Packages \
           "$BASE.tmp"/var/cache/apt/*.bin
    echo "$BASE_KEY" > "$BASE.tmp/.sf-base"
    mv "$BASE.tmp" "$BASE"
    log "debootstrap done in $(since "$t") s"
fi

# ---------------------------------------------------------------- package
DEB=$("$ROOT/scripts/build-guest-deb.sh")
[ -f "$DEB" ] || die "scripts/build-guest-deb.sh produced no package"
MISSING=$OUT/snowflock-guest.missing

# ---------------------------------------------------------------- up to date?
STAMP_CONTENT="base=$BASE_KEY
deb=$(md5sum < "$DEB" | cut -d' ' -f1)
missing=$(cat "$MISSING" 2>/dev/null | tr '\n' ' ')
sf-init=$(md5sum < "$SF_INIT" | cut -d' ' -f1)
script=$(md5sum < "$SELF" | cut -d' ' -f1)"
if [ "${FORCE:-0}" = 0 ] && [ -f "$IMG" ] && [ -f "$STAMP" ] &&
   [ "$(cat "$STAMP")" = "$STAMP_CONTENT" ]; then
    log "up to date (FORCE=1 to rebuild): $IMG ($(stat -c %s "$IMG") bytes)"
    exit 0
fi

# ---------------------------------------------------------------- staging
t=$(now)
rm -rf "$STAGE"
cp -a "$BASE" "$STAGE"
rm -f "$STAGE/.sf-base"
R=$STAGE

echo sfguest > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tsfguest\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
echo 'nameserver 10.0.2.3' > "$R/etc/resolv.conf"          # QEMU user networking
printf '# The root file system is an overlay set up by the initramfs (sf.root=).\n' > "$R/etc/fstab"
chroot "$R" passwd -d root >/dev/null                       # serial console only
install -m 0755 "$SF_INIT" "$R/sbin/sf-init"
mkdir -p "$R/etc/snowflock/post-clone.d" "$R/root"
cat > "$R/root/.bashrc" <<'EOF'
# snowflock guest: plain prompt for the serial console test harness.
PS1='# '
HISTFILE=
EOF
# No bracketed-paste escapes around every command on the serial line.
printf 'set enable-bracketed-paste off\nset bell-style none\n' > "$R/root/.inputrc"
printf '[ -f ~/.bashrc ] && . ~/.bashrc\n' > "$R/root/.profile"

# snowflock-guest, the Debian way (ldconfig trigger, py3compile postinst).
cp "$DEB" "$R/tmp/snowflock-guest.deb"
chroot "$R" dpkg -i /tmp/snowflock-guest.deb >&2 || die "dpkg -i snowflock-guest failed"
rm -f "$R/tmp/snowflock-guest.deb"
chroot "$R" dpkg-query -W -f='${Package} ${Version} ${Status}\n' snowflock-guest >&2

# Trim what a test VM never reads (keeps copyright files).
rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/lintian \
       "$R"/var/cache/debconf/*-old "$R"/var/log/*.log "$R"/var/log/apt/*
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
find "$R/usr/share/doc" -mindepth 2 ! -name copyright ! -path '*/snowflock-guest/*' \
     \( -type f -o -type l \) -delete
find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete
log "staged root in $(since "$t") s"

# ---------------------------------------------------------------- image
t=$(now)
used_kib=$(du -sk "$R" | cut -f1)
inodes=$(find "$R" | wc -l)
size_mib=$(( (used_kib * 5 / 4) / 1024 + 48 ))
rm -f "$IMG.tmp"
truncate -s "${size_mib}M" "$IMG.tmp"
# No journal: the disk is only ever mounted read-only.
mkfs.ext4 -q -F -L sfroot -O ^has_journal -m 0 -N $((inodes + inodes / 4 + 1024)) \
    -E lazy_itable_init=0,root_owner=0:0 -d "$R" "$IMG.tmp" ||
    die "mkfs.ext4 -d failed"
e2fsck -fn "$IMG.tmp" >/dev/null 2>&1 || die "fresh image fails e2fsck"
mv "$IMG.tmp" "$IMG"
echo "$STAMP_CONTENT" > "$STAMP"
rm -rf "$STAGE"
log "image in $(since "$t") s"
if [ -s "$MISSING" ]; then
    log "warning: snowflock-guest is a PARTIAL package; missing: $(tr '\n' ' ' < "$MISSING")"
fi
log "$(printf 'rootfs.img %d bytes (%d MiB, %d MiB used)  %s' "$(stat -c %s "$IMG")" "$size_mib" $((used_kib / 1024)) "$IMG")"
log "total $(since "$t_start") s"
