#!/bin/bash
# Build the snowflock test guest: a Debian kernel plus a busybox initramfs.
#
# Outputs (BUILD_DIR defaults to <repo>/build):
#   $BUILD_DIR/guest/vmlinuz      kernel of Debian's linux-image-amd64
#   $BUILD_DIR/guest/initrd.img   gzip'd newc cpio: busybox, virtio modules,
#                                 /init (guest-agent/init), /usr/bin/sfpattern,
#                                 the guest agent's static programs (below)
#   $BUILD_DIR/guest/vmlinux      only with GUEST_VMLINUX=1: same kernel as an
#                                 uncompressed PVH ELF.  Boots ~3 s faster under
#                                 TCG but was flaky on microvm (early #DE/hang in
#                                 ~10-30% of boots), so vmlinuz is the default.
#
# Guest agent: when present, $BUILD_DIR/host/guest-agent/{sf-agent,sfclone}
# and every executable in $BUILD_DIR/host/guest-agent/examples/ are copied to
# /usr/bin (static binaries built by meson); missing ones are only logged.
#
# Root disk: /lib/modules/load-order-root (virtio_blk, ext4 and its deps,
# overlay) is loaded by /init only with sf.root=..., which mounts that disk
# read-only under a tmpfs overlay and switch_roots into it (see
# scripts/build-guest-debian.sh).
#
# Environment:
#   BUILD_DIR            build root (default <repo>/build)
#   GUEST_EXTRA_BINS     space-separated static executables copied to /usr/bin
#   GUEST_EXTRA_MODULES  space-separated extra module names to load at boot
#   GUEST_VMLINUX=1      also extract build/guest/vmlinux (see above)
#   FORCE=1              rebuild even if outputs look up to date
#
# Kernel and busybox come from Debian .debs (apt-get download, cached in
# $BUILD_DIR/guest/debs) and are only extracted with dpkg-deb -x, never
# installed on the host.  Needs: apt-get, dpkg-deb, gcc (+ static libc),
# cpio, gzip, xz/zstd only if the kernel ships compressed modules.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$BUILD_DIR/guest
DEBS=$OUT/debs
WORK=$OUT/work
VMLINUZ=$OUT/vmlinuz
INITRD=$OUT/initrd.img
STAMP=$OUT/.build-stamp

SELF=$ROOT/scripts/build-guest.sh
INIT_SRC=$ROOT/guest-agent/init
SFPATTERN_SRC=$ROOT/guest-agent/sfpattern.c
EXTRA_BINS=${GUEST_EXTRA_BINS:-}
AGENT_DIR=$BUILD_DIR/host/guest-agent
# vmgenid: a clone's kernel reseeds its RNG when QEMU gives it a new VM
# generation ID (built in to Debian's kernel; loaded here where it is =m).
WANT_MODULES="virtio_ring virtio virtio_mmio virtio_console virtio_balloon \
failover net_failover virtio_net virtio_blk virtio_rng vmgenid ${GUEST_EXTRA_MODULES:-}"
# Only for sf.root= (a read-only ext4 root disk under a tmpfs overlay).
# crc32c_generic: ext4/jbd2 get crc32c from the crypto API (a request_module
# the initramfs could not serve), so it is loaded up front.
ROOT_MODULES="virtio_blk crc32c_generic crc16 mbcache jbd2 ext4 overlay"

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

mkdir -p "$OUT" "$DEBS"

# ---------------------------------------------------------------- kernel pkg
resolve_kernel_pkg() {
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
    if [ -z "$pkg" ]; then
        log "apt-cache has no linux-image-amd64; running apt-get update"
        apt-get update -qq >&2 || true
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
              sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
    fi
    if [ -z "$pkg" ]; then
        # Offline fallback: newest cached kernel deb.
        pkg=$(ls "$DEBS"/linux-image-[0-9]*_*.deb 2>/dev/null | sort -V | tail -n1 |
              sed 's|.*/||; s|_.*||')
    fi
    [ -n "$pkg" ] || die "cannot resolve the kernel behind linux-image-amd64"
    echo "$pkg"
}

