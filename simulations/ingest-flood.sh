#!/usr/bin/env bash
# Ingest peers that never authenticate (BENCHMARKS.md): starts `strom origin`
# with two static streams (one with an SRT passphrase), then runs each
# scenario of strom-ingest-flood against it (1,000 connections by default,
# from 100 loopback addresses) and prints one JSON report per scenario. The
# origin's RSS is read from /proc before, during and after each scenario;
# the origin is restarted between scenarios so that they do not add up.
#
#   simulations/ingest-flood.sh [connections=1000] [scenario ...]
#
# STROM_BIN=/path/to/strom runs another build (e.g. one from before the
# admission limits) and FLOOD=/path/to/strom-ingest-flood a built load
# generator (each is built here otherwise); ADMISSION='max_connections = 1000'
# writes those lines into [origin.admission] (leave it unset for an older
# build); PROFILE=release builds release (default: debug, the test build);
# SOURCES=1 connects from 127.0.0.1 only; FLOOD_ARGS='--attempts 20' is
# passed on to strom-ingest-flood.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
shift || true
SCENARIOS=${*:-rtmp-idle rtmp-partial rtmp-no-publish srt-induction srt-refused srt-no-passphrase}
PROFILE=${PROFILE:-debug}
. simulations/lib.sh
flag=""; [ "$PROFILE" = release ] && flag="--release"
[ -n "${FLOOD:-}" ] || cargo build $flag -q -p strom-simulations --bin strom-ingest-flood
[ -n "${STROM_BIN:-}" ] || cargo build $flag -q -p strom --bin strom
BIN=${STROM_BIN:-$CARGO_TARGET_DIR/$PROFILE/strom}
FLOOD=${FLOOD:-$CARGO_TARGET_DIR/$PROFILE/strom-ingest-flood}
workdir flood
KEY=flood-clear-key-0123456789
SECRET_KEY=flood-secret-key-0123456789

start_origin() {
  origin_toml
  HTTP=$OHTTP
  cat >> "$WORK/origin.toml" <<TOML
[[origin.streams]]
app = "live"
key = "$KEY"
namespace = "flood/event/clear"
[[origin.streams]]
app = "live"
key = "$SECRET_KEY"
namespace = "flood/event/secret"
srt_passphrase = "correct-horse-battery"
TOML
  if [ -n "${ADMISSION:-}" ]; then
    printf '[origin.admission]\n%b\n' "$ADMISSION" >> "$WORK/origin.toml"
  fi
  STROM_LOG=error "$BIN" --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
  ORIGIN=$!
  # Ready once /metrics answers; then a moment to settle.
  wait_http "http://127.0.0.1:$HTTP/metrics"
  sleep 2
}

for scenario in $SCENARIOS; do
  start_origin
  case $scenario in
    rtmp-*) target=127.0.0.1:$RTMP; extra=() ;;
    srt-no-passphrase) target=127.0.0.1:$SRT; extra=(--key "$SECRET_KEY") ;;
    *) target=127.0.0.1:$SRT; extra=() ;;
  esac
  echo "== $scenario ($N connections, $(basename "$BIN"))" >&2
  "$FLOOD" --scenario "$scenario" --target "$target" --pid "$ORIGIN" \
    --metrics "http://127.0.0.1:$HTTP/metrics" --connections "$N" \
    --sources "${SOURCES:-100}" "${extra[@]}" ${FLOOD_ARGS:-} --json
  kill "$ORIGIN"; wait "$ORIGIN" 2>/dev/null || true
  sleep 1
done
