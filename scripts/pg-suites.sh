#!/usr/bin/env bash
# The control plane's test suites a second time, on PostgreSQL: a private
# server (scripts/private-pg.sh) and STROM_TEST_POSTGRES pointing the
# suites at it (each control plane gets a database of its own). Stops the
# server and removes it on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/private-pg.sh
start_private_pg
export STROM_TEST_POSTGRES="host=$PG_SOCKET user=strom"
cargo test -p strom-control-plane --locked -- --test-threads="${STROM_TEST_THREADS:-2}" "$@"
