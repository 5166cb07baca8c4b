#!/usr/bin/env bash
# Fuzzes every parser strom runs on hostile bytes (the targets in fuzz/,
# cargo-fuzz with libFuzzer on stable Rust, no sanitizer: see fuzz/README.md).
#
#   scripts/fuzz.sh ci              every target for STROM_FUZZ_SECONDS (default
#                                   120) each, two at a time, from the committed
#                                   seeds; fails on any crash, timeout or OOM
#                                   and prints the reproducer
#   scripts/fuzz.sh long SECONDS [TARGET...]
#                                   each target (default: all) for SECONDS,
#                                   STROM_FUZZ_JOBS (default 2) at a time, with a
#                                   corpus kept between runs; prints executions,
#                                   coverage, corpus size and crashes per target
#   scripts/fuzz.sh build           builds the targets only
#
# Environment: STROM_FUZZ_TARGET_DIR (build, default ~/.cache/strom-fuzz-target),
# STROM_FUZZ_RUNS (logs, work corpora, crashes; default ~/.cache/strom-fuzz-runs).
# Reproduce a crash: <target binary> <crash file> (printed on failure), or
# cargo fuzz run -s none -a <target> <crash file>.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
mode="${1:-}"
case "$mode" in
  ci | long | build) ;;
  *)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
# SRT ingest (strom-origin, which the RTMP target drives) links libsrt.
if ! ls /usr/lib/*/libsrt-gnutls.so /usr/lib/libsrt-gnutls.so >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libsrt-gnutls-dev >/dev/null
fi

export CARGO_TARGET_DIR="${STROM_FUZZ_TARGET_DIR:-$HOME/.cache/strom-fuzz-target}"
export CARGO_TERM_COLOR=never
runs="${STROM_FUZZ_RUNS:-$HOME/.cache/strom-fuzz-runs}"
# Release build with debug assertions and overflow checks (-a), no sanitizer (-s none).
cargo fuzz build -s none -a
[ "$mode" = build ] && exit 0

bin_dir="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
mapfile -t all_targets < <(cargo fuzz list)

# run TARGET SECONDS WORKDIR: one libFuzzer run; the log is WORKDIR/TARGET.log.
run() {
  local target=$1 seconds=$2 work=$3
  mkdir -p "$work/corpus/$target" "$work/crashes/$target"
  # New inputs go to the work corpus; the committed seeds are read only.
  local rc=0
  "$bin_dir/$target" "$work/corpus/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2560 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$target/" >"$work/$target.log" 2>&1 || rc=$?
  echo "$rc" >"$work/$target.rc"
}

# summary WORKDIR TARGET...: one line per target from libFuzzer's final stats.
summary() {
  local work=$1
  shift
  printf '%-18s %12s %8s %7s %8s %8s %8s\n' target executions exec/s cov ft corpus crashes
  for t in "$@"; do
    local log="$work/$t.log" execs rate cov ft corp crashes
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o ' cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    ft=$(grep -o ' ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    corp=$(find "$work/corpus/$t" -type f | wc -l)
    crashes=$(find "$work/crashes/$t" -type f | wc -l)
    printf '%-18s %12s %8s %7s %8s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$crashes"
  done
}

# fuzz_all SECONDS JOBS WORKDIR TARGET...: runs the targets, JOBS at a time;
# returns non-zero if any found a crash.
fuzz_all() {
  local seconds=$1 jobs=$2 work=$3
  shift 3
  local failed=0 t
  for t in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    echo "fuzzing $t for ${seconds} s (log: $work/$t.log)"
    rm -f "$work/$t.rc"
    run "$t" "$seconds" "$work" &
  done
  wait
  for t in "$@"; do
    if [ "$(cat "$work/$t.rc" 2>/dev/null)" != 0 ]; then
      failed=1
      echo "FAILED: $t (log: $work/$t.log)"
      tail -n 30 "$work/$t.log" | sed 's/^/  /'
    fi
    for crash in "$work/crashes/$t"/*; do
      [ -e "$crash" ] || continue
      failed=1
      echo "reproducer for $t: $crash"
      echo "  replay: $bin_dir/$t $crash"
      echo "  or:     cargo fuzz run -s none -a $t $crash"
    done
  done
  return $failed
}

if [ "$mode" = ci ]; then
  seconds="${STROM_FUZZ_SECONDS:-120}"
  work="$runs/ci-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$work"
  status=0
  fuzz_all "$seconds" 2 "$work" "${all_targets[@]}" || status=1
  summary "$work" "${all_targets[@]}"
  [ $status = 0 ] && echo "fuzzing: ${#all_targets[@]} targets, no crash"
  exit $status
fi

seconds="${2:?long needs SECONDS}"
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
work="$runs/long"
mkdir -p "$work"
status=0
fuzz_all "$seconds" "${STROM_FUZZ_JOBS:-2}" "$work" "${targets[@]}" || status=1
summary "$work" "${targets[@]}"
exit $status
