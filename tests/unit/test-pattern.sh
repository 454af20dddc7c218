#!/bin/sh
# Host-side unit test for guest-agent/sfpattern.c.
# Usage: tests/unit/test-pattern.sh [path-to-sfpattern-binary]
# Without an argument, compiles sfpattern.c into a temp dir with gcc.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ $# -ge 1 ]; then
    SFP=$1
else
    SFP=$TMP/sfpattern
    gcc -O2 -Wall -Wextra -Werror -o "$SFP" "$ROOT/guest-agent/sfpattern.c" -lpthread || {
        echo "FAIL: compile"; echo "0 passed, 1 failed"; exit 1; }
fi

pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
check() { # desc, command...
    d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}

# 1. once: clean fill+verify
out=$("$SFP" once --mib 64 --seed 7); rc=$?
check "once exit 0" [ $rc -eq 0 ]
check "once 0 mismatches" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=7 pages=16384 mismatches=0 '"

# 2. once with one corrupted page
out=$("$SFP" once --mib 16 --seed 99 --selftest-corrupt 1234); rc=$?
check "corrupt exit nonzero" [ $rc -ne 0 ]
check "corrupt 1 mismatch" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=99 pages=4096 mismatches=1 '"
check "corrupt page reported" sh -c "echo '$out' | grep -qx 'SFPATTERN bad-pages 1234'"

# 3. serve over stdin: wrong seed, refill, mutate/stop, verify
out=$(printf 'verify 5\nverify 6\nfill 8\nverify 8\nmutate 9\nstop\nverify 9\nstatus\nping\nbogus\nquit\n' \
      | "$SFP" serve --mib 8 --seed 5 --fifo -); rc=$?
check "serve exit 0" [ $rc -eq 0 ]
check "serve ready" sh -c "echo '$out' | grep -q '^SFPATTERN ready seed=5 pages=2048 ms='"
check "serve verify ok" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=5 pages=2048 mismatches=0 '"
check "serve wrong seed all bad" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=6 pages=2048 mismatches=2048 '"
check "serve bad-pages list 16" sh -c "echo '$out' | grep -qx 'SFPATTERN bad-pages 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15'"
check "serve refill verify" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=8 pages=2048 mismatches=0 '"
check "serve stopped" sh -c "echo '$out' | grep -q '^SFPATTERN stopped seed=9 passes=[1-9]'"
check "serve after mutate" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=9 pages=2048 mismatches=0 '"
check "serve status" sh -c "echo '$out' | grep -q '^SFPATTERN status seed=9 pages=2048 mutating=0'"
check "serve pong" sh -c "echo '$out' | grep -qx 'SFPATTERN pong'"
check "serve unknown cmd" sh -c "echo '$out' | grep -q '^SFPATTERN error unknown-command bogus'"
check "serve bye" sh -c "echo '$out' | grep -qx 'SFPATTERN bye'"

# 4. serve over a FIFO with several separate writers (reopen on EOF)
FIFO=$TMP/cmd.fifo
"$SFP" serve --mib 4 --seed 1 --fifo "$FIFO" > "$TMP/serve.out" &
spid=$!
i=0; while [ ! -p "$FIFO" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo "verify 1" > "$FIFO"
echo "mutate 2" > "$FIFO"
echo "stop" > "$FIFO"
echo "verify 2" > "$FIFO"
echo "quit" > "$FIFO"
i=0; while kill -0 $spid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if kill -0 $spid 2>/dev/null; then kill $spid; bad "fifo serve exits on quit"; else ok "fifo serve exits on quit"; fi
out=$(cat "$TMP/serve.out")
check "fifo verify 1" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=1 pages=1024 mismatches=0 '"
check "fifo verify 2 after mutate" sh -c "echo '$out' | grep -q '^SFPATTERN verify seed=2 pages=1024 mismatches=0 '"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
