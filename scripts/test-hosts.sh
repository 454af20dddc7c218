#!/bin/bash
# "Other hosts" for tests and benchmarks: network namespaces on a Linux
# bridge, as root, with IP multicast working between them and the host.
#
#   scripts/test-hosts.sh up N [--mtu BYTES]   prints the rig's name (RIG)
#   scripts/test-hosts.sh down RIG             removes it and all it ran
#   scripts/test-hosts.sh list                 rigs that exist now
#   scripts/test-hosts.sh loss RIG K PERCENT [UDP-PORT]
#                                  drop PERCENT % of the UDP packets that
#                                  reach host K (to UDP-PORT, default all)
#   scripts/test-hosts.sh noloss RIG K
#   scripts/test-hosts.sh cut RIG K / uncut RIG K   the host's link down/up
#   scripts/test-hosts.sh exec RIG K CMD...    run CMD inside host K
#
# A rig is a bridge sfhb-RIG in the host's own namespace with address
# 10.99.S.254/24 (S: the first subnet no route uses yet), and hosts
# sfh-RIG-1..N, each a namespace whose eth0 (a veth on the bridge) has
# 10.99.S.K/24 and lo up.  Multicast needs no route: senders name their
# interface (IP_MULTICAST_IF) and receivers join on theirs; the bridge's
# IGMP snooping is off so every group reaches every port.  Loss is the
# kernel's, not ours: an nftables rule in the host's namespace
# (`numgen random mod 100 < PERCENT drop`); tc netem is not available on
# these machines.  `down` kills every process inside the rig's
# namespaces first (ip netns pids), then deletes namespaces, veths and
# the bridge; state is kept under /run/snowflock-test-hosts/RIG.
#
# Never routes anywhere: the bridge has no uplink and the namespaces no
# default route, so nothing leaves loopback and the rig.
set -euo pipefail

state=/run/snowflock-test-hosts
die() { echo "test-hosts: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (namespaces, bridges)"

ns() { echo "sfh-$1-$2"; }

free_subnet() {
    local s
    for s in $(seq 1 250); do
        if ! ip -4 route show | grep -q "^10\.99\.$s\.0/24 " &&
           ! grep -qs "^$s$" "$state"/*/subnet; then
            echo "$s"; return 0
        fi
    done
    die "no free 10.99.S.0/24 subnet"
}

cmd_up() {
    local n=${1:?usage: up N [--mtu BYTES]} mtu=1500 rig s br k
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --mtu) mtu=$2; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N must be 1..200"
    mkdir -p "$state"
    rig=$(printf '%04x' $(( (RANDOM << 15 | RANDOM) & 0xffff )))
    while [ -e "$state/$rig" ]; do rig=$(printf '%04x' $((RANDOM & 0xffff))); done
    mkdir -p "$state/$rig"
    s=$(free_subnet)
    echo "$s" > "$state/$rig/subnet"
    echo "$n" > "$state/$rig/hosts"
    br=sfhb-$rig
    ip link add "$br" type bridge mcast_snooping 0
    ip link set "$br" mtu "$mtu"
    echo 1 > "/proc/sys/net/ipv6/conf/$br/disable_ipv6"
    ip addr add "10.99.$s.254/24" dev "$br"
    ip link set "$br" up
    for k in $(seq 1 "$n"); do
        local h v
        h=$(ns "$rig" "$k")
        v=sfhv$rig-$k
        ip netns add "$h"
        ip link add "$v" mtu "$mtu" type veth peer name eth0 netns "$h"
        echo 1 > "/proc/sys/net/ipv6/conf/$v/disable_ipv6"
        ip link set "$v" master "$br" up
        ip netns exec "$h" sh -c "
            echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
            ip link set lo up
            ip link set eth0 mtu $mtu
            ip addr add 10.99.$s.$k/24 dev eth0
            ip link set eth0 up"
    done
    echo "$rig"
}

rig_hosts() { cat "$state/$1/hosts" 2>/dev/null || echo 0; }

cmd_down() {
    local rig=${1:?usage: down RIG} n k h pids
    n=$(rig_hosts "$rig")
    for k in $(seq 1 "$n"); do
        h=$(ns "$rig" "$k")
        pids=$(ip netns pids "$h" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    done
    for k in $(seq 1 "$n"); do
        h=$(ns "$rig" "$k")
        # A process just exiting keeps the namespace busy for a moment.
        for _ in 1 2 3 4 5; do
            pids=$(ip netns pids "$h" 2>/dev/null || true)
            [ -z "$pids" ] && break
            kill -9 $pids 2>/dev/null || true
            sleep 0.1
        done
        ip netns del "$h" 2>/dev/null || true
        ip link del "sfhv$rig-$k" 2>/dev/null || true
    done
    ip link del "sfhb-$rig" 2>/dev/null || true
    rm -rf "${state:?}/$rig"
}

cmd_list() {
    ls "$state" 2>/dev/null || true
}

nft_in() {  # RIG K ARGS...
    local rig=$1 k=$2
    shift 2
    ip netns exec "$(ns "$rig" "$k")" nft "$@"
}

cmd_loss() {
    local rig=${1:?} k=${2:?} pct=${3:?} port=${4:-} match=""
    [ "$pct" -ge 0 ] && [ "$pct" -le 100 ] || die "PERCENT must be 0..100"
    [ -n "$port" ] && match="udp dport $port"
    cmd_noloss "$rig" "$k"
    nft_in "$rig" "$k" add table inet sfloss
    nft_in "$rig" "$k" add chain inet sfloss in \
        '{ type filter hook input priority 0; policy accept; }'
    nft_in "$rig" "$k" add rule inet sfloss in meta l4proto udp $match \
        numgen random mod 100 "<" "$pct" counter drop
}

cmd_noloss() {
    nft_in "${1:?}" "${2:?}" delete table inet sfloss 2>/dev/null || true
}

cmd_cut() { ip link set "sfhv${1:?}-${2:?}" down; }
cmd_uncut() { ip link set "sfhv${1:?}-${2:?}" up; }

cmd_exec() {
    local rig=${1:?} k=${2:?}
    shift 2
    exec ip netns exec "$(ns "$rig" "$k")" "$@"
}

case "${1:-}" in
    up|down|list|loss|noloss|cut|uncut|exec) c=$1; shift; "cmd_$c" "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
