#!/bin/bash
# Open-ended fuzzing with libFuzzer + ASan/UBSan (needs clang and
# libclang-rt-14-dev):  tests/fuzz/run-libfuzzer.sh [SECONDS] [TARGET...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}; shift || true
targets=${*:-fuzz-wire fuzz-framer fuzz-descriptor fuzz-domain fuzz-sfd-request fuzz-agent-host}
out=${BUILD_DIR:-$repo/build}/fuzz
mkdir -p "$out"
glib=$(pkg-config --cflags --libs glib-2.0)
xml=$(pkg-config --cflags --libs libxml-2.0 json-glib-1.0 gio-unix-2.0)
lib="$repo/migration-sf/lib"
for t in $targets; do
    case $t in
    fuzz-domain) src="$repo/sfd/domain.c"; inc="-I$repo/sfd"; extra=$xml ;;
    fuzz-sfd-request)
        src=$(ls "$repo"/sfd/*.c | grep -v -e '/main\.c$' -e '/sfctl\.c$')
        inc="-I$repo/sfd -DSFD_VERSION=\"fuzz\" -DSFD_DEFAULT_QEMU=\"qemu\""
        extra=$xml ;;
    fuzz-agent-host) src="$repo/hw-sf/sf-agent-frame.c"; inc="-I$repo/hw-sf"; extra= ;;
    *) src=$(ls "$lib"/sf-*.c | grep -v pageserver-tool); inc="-I$lib"; extra= ;;
    esac
    clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $inc \
        "$repo/tests/fuzz/$t.c" $src $glib $extra -o "$out/$t"
    mkdir -p "$out/$t-corpus"
    "$out/$t" -max_total_time="$secs" "$out/$t-corpus"
done
