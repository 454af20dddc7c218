#!/bin/bash
# Install every host package snowflock needs on Debian 12 (bookworm), as root.
# Idempotent: a second run installs nothing new and only checks.
#
# Why each group is here:
#  - build-essential, ninja, ccache, pkg-config: compilers and the QEMU build;
#    ccache keeps QEMU rebuilds to seconds.
#  - meson and python3-pycotap from bookworm-backports: QEMU 10 needs meson >= 1.5
#    and pycotap; bookworm's own meson is 1.0.
#  - libglib2.0-dev, libpixman-1-dev, libfdt-dev, libslirp-dev, liburing-dev,
#    libzstd-dev: libraries QEMU and our code link (GLib everywhere, fdt for
#    microvm, slirp for user networking, io_uring, zstd).
#  - libjson-glib-dev, libxml2-dev: sfd's protocol and domain XML.
#  - nettle-dev: AES-GCM and HKDF sealing pages and requests on network
#    transports (migration-sf/lib/sf-seal.c).
#  - seabios, qemu-system-data: firmware (bios-microvm.bin, option ROMs); the
#    +ds QEMU tarball ships none.
#  - linux-image-amd64 and busybox-static are only *downloaded* (apt-get download)
#    by scripts/build-guest.sh to build the guest image; they are not installed here.
#  - python3-pytest, socat, jq, iproute2: the integration tests and shell examples;
#    python3-cryptography: the tests' own sealing (tests/integration/sfwire.py),
#    to talk to and attack a page server over a network.
#  - nftables: loss injected in the kernel on the test hosts
#    (scripts/test-hosts.sh; tc netem is not available here).
#  - xz-utils, cpio, dpkg-dev: unpacking the source and packing the initrd.
#  - debootstrap, debian-archive-keyring, e2fsprogs: the Debian guest's root
#    file system (scripts/build-guest-debian.sh: debootstrap, mkfs.ext4 -d).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
    echo "setup-host: must run as root (it installs packages)" >&2
    exit 1
fi

bp=/etc/apt/sources.list.d/snowflock-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$bp"
    need_update=1
fi

pkgs=(build-essential pkg-config ninja-build ccache git xz-utils cpio dpkg-dev
      libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev liburing-dev
      libzstd-dev libjson-glib-dev libxml2-dev libcap-ng-dev nettle-dev
      seabios qemu-system-data
      python3 python3-venv python3-pytest python3-yaml python3-cryptography
      socat jq iproute2
      bridge-utils procps debootstrap debian-archive-keyring e2fsprogs
      nftables)
bp_pkgs=(meson python3-pycotap)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
meson_ok=0
if command -v meson >/dev/null && dpkg --compare-versions "$(meson --version)" ge 1.5; then
    meson_ok=1
fi
dpkg-query -W -f='${Status}' python3-pycotap 2>/dev/null | grep -q 'install ok installed' || meson_ok=0

if [ ${#missing[@]} -gt 0 ] || [ "$meson_ok" = 0 ] || [ -n "${need_update:-}" ]; then
    apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$meson_ok" = 0 ]; then
    echo "setup-host: installing ${bp_pkgs[*]} from bookworm-backports"
    apt-get install -y -q --no-install-recommends -t bookworm-backports "${bp_pkgs[@]}"
fi
echo "setup-host: host packages ready (meson $(meson --version))"
