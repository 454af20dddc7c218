#!/bin/bash
# Build the snowflock-guest Debian package (the in-guest fork API) with
# dpkg-deb from the meson build and the source tree.
#
# Output: $BUILD_DIR/guest-debian/snowflock-guest_<VERSION>_amd64.deb
#         (path printed on stdout; also $BUILD_DIR/guest-debian/snowflock-guest.deb)
#
# Contents                                      from
#   /usr/sbin/sf-agent                          build/host/guest-agent/sf-agent
#   /usr/bin/sfclone                            build/host/guest-agent/sfclone
#   /usr/lib/x86_64-linux-gnu/libsf.so.1*       build/host/guest-agent/libsf.so.1*
#   /usr/lib/x86_64-linux-gnu/libsf.so          (symlink to libsf.so.1)
#   /usr/include/sf.h                           guest-agent/libsf/sf.h
#   /usr/lib/python3/dist-packages/snowflock/   guest-agent/python/snowflock/
#   /usr/share/snowflock/examples/              build/host/guest-agent/examples/* (also
#                                               /usr/bin), guest-agent/examples/*.py
#   /lib/systemd/system/sf-agent.service        guest-debian/sf-agent.service
#   /usr/share/doc/snowflock-guest/             guest-api.md, copyright
#
# Required: sf-agent, sfclone, libsf.so.1, sf.h, the python package.  If any
# is missing the build fails naming them, unless SF_GUEST_DEB_PARTIAL=1
# (while the pieces are being written): then the package holds what exists
# and $OUT/snowflock-guest.missing lists what it lacks.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$BUILD_DIR/guest-debian
AGENT=$BUILD_DIR/host/guest-agent
SRC=$ROOT/guest-agent
PARTIAL=${SF_GUEST_DEB_PARTIAL:-0}
VERSION=$(cat "$ROOT/VERSION")
ARCH=amd64
MULTIARCH=x86_64-linux-gnu
PKG=snowflock-guest
DEB=$OUT/${PKG}_${VERSION}_${ARCH}.deb
STAGE=$OUT/deb-stage

log() { echo "build-guest-deb: $*" >&2; }
die() { echo "build-guest-deb: error: $*" >&2; exit 1; }

missing=()
need() { [ -e "$1" ] || missing+=("$1"); }
need "$AGENT/sf-agent"
need "$AGENT/sfclone"
libs=""
for f in "$AGENT"/libsf.so.1*; do      # not meson's libsf.so.1.0.0.p/ object dir
    { [ -f "$f" ] || [ -L "$f" ]; } && [ ! -d "$f" ] && libs="$libs $f"
done
[ -n "$libs" ] || missing+=("$AGENT/libsf.so.1")
need "$SRC/libsf/sf.h"
need "$SRC/python/snowflock/__init__.py"

mkdir -p "$OUT"
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$PARTIAL" != 1 ]; then
        die "cannot build $PKG, missing: ${missing[*]}
  (build the host tree first: ninja -C $BUILD_DIR/host; or set
   SF_GUEST_DEB_PARTIAL=1 to package whatever exists)"
    fi
    log "warning: partial package (SF_GUEST_DEB_PARTIAL=1), missing: ${missing[*]}"
    printf '%s\n' "${missing[@]}" > "$OUT/$PKG.missing"
else
    rm -f "$OUT/$PKG.missing"
fi

rm -rf "$STAGE"
S=$STAGE
mkdir -p "$S/DEBIAN" "$S/usr/sbin" "$S/usr/bin" "$S/usr/lib/$MULTIARCH" \
         "$S/usr/include" "$S/usr/lib/python3/dist-packages" \
         "$S/usr/share/snowflock/examples" "$S/usr/share/doc/$PKG" \
         "$S/lib/systemd/system" "$S/etc/snowflock/post-clone.d"

[ -e "$AGENT/sf-agent" ] && install -m 0755 "$AGENT/sf-agent" "$S/usr/sbin/sf-agent"
[ -e "$AGENT/sfclone" ] && install -m 0755 "$AGENT/sfclone" "$S/usr/bin/sfclone"
has_lib=0
for f in $libs; do
    cp -P "$f" "$S/usr/lib/$MULTIARCH/"       # keeps the soname symlink
    [ -L "$f" ] || chmod 0644 "$S/usr/lib/$MULTIARCH/${f##*/}"
    has_lib=1
