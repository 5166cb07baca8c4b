# Sourced: start_private_pg starts a private PostgreSQL server from
# Debian's package (initdb in a temporary directory, a Unix socket only, as
# the postgres user when run as root), sets PG_BIN and PG_SOCKET (for
# connection strings "host=$PG_SOCKET user=strom dbname=…"), and stops and
# removes it when the shell exits.
start_private_pg() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_SOCKET=$(mktemp -d /tmp/strom-pg.XXXXXX)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$PG_SOCKET"
    PG_AS=(runuser -u postgres --)
  fi
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_SOCKET/data" -U strom -A trust --no-sync -E UTF8 >/dev/null
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_SOCKET/data" -l "$PG_SOCKET/server.log" -w \
    -o "-k $PG_SOCKET -c listen_addresses= -c max_connections=300 $*" start >/dev/null
  trap '"${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_SOCKET/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PG_SOCKET"' EXIT
}
