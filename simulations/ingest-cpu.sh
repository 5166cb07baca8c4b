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
. simulations/lib.sh
cargo build --release -q -p strom
BIN=$CARGO_TARGET_DIR/release/strom
workdir ingest
CLIP=$(bench_clip 6m)

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
  origin_toml
  HTTP=$OHTTP
  {
    for i in $(seq "$N"); do
      printf '[[origin.streams]]\napp = "live"\nkey = "key-%s-0123456789abcdef"\nnamespace = "bench/event/s%s"\n' "$i" "$i"
      [ -n "${PASS:-}" ] && printf 'srt_passphrase = "%s"\n' "$PASS"
    done
    printf '[origin.recording]\nenabled = %s\n' "${RECORDING:-true}"
  } >> "$WORK/origin.toml"
  STROM_LOG=warn $BIN --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
  ORIGIN=$!
  # (the origin logs warnings only here: ready once /metrics answers)
  wait_http "http://127.0.0.1:$HTTP/metrics"
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
start_nginx_rtmp
pushers rtmp "rtmp://127.0.0.1:$NGINX_PORT/live"
echo "nginx-rtmp, $N x 6 Mbit/s: $(measure $NGINX none)"
