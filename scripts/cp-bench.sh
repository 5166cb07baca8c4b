#!/usr/bin/env bash
# The control-plane benchmarks of BENCHMARKS.md on this machine, release
# build: embedded RocksDB (with the single-core token and argon2 figures),
# then PostgreSQL (a private server, scripts/private-pg.sh, with the
# settings a production server has: fsync and synchronous commit on) with
# one replica and with two. Extra arguments go to every run
# (e.g. --participants 10000 --concurrency 64).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/strom-target-release}
cargo build --release --locked -p strom-simulations --bin strom-cp-bench
bench=$CARGO_TARGET_DIR/release/strom-cp-bench
. scripts/private-pg.sh
start_private_pg
echo "== RocksDB, one process"
"$bench" "$@"
for n in 1 2; do
  "$PG_BIN/psql" "host=$PG_SOCKET user=strom dbname=postgres" -qc "CREATE DATABASE bench$n"
  echo "== PostgreSQL, $n replica(s)"
  "$bench" --http-only --postgres "host=$PG_SOCKET user=strom dbname=bench$n" --replicas "$n" "$@"
done
