#!/usr/bin/env bash
# Benchmark an edge with strom-load: a separate origin and edge (release
# builds), one ~3 Mbit/s 720p30 stream with a 1 s GOP pushed over RTMP from a
# pre-encoded clip (ffmpeg -c copy, so the encoder does not compete for CPU),
# then strom-load with the arguments given. Prints strom-load's JSON report,
# and on stderr the edge's CPU time over the run in clock ticks (1/100 s; the
# report's figure comes from /metrics, in whole seconds).
#
#   simulations/bench.sh --moq-subscribers 100 --duration 60 --ramp 10
#
# STROM_BIN=<path> runs another build of strom (an A/B against an older commit).
set -euo pipefail
cd "$(dirname "$0")/.."
. simulations/lib.sh
cargo build --release -q -p strom -p strom-simulations
BIN=${STROM_BIN:-$CARGO_TARGET_DIR/release/strom}
KEEP_WORK=1; workdir bench
CLIP=$(bench_clip 3m)
KEY=bench-key-0123456789abcdef
start_origin_edge "$KEY" bench/event/main
push_clip "$CLIP" "rtmp://127.0.0.1:$RTMP/live/$KEY"
sleep 6

BEFORE=$(ticks "$EDGE")
$CARGO_TARGET_DIR/release/strom-load --edge-moq "moqt://127.0.0.1:$EMOQ" --cert-sha256 "$ECERT" \
  --edge-http "http://127.0.0.1:$EHTTP" --edge-metrics "http://127.0.0.1:$EMETRICS" \
  --namespace bench/event/main --json "$@"
echo "edge CPU over the run: $(( $(ticks "$EDGE") - BEFORE )) ticks of 1/$HZ s" >&2
