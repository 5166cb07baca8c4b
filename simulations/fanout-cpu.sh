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
. simulations/lib.sh
V=${1:-10}
WINDOW=${2:-30}
WARMUP=10
cargo build --release -q -p strom
BIN=$CARGO_TARGET_DIR/release/strom
workdir fanout
CLIP=$(bench_clip 6m)
KEY=key-1-0123456789abcdef
NS=bench/event/s1

# ---- strom: origin + edge, MoQT viewers
start_origin_edge "$KEY" "$NS"
push_clip "$CLIP" "rtmp://127.0.0.1:$RTMP/live/$KEY"
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
# Groups the edge's readers passed because they never reached the edge.
echo "  edge: groups its readers moved past because they never came: $(counter $EMETRICS strom_track_reader_missed_groups_total)"
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true
sleep 1
echo "  one viewer's statistics: $(grep -h 'video: ' "$WORK/watch-1.log" | tail -1 | sed 's/.*video: /video: /')"

# ---- nginx-rtmp, RTMP players
start_nginx_rtmp
push_clip "$CLIP" "rtmp://127.0.0.1:$NGINX_PORT/live/$KEY"
sleep 3
for i in $(seq "$V"); do
  ffmpeg -hide_banner -loglevel error -i "rtmp://127.0.0.1:$NGINX_PORT/live/$KEY" -c copy -f null - &
done
sleep "$WARMUP"
a=$(ticks $NGINX); s0=$(awk '/lo:/ {print $10}' /proc/net/dev)
sleep "$WINDOW"
b=$(ticks $NGINX); s1=$(awk '/lo:/ {print $10}' /proc/net/dev)
python3 -c "print(f'nginx-rtmp, 1 x 6 Mbit/s in, $V RTMP viewers: {($b-$a)/$HZ/$WINDOW*100:.1f} % of one core (loopback carried {($s1-$s0)*8/$WINDOW/1e6:.1f} Mbit/s in all)')"
