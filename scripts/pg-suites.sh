#!/usr/bin/env bash
# The control plane's test suites a second time, on PostgreSQL: a private
# server from Debian's package (initdb in a temporary directory, a Unix
# socket only, as the postgres user when run as root), and
# STROM_TEST_POSTGRES pointing the suites at it (each control plane gets a
# database of its own). Stops the server and removes it on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/strom-pg-suites.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$dir"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U strom -A trust --no-sync -E UTF8 >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-k $dir -c listen_addresses= -c max_connections=300" start >/dev/null
trap '"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
export STROM_TEST_POSTGRES="host=$dir user=strom"
cargo test -p strom-control-plane --locked -- --test-threads="${STROM_TEST_THREADS:-2}" "$@"