done
[ "$has_lib" = 1 ] && ln -sf libsf.so.1 "$S/usr/lib/$MULTIARCH/libsf.so"
[ -e "$SRC/libsf/sf.h" ] && install -m 0644 "$SRC/libsf/sf.h" "$S/usr/include/sf.h"
if [ -d "$SRC/python/snowflock" ]; then
    cp -r "$SRC/python/snowflock" "$S/usr/lib/python3/dist-packages/"
    find "$S/usr/lib/python3/dist-packages/snowflock" \
         \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
    find "$S/usr/lib/python3/dist-packages/snowflock" -type d -exec chmod 0755 {} +
    find "$S/usr/lib/python3/dist-packages/snowflock" -type f -exec chmod 0644 {} +
fi
nex=0
for f in "$AGENT"/examples/*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    install -m 0755 "$f" "$S/usr/share/snowflock/examples/${f##*/}"
    install -m 0755 "$f" "$S/usr/bin/${f##*/}"
    nex=$((nex + 1))
done
for f in "$SRC"/examples/*.py; do
    [ -f "$f" ] || continue
    install -m 0755 "$f" "$S/usr/share/snowflock/examples/${f##*/}"
    nex=$((nex + 1))
done
[ "$nex" -gt 0 ] || log "note: no examples found (build/host/guest-agent/examples, guest-agent/examples/*.py)"
install -m 0644 "$ROOT/guest-debian/sf-agent.service" "$S/lib/systemd/system/sf-agent.service"
install -m 0644 "$ROOT/docs/guest-api.md" "$S/usr/share/doc/$PKG/guest-api.md"
cat > "$S/usr/share/doc/$PKG/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: snowflock
License: GPL-2.0-or-later
 On Debian systems the full text is in /usr/share/common-licenses/GPL-2.
COPY
find "$S" -type d -exec chmod 0755 {} +

# Shared library: refresh the linker cache (dpkg's ldconfig trigger).
if [ "$has_lib" = 1 ]; then
    echo "activate-noawait ldconfig" > "$S/DEBIAN/triggers"
fi
# Byte-compile the python module at install (what dh_python3 would add).
if [ -d "$S/usr/lib/python3/dist-packages/snowflock" ]; then
    cat > "$S/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v py3compile >/dev/null 2>&1; then
    py3compile -p snowflock-guest || true
fi
SH
    cat > "$S/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if command -v py3clean >/dev/null 2>&1; then
    py3clean -p snowflock-guest || true
else
    find /usr/lib/python3/dist-packages/snowflock -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
fi
SH
    chmod 0755 "$S/DEBIAN/postinst" "$S/DEBIAN/prerm"
fi
depends="libc6 (>= 2.36)"
[ -d "$S/usr/lib/python3/dist-packages/snowflock" ] && depends="$depends, python3"
size=$(du -sk --exclude=DEBIAN "$S" | cut -f1)
cat > "$S/DEBIAN/control" <<CTRL
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: snowflock developers <snowflock@localhost>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Description: snowflock in-guest VM fork API (agent, libsf, sfclone, python)
 sf-agent relays fork requests from programs in a snowflock VM to the host
 over the virtio-serial port org.snowflock.agent.0 and gives each clone its
 own identity (RNG, clock, MAC/IP, hostname, post-clone.d hooks).  libsf
 (sf.h, libsf.so.1) and the python3 'snowflock' module are the API;
 sfclone runs a command once per clone.
CTRL
[ -f "$OUT/$PKG.missing" ] && echo " (partial development build)" >> "$S/DEBIAN/control"
(cd "$S" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0r md5sum) > "$S/DEBIAN/md5sums"

# Reproducible: every mtime is the newest input's, so the same inputs give
# the same .deb (build-guest-debian.sh rebuilds the image only when it changes).
epoch=${SOURCE_DATE_EPOCH:-$( (find "$AGENT"/sf-agent "$AGENT"/sfclone "$AGENT"/libsf.so.1* \
        "$AGENT"/examples "$SRC"/libsf/sf.h "$SRC"/python/snowflock "$SRC"/examples \
        "$ROOT"/guest-debian/sf-agent.service "$ROOT"/docs/guest-api.md "$ROOT"/VERSION \
        "${BASH_SOURCE[0]}" -maxdepth 1 -printf '%T@\n' 2>/dev/null || true) |
    sort -n | tail -n1 | cut -d. -f1)}
epoch=${epoch:-0}
find "$S" -exec touch -h -d "@$epoch" {} +
export SOURCE_DATE_EPOCH=$epoch
rm -f "$OUT/${PKG}"_*.deb
dpkg-deb --root-owner-group -Zxz -z6 --build "$S" "$DEB" >&2
ln -sf "${DEB##*/}" "$OUT/$PKG.deb"
rm -rf "$STAGE"
log "built $DEB ($(stat -c %s "$DEB") bytes)"
echo "$DEB"
