#!/usr/bin/env bash
# Ingest CPU: N concurrent 6 Mbit/s 720p30 pushes (pre-encoded, ffmpeg -c copy
# so the encoders cost little) into a release-built strom origin, over RTMP
# and over SRT, and the same RTMP load into nginx-rtmp (Debian's
# libnginx-mod-rtmp, no HLS, no recording). The origin records every stream
# (its default; RECORDING=false turns it off). SRT runs twice: clear, and with
# AES-128 (a passphrase per stream). Prints the CPU time the receiving
# process used per second of wall clock, over a window after a warm-up.
#
#   simulations/ingest-cpu.sh [streams=1] [seconds=30]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1}
WINDOW=${2:-30}
WARMUP=8
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom-target}"
cargo build --release -q -p strom
BIN=$CARGO_TARGET_DIR/release/strom
WORK=$(mktemp -d /tmp/strom-ingest.XXXX)
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
  ffmpeg -hide_banner -loglevel error -y -i "$CLIP.flv" -c copy -f mpegts "$CLIP.ts"
fi

port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# Bytes strom's origin has received over protocol $1 (0 for nginx).
received() {
  [ -n "${HTTP:-}" ] || { echo 0; return; }
  curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v p="protocol=\"$1\"" '$1 ~ /^strom_ingest_bytes_total/ && index($1, p) {print $2}'
}

# CPU seconds per wall second of process $1 over WINDOW seconds, and the
# ingest rate strom saw (protocol $2) over the same window.
measure() {
  sleep "$WARMUP"
  local a b r0 r1
  a=$(ticks "$1"); r0=$(received "$2"); sleep "$WINDOW"; b=$(ticks "$1"); r1=$(received "$2")
  python3 -c "print(f'{($b-$a)/$HZ/$WINDOW*100:.1f} % of one core', '' if $r1 == 0 else f'(received {($r1-$r0)*8/$WINDOW/1e6:.1f} Mbit/s)')"
}

pushers() { # proto url-prefix
  for i in $(seq "$N"); do
    if [ "$1" = rtmp ]; then
      ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP.flv" -c copy -f flv "$2/key-$i-0123456789abcdef" &
    else
      local aes=""
      [ -n "${PASS:-}" ] && aes="&passphrase=$PASS&pbkeylen=16"
      ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$CLIP.ts" -c copy -f mpegts \
        "$2?mode=caller&latency=120000&pkt_size=1316&streamid=#!::r=live/key-$i-0123456789abcdef,m=publish$aes" &
    fi
  done
}

origin() {
  RTMP=$(port tcp); SRT=$(port udp)
  {
    echo "data_dir = \"$WORK/origin\""
    echo "[origin]"
    echo "rtmp_listen = \"127.0.0.1:$RTMP\""
    echo "srt_listen = \"127.0.0.1:$SRT\""
    echo "moqt_listen = \"127.0.0.1:$(port udp)\""
    HTTP=$(port tcp)
    echo "http_listen = \"127.0.0.1:$HTTP\""
    for i in $(seq "$N"); do
      printf '[[origin.streams]]\napp = "live"\nkey = "key-%s-0123456789abcdef"\nnamespace = "bench/event/s%s"\n' "$i" "$i"
      [ -n "${PASS:-}" ] && printf 'srt_passphrase = "%s"\n' "$PASS"
    done
    printf '[origin.recording]\nenabled = %s\n' "${RECORDING:-true}"
  } > "$WORK/origin.toml"
  STROM_LOG=warn $BIN --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
  ORIGIN=$!
  for _ in $(seq 50); do grep -q "origin ready" "$WORK/origin.log" 2>/dev/null && break; sleep 0.2; done
  sleep 1
}

origin; pushers rtmp "rtmp://127.0.0.1:$RTMP/live"
echo "strom RTMP, $N x 6 Mbit/s: $(measure $ORIGIN rtmp)"
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true

origin; pushers srt "srt://127.0.0.1:$SRT"
echo "strom SRT,  $N x 6 Mbit/s: $(measure $ORIGIN srt)"
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true

PASS=bench-passphrase-0123
origin; pushers srt "srt://127.0.0.1:$SRT"
echo "strom SRT AES-128, $N x 6 Mbit/s: $(measure $ORIGIN srt)"
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true
PASS=

HTTP=
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
pushers rtmp "rtmp://127.0.0.1:$NGINX_PORT/live"
echo "nginx-rtmp, $N x 6 Mbit/s: $(measure $NGINX none)"
