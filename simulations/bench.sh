#!/usr/bin/env bash
# Benchmark an edge with strom-load: a separate origin and edge (release
# builds), one ~3 Mbit/s 720p30 stream with a 1 s GOP pushed over RTMP from a
# pre-encoded clip (ffmpeg -c copy, so the encoder does not compete for CPU),
# then strom-load with the arguments given. Prints strom-load's JSON report.
#
#   simulations/bench.sh --moq-subscribers 100 --duration 60 --ramp 10
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom-target}"
cargo build --release -q -p strom -p strom-simulations
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/strom-bench.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT

CLIP=$HOME/.cache/strom-bench-clip-720p30-3m.flv
if [ ! -s "$CLIP" ]; then
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1280x720:rate=30:duration=60 \
    -f lavfi -i sine=frequency=1000:sample_rate=48000:duration=60 \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
    -g 30 -keyint_min 30 -sc_threshold 0 -b:v 2800k -maxrate 2800k -bufsize 2800k \
    -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$CLIP"
fi

port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
KEY=bench-key-0123456789abcdef
cat > "$WORK/origin.toml" <<TOML
data_dir = "$WORK/origin"
[origin]
rtmp_listen = "127.0.0.1:$(port tcp)"
moqt_listen = "127.0.0.1:$(port udp)"
http_listen = "127.0.0.1:$(port tcp)"
[[origin.streams]]
app = "live"
key = "$KEY"
namespace = "bench/event/main"
TOML
STROM_LOG=warn,strom_origin=info $BIN/strom --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
for _ in $(seq 50); do grep -q "origin ready" "$WORK/origin.log" && break; sleep 0.2; done
field() { grep "$2" "$1" | head -1 | sed -E "s/.*$3=([^ ]+).*/\1/"; }
ORIGIN_MOQT=$(field "$WORK/origin.log" "origin ready" moqt)
ORIGIN_RTMP=$(field "$WORK/origin.log" "origin ready" rtmp)
ORIGIN_CERT=$(field "$WORK/origin.log" "origin ready" cert_sha256)

EDGE_HTTP=127.0.0.1:$(port tcp)
EDGE_METRICS=127.0.0.1:$(port tcp)
cat > "$WORK/edge.toml" <<TOML
data_dir = "$WORK/edge"
[edge]
moqt_listen = "127.0.0.1:$(port udp)"
http_listen = "$EDGE_HTTP"
metrics_listen = "$EDGE_METRICS"
[[edge.upstream]]
url = "moqt://$ORIGIN_MOQT"
cert_sha256 = "$ORIGIN_CERT"
TOML
STROM_LOG=warn,strom_relay=info,strom_edge=info $BIN/strom --config "$WORK/edge.toml" edge 2> "$WORK/edge.log" &
for _ in $(seq 50); do grep -q "edge ready" "$WORK/edge.log" && break; sleep 0.2; done
EDGE_MOQT=$(field "$WORK/edge.log" "edge ready" moqt)
EDGE_CERT=$(field "$WORK/edge.log" "edge ready" cert_sha256)

ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP" -c copy -f flv \
  "rtmp://$ORIGIN_RTMP/live/$KEY" 2> "$WORK/ffmpeg.log" &
sleep 6

$BIN/strom-load --edge-moq "moqt://$EDGE_MOQT" --cert-sha256 "$EDGE_CERT" \
  --edge-http "http://$EDGE_HTTP" --edge-metrics "http://$EDGE_METRICS" --namespace bench/event/main --json "$@"
echo "work directory (logs): $WORK" >&2