KPKG=$(resolve_kernel_pkg)

# Guest agent programs, when built (static; see the header).
AGENT_BINS=""
for f in "$AGENT_DIR/sf-agent" "$AGENT_DIR/sfclone" "$AGENT_DIR"/examples/*; do
    [ -f "$f" ] && [ -x "$f" ] && AGENT_BINS="$AGENT_BINS $f"
done
AGENT_BINS=${AGENT_BINS# }
STAMP_CONTENT="kpkg=$KPKG agent_bins=$AGENT_BINS extra_bins=$EXTRA_BINS extra_modules=${GUEST_EXTRA_MODULES:-} vmlinux=${GUEST_VMLINUX:-0}"

# ---------------------------------------------------------------- up to date?
up_to_date() {
    [ "${FORCE:-0}" = 1 ] && return 1
    [ -f "$VMLINUZ" ] && [ -f "$INITRD" ] && [ -f "$STAMP" ] || return 1
    [ "$(cat "$STAMP")" = "$STAMP_CONTENT" ] || return 1
    local f
    for f in "$SELF" "$INIT_SRC" "$SFPATTERN_SRC" $AGENT_BINS $EXTRA_BINS; do
        [ -e "$f" ] || return 1
        [ "$f" -ot "$VMLINUZ" ] && [ "$f" -ot "$INITRD" ] || return 1
    done
    return 0
}

print_sizes() {
    log "kernel package: $KPKG"
    log "$(printf '%-10s %10d bytes  %s' vmlinuz "$(stat -c %s "$VMLINUZ")" "$VMLINUZ")"
    log "$(printf '%-10s %10d bytes  %s' initrd "$(stat -c %s "$INITRD")" "$INITRD")"
    if [ -f "$OUT/vmlinux" ]; then
        log "$(printf '%-10s %10d bytes  %s' vmlinux "$(stat -c %s "$OUT/vmlinux")" "$OUT/vmlinux (PVH ELF, optional)")"
    fi
}

if up_to_date; then
    log "up to date (FORCE=1 to rebuild)"
    print_sizes
    exit 0
fi

for f in "$INIT_SRC" "$SFPATTERN_SRC"; do
    [ -f "$f" ] || die "missing $f"
done
for f in $EXTRA_BINS; do
    [ -f "$f" ] && [ -x "$f" ] || die "GUEST_EXTRA_BINS: $f is not an executable file"
done

# ---------------------------------------------------------------- downloads
fetch_deb() { # package -> path of cached .deb on stdout
    local pkg=$1 deb
    deb=$(ls "$DEBS/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading $pkg"
        (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
            die "apt-get download $pkg failed"
        deb=$(ls "$DEBS/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    fi
    [ -n "$deb" ] || die "no .deb for $pkg"
    echo "$deb"
}

KDEB=$(fetch_deb "$KPKG")
BBDEB=$(fetch_deb busybox-static)

rm -rf "$WORK"
mkdir -p "$WORK/kernel" "$WORK/busybox" "$WORK/root"
log "extracting $(basename "$KDEB")"
dpkg-deb -x "$KDEB" "$WORK/kernel"
dpkg-deb -x "$BBDEB" "$WORK/busybox"

KIMG=$(ls "$WORK"/kernel/boot/vmlinuz-* | head -n1)
[ -f "$KIMG" ] || die "no boot/vmlinuz-* in $KDEB"
KVER=${KIMG##*/vmlinuz-}
KCONFIG=$WORK/kernel/boot/config-$KVER
MODDIR=$(ls -d "$WORK"/kernel/lib/modules/"$KVER" "$WORK"/kernel/usr/lib/modules/"$KVER" 2>/dev/null | head -n1 || true)
[ -d "$MODDIR" ] || die "no modules directory for $KVER"
log "kernel $KVER"
# A clone's RNG is reseeded by the kernel only with the vmgenid driver
# (drivers/virt/vmgenid.c); without it only the agent's reseed is left.
case "$(grep '^CONFIG_VMGENID=' "$KCONFIG" 2>/dev/null)" in
    CONFIG_VMGENID=y) log "vmgenid driver: built in" ;;
    CONFIG_VMGENID=m) log "vmgenid driver: module" ;;
    *) die "$KPKG has no vmgenid driver (CONFIG_VMGENID); clones would keep their parent's RNG state until the agent reseeds it" ;;
