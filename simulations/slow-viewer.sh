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
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom-target}"
cargo build --release -q -p strom
BIN=$CARGO_TARGET_DIR/release/strom
WORK=$(mktemp -d /tmp/strom-slow.XXXX)
NS=strom-slow-$$
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  ip link del "vh$$" 2>/dev/null || true
}
trap cleanup EXIT

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

CLIP=$HOME/.cache/strom-bench-clip-720p30-3m.flv
[ -s "$CLIP" ] || { echo "run simulations/bench.sh once first (it makes $CLIP)" >&2; exit 2; }
port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
KEY=slow-key-0123456789abcdef
RTMP=$(port tcp); OMOQ=$(port udp); EMOQ=$(port udp)
cat > "$WORK/origin.toml" <<TOML
data_dir = "$WORK/origin"
[origin]
rtmp_listen = "127.0.0.1:$RTMP"
moqt_listen = "127.0.0.1:$OMOQ"
http_listen = "127.0.0.1:$(port tcp)"
[[origin.streams]]
app = "live"
key = "$KEY"
namespace = "slow/event/main"
TOML
STROM_LOG=warn,strom_origin=info $BIN --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
for _ in $(seq 50); do grep -q "origin ready" "$WORK/origin.log" && break; sleep 0.2; done
OCERT=$(grep "origin ready" "$WORK/origin.log" | sed -E 's/.*cert_sha256=([^ ]+).*/\1/')
cat > "$WORK/edge.toml" <<TOML
data_dir = "$WORK/edge"
[edge]
moqt_listen = "0.0.0.0:$EMOQ"
http_listen = "127.0.0.1:$(port tcp)"
[[edge.upstream]]
url = "moqt://127.0.0.1:$OMOQ"
cert_sha256 = "$OCERT"
TOML
STROM_LOG=warn,strom_relay=info,strom_edge=info $BIN --config "$WORK/edge.toml" edge 2> "$WORK/edge.log" &
for _ in $(seq 50); do grep -q "edge ready" "$WORK/edge.log" && break; sleep 0.2; done
ECERT=$(grep "edge ready" "$WORK/edge.log" | sed -E 's/.*cert_sha256=([^ ]+).*/\1/')
ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP" -c copy -f flv \
  "rtmp://127.0.0.1:$RTMP/live/$KEY" 2> "$WORK/ffmpeg.log" &
sleep 5
ip netns exec "$NS" "$BIN" watch "moqt://10.201.0.1:$EMOQ" slow/event/main \
  --cert-sha256 "$ECERT" -o "$WORK/viewer.mp4" --duration "$SECS"
echo "work directory: $WORK" >&2
