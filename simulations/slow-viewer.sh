#!/usr/bin/env bash
# One MoQT viewer behind a link thinner than the stream: a network namespace
# whose only link to the edge is shaped with tc (default 2 Mbit/s for a
# ~3 Mbit/s stream). Prints the viewer's per-second statistics (objects,
# groups, latency per track). Run as root; cleans up after itself.
#
#   simulations/slow-viewer.sh [rate, default 2mbit] [seconds, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2mbit}
SECS=${2:-30}
. simulations/lib.sh
cargo build --release -q -p strom
BIN=$CARGO_TARGET_DIR/release/strom
KEEP_WORK=1; workdir slow
NS=strom-slow-$$
cleanup_more() {
  ip netns del "$NS" 2>/dev/null || true
  ip link del "vh$$" 2>/dev/null || true
}
CLIP=$(bench_clip 3m)

ip netns add "$NS"
ip link add "vh$$" type veth peer name "vs$$"
ip link set "vs$$" netns "$NS"
ip addr add 10.201.0.1/24 dev "vh$$"
ip link set "vh$$" up
ip netns exec "$NS" ip addr add 10.201.0.2/24 dev "vs$$"
ip netns exec "$NS" ip link set "vs$$" up
ip netns exec "$NS" ip link set lo up
# Shape the edge → viewer direction.
tc qdisc add dev "vh$$" root tbf rate "$RATE" burst 32kbit latency 400ms

KEY=slow-key-0123456789abcdef
EDGE_MOQT_HOST=0.0.0.0 start_origin_edge "$KEY" slow/event/main
push_clip "$CLIP" "rtmp://127.0.0.1:$RTMP/live/$KEY"
sleep 5
ip netns exec "$NS" "$BIN" watch "moqt://10.201.0.1:$EMOQ" slow/event/main \
  --cert-sha256 "$ECERT" -o "$WORK/viewer.mp4" --duration "$SECS"