esac

# ---------------------------------------------------------------- staging
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,etc,lib/modules,mnt,var}
mkdir -p "$R/etc/snowflock/post-clone.d"    # clone identity hooks (docs/guest-api.md)
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$R/dev/console" c 5 1
    mknod -m 666 "$R/dev/null" c 1 3
    mknod -m 600 "$R/dev/ttyS0" c 4 64
fi
echo sfguest > "$R/etc/hostname"
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
printf '127.0.0.1 localhost\n127.0.1.1 sfguest\n' > "$R/etc/hosts"

# busybox + applet links
install -m 0755 "$WORK/busybox/bin/busybox" "$R/bin/busybox"
while read -r applet; do
    [ -n "$applet" ] || continue
    [ "$applet" = bin/busybox ] && continue
    { [ -e "$R/$applet" ] || [ -L "$R/$applet" ]; } && continue
    mkdir -p "$R/$(dirname "$applet")"
    ln -s /bin/busybox "$R/$applet"
done < <("$WORK/busybox/bin/busybox" --list-full)
[ -L "$R/bin/sh" ] || ln -s busybox "$R/bin/sh"

# ---------------------------------------------------------------- modules
# name (with '-' normalised to '_') -> relative path, from modules.order
declare -A MODPATH=()
while read -r p; do
    [ -n "$p" ] || continue
    base=${p##*/}
    base=${base%%.ko*}
    MODPATH[${base//-/_}]=$p
done < "$MODDIR/modules.order"
declare -A BUILTIN=()
if [ -f "$MODDIR/modules.builtin" ]; then
    while read -r p; do
        base=${p##*/}
        base=${base%%.ko*}
        BUILTIN[${base//-/_}]=1
    done < "$MODDIR/modules.builtin"
fi

modfile_plain() { # path of module -> uncompressed copy on stdout (file path)
    local src=$1 dst=$2
    case "$src" in
        *.ko)     cp "$src" "$dst" ;;
        *.ko.xz)  xz -dc "$src" > "$dst" ;;
        *.ko.zst) zstd -qdc "$src" > "$dst" ;;
        *.ko.gz)  gzip -dc "$src" > "$dst" ;;
        *) die "unknown module format: $src" ;;
    esac
}

declare -A VISITED=()
LOAD_ORDER=()
MODFORMATS=""
add_module() { # name; depth-first, dependencies first
    local name=${1//-/_} path deps d
    [ -n "${VISITED[$name]:-}" ] && return 0
    VISITED[$name]=1
    if [ -n "${BUILTIN[$name]:-}" ]; then
        log "module $name: built in, skipped"
        return 0
    fi
    path=${MODPATH[$name]:-}
    if [ -z "$path" ] || [ ! -f "$MODDIR/$path" ]; then
        log "module $name: not found, skipped"
        return 0
    fi
    modfile_plain "$MODDIR/$path" "$R/lib/modules/$name.ko"
    case " $MODFORMATS " in *" ${path##*.ko} "*) ;; *) MODFORMATS="$MODFORMATS ${path##*.ko}" ;; esac
    deps=$(tr '\0' '\n' < "$R/lib/modules/$name.ko" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do
        add_module "$d"
    done
    LOAD_ORDER+=("$name")
}
for m in $WANT_MODULES; do
    add_module "$m"
done
printf '%s\n' "${LOAD_ORDER[@]}" > "$R/lib/modules/load-order"
log "module load order: ${LOAD_ORDER[*]}"
case " ${LOAD_ORDER[*]} " in
    *" virtio_console "*) ;;
    *) [ -n "${BUILTIN[virtio_console]:-}" ] ||
           die "virtio_console (the guest agent's virtio-serial port) is not loadable" ;;
