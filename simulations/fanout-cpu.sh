#!/usr/bin/env bash
# Fan-out CPU: one 6 Mbit/s 720p30 RTMP push (pre-encoded, ffmpeg -c copy)
# watched by V viewers, strom against nginx-rtmp on the same load.
#   strom: a release-built origin and edge (the edge serves the viewers over
#          MoQT/QUIC: `strom watch` subscribers writing to /dev/null);
#          the origin records, as it does by default.
#   nginx: Debian's libnginx-mod-rtmp relaying to RTMP players
#          (ffmpeg -c copy -f null).
# Prints the CPU time the serving processes used per second of wall clock
# (origin + edge for strom, the nginx worker) and the bytes they sent.
#
#   simulations/fanout-cpu.sh [viewers=10] [seconds=30]
set -euo pipefail
cd "$(dirname "$0")/.."
V=${1:-10}
WINDOW=${2:-30}
WARMUP=10
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom-target}"
cargo build --release -q -p strom
BIN=$CARGO_TARGET_DIR/release/strom
WORK=$(mktemp -d /tmp/strom-fanout.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v nginx >/dev/null || { apt-get install -y -qq nginx-light libnginx-mod-rtmp >/dev/null; }

CLIP=$HOME/.cache/strom-bench-clip-720p30-6m
if [ ! -s "$CLIP.flv" ]; then
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1280x720:rate=30:duration=120 \
    -f lavfi -i sine=frequency=1000:sample_rate=48000:duration=120 \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
    -g 60 -keyint_min 60 -sc_threshold 0 -b:v 5800k -maxrate 5800k -bufsize 5800k \
    -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$CLIP.flv"
fi

port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
HZ=$(getconf CLK_TCK)
field() { grep -o "$2=[^ ]*" "$1" | head -1 | cut -d= -f2; }

# Sum of a counter family on a strom /metrics page.
counter() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" 'index($1, n) == 1 {s += $2} END {printf "%d", s}'; }

KEY=key-1-0123456789abcdef
NS=bench/event/s1

# ---- strom: origin + edge, MoQT viewers
RTMP=$(port tcp); OHTTP=$(port tcp); OMOQ=$(port udp)
cat > "$WORK/origin.toml" <<CONF
data_dir = "$WORK/origin"
[origin]
rtmp_listen = "127.0.0.1:$RTMP"
rtmps_listen = "127.0.0.1:$(port tcp)"
srt_listen = "127.0.0.1:$(port udp)"
moqt_listen = "127.0.0.1:$OMOQ"
http_listen = "127.0.0.1:$OHTTP"
vod_listen = "127.0.0.1:$(port tcp)"
[[origin.streams]]
app = "live"
key = "$KEY"
namespace = "$NS"
CONF
STROM_LOG=warn,strom_origin=info $BIN --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
ORIGIN=$!
for _ in $(seq 50); do grep -q "origin ready" "$WORK/origin.log" 2>/dev/null && break; sleep 0.2; done
EHTTP=$(port tcp); EMETRICS=$(port tcp); EMOQ=$(port udp)
cat > "$WORK/edge.toml" <<CONF
data_dir = "$WORK/edge"
[edge]
moqt_listen = "127.0.0.1:$EMOQ"
http_listen = "127.0.0.1:$EHTTP"
metrics_listen = "127.0.0.1:$EMETRICS"
[[edge.upstream]]
url = "moqt://127.0.0.1:$OMOQ"
cert_sha256 = "$(field "$WORK/origin.log" cert_sha256)"
CONF
STROM_LOG=warn,strom_relay=info,strom_edge=info $BIN --config "$WORK/edge.toml" edge 2> "$WORK/edge.log" &
EDGE=$!
for _ in $(seq 50); do grep -q "edge ready" "$WORK/edge.log" 2>/dev/null && break; sleep 0.2; done
ECERT=$(field "$WORK/edge.log" cert_sha256)
ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP.flv" -c copy -f flv "rtmp://127.0.0.1:$RTMP/live/$KEY" &
sleep 3
for i in $(seq "$V"); do
  STROM_LOG=error $BIN watch "moqt://127.0.0.1:$EMOQ" "$NS" --cert-sha256 "$ECERT" \
    --duration $((WARMUP + WINDOW + 20)) -o /dev/null 2> "$WORK/watch-$i.log" &
done
sleep "$WARMUP"
a=$(ticks $ORIGIN $EDGE); o0=$(counter $EMETRICS strom_moqt_egress_bytes_total)
sleep "$WINDOW"
b=$(ticks $ORIGIN $EDGE); o1=$(counter $EMETRICS strom_moqt_egress_bytes_total)
python3 -c "print(f'strom origin+edge, 1 x 6 Mbit/s in, $V MoQT viewers: {($b-$a)/$HZ/$WINDOW*100:.1f} % of one core, edge sent {($o1-$o0)*8/$WINDOW/1e6:.1f} Mbit/s')"
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true
sleep 1
echo "  one viewer's statistics: $(grep -h 'video: ' "$WORK/watch-1.log" | tail -1 | sed 's/.*video: /video: /')"

# ---- nginx-rtmp, RTMP players
NGINX_PORT=$(port tcp)
cat > "$WORK/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:$NGINX_PORT; application live { live on; record off; } } }
CONF
nginx -c "$WORK/nginx.conf" &
NGINX=$!
sleep 1
ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP.flv" -c copy -f flv "rtmp://127.0.0.1:$NGINX_PORT/live/$KEY" &
sleep 3
for i in $(seq "$V"); do
  ffmpeg -hide_banner -loglevel error -i "rtmp://127.0.0.1:$NGINX_PORT/live/$KEY" -c copy -f null - &
done
sleep "$WARMUP"
a=$(ticks $NGINX); s0=$(awk '/lo:/ {print $10}' /proc/net/dev)
sleep "$WINDOW"
b=$(ticks $NGINX); s1=$(awk '/lo:/ {print $10}' /proc/net/dev)
python3 -c "print(f'nginx-rtmp, 1 x 6 Mbit/s in, $V RTMP viewers: {($b-$a)/$HZ/$WINDOW*100:.1f} % of one core (loopback carried {($s1-$s0)*8/$WINDOW/1e6:.1f} Mbit/s in all)')"