esac
# Second list for sf.root=: its own order; modules already in the first
# list are not repeated (insmod of a loaded module would only fail).
LOAD_ORDER=()
for m in $ROOT_MODULES; do
    add_module "$m"
done
printf '%s\n' "${LOAD_ORDER[@]}" > "$R/lib/modules/load-order-root"
log "sf.root module load order: ${LOAD_ORDER[*]}"
for m in ext4 overlay; do
    [ -f "$R/lib/modules/$m.ko" ] || [ -n "${BUILTIN[$m]:-}" ] ||
        die "module $m (needed for sf.root=) is missing from $KPKG"
done
log "module format: .ko${MODFORMATS// /} (stored uncompressed)"

# ---------------------------------------------------------------- programs
log "compiling sfpattern (static)"
gcc -static -O2 -Wall -Wextra -o "$R/usr/bin/sfpattern" "$SFPATTERN_SRC" -lpthread
strip "$R/usr/bin/sfpattern" 2>/dev/null || true

for f in "$AGENT_DIR/sf-agent" "$AGENT_DIR/sfclone"; do
    [ -x "$f" ] || log "note: $f not built yet; the image has no ${f##*/}"
done
[ -n "$(ls "$AGENT_DIR"/examples/ 2>/dev/null)" ] ||
    log "note: no examples in $AGENT_DIR/examples/ yet"
for f in $AGENT_BINS $EXTRA_BINS; do
    if readelf -l "$f" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        log "warning: $f is dynamically linked; the initrd has no shared libraries"
    fi
    install -m 0755 "$f" "$R/usr/bin/$(basename "$f")"
    log "added $(basename "$f")"
done

install -m 0755 "$INIT_SRC" "$R/init"

# ---------------------------------------------------------------- vmlinux
# Uncompressed ELF with a PVH entry note: QEMU (microvm/pc) boots it directly
# with -kernel, skipping the in-guest xz decompression that is slow under TCG.
extract_vmlinux() { # bzImage -> ELF vmlinux (like the kernel's extract-vmlinux)
    local img=$1 dst=$2 magic tool off
    for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${magic%%:*}
        command -v "$tool" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "${magic#*:}" "$img" | cut -d: -f1 | head -n 5); do
            tail -c +$((off + 1)) "$img" | "$tool" -dc 2>/dev/null > "$dst" || true
            if [ "$(head -c 4 "$dst" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
                return 0
            fi
        done
    done
    rm -f "$dst"
    return 1
}
rm -f "$OUT/vmlinux"
if [ "${GUEST_VMLINUX:-0}" != 1 ]; then
    :
elif extract_vmlinux "$KIMG" "$OUT/vmlinux.tmp"; then
    if readelf -n "$OUT/vmlinux.tmp" 2>/dev/null | grep -q 'note type: (0x00000012)'; then
        mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
    else
        log "note: extracted vmlinux has no PVH entry note; not kept"
        rm -f "$OUT/vmlinux.tmp"
    fi
else
    log "note: could not extract an uncompressed vmlinux (optional)"
fi

# ---------------------------------------------------------------- pack
cp "$KIMG" "$VMLINUZ.tmp"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet --reproducible) | gzip -9 -n > "$INITRD.tmp"
mv "$VMLINUZ.tmp" "$VMLINUZ"
mv "$INITRD.tmp" "$INITRD"
echo "$STAMP_CONTENT" > "$STAMP"
echo "$KVER" > "$OUT/kernel-version"
rm -rf "$WORK/kernel" "$WORK/busybox"   # ~400 MB; the staging root is kept
print_sizes
