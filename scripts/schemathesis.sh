#!/usr/bin/env bash
# Fuzzes the control plane's API from its own OpenAPI document with
# schemathesis (PyPI): an owner's session, every endpoint, checks for 5xx,
# schema and content-type violations. Logout and password change are left
# out: they would end the fuzzer's own session. Usage: scripts/schemathesis.sh [max-examples]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom-target}"
# schemathesis in its own virtualenv (pinned), outside the clone.
VENV="$HOME/.cache/strom-schemathesis-4.32.5"
if [ ! -x "$VENV/bin/st" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q schemathesis==4.32.5
fi
cargo build --workspace --bins --locked -q
BIN="$CARGO_TARGET_DIR/debug/strom"
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$DIR/strom.toml" <<TOML
[control_plane]
listen = "127.0.0.1:$PORT"
public_url = "http://127.0.0.1:$PORT/"
generate_master_key = true
secure_cookies = false
rate_limit_per_ip_per_minute = 1000000
rate_limit_per_account_per_minute = 1000000
TOML
INIT=$("$BIN" --config "$DIR/strom.toml" --data-dir "$DIR/data" control-plane init --tenant Fuzz --owner-email owner@fuzz.example --owner-name Owner)
TENANT=$(echo "$INIT" | awk '/^tenant/ {print $2}')
PASSWORD=$(echo "$INIT" | awk -F': ' '/initial password/ {print $2}')
STROM_LOG=warn "$BIN" --config "$DIR/strom.toml" --data-dir "$DIR/data" control-plane serve 2>"$DIR/log" &
PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
BASE="http://127.0.0.1:$PORT"
curl -sf -c "$DIR/jar" -H 'content-type: application/json' \
  -d "{\"tenant\":\"$TENANT\",\"email\":\"owner@fuzz.example\",\"password\":\"$PASSWORD\"}" "$BASE/api/v1/auth/login" >/dev/null
CSRF=$(curl -sf -b "$DIR/jar" "$BASE/api/v1/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf"])')
curl -sf -b "$DIR/jar" -c "$DIR/jar" -H "x-csrf-token: $CSRF" -H 'content-type: application/json' \
  -d "{\"current_password\":\"$PASSWORD\",\"new_password\":\"Lattice-mango-river-4\"}" "$BASE/api/v1/auth/password" >/dev/null
CSRF=$(curl -sf -b "$DIR/jar" "$BASE/api/v1/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf"])')
COOKIE=$(awk '$6=="strom_session" {print $6"="$7}' "$DIR/jar")
"$VENV/bin/st" run "$BASE/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  -H "Cookie: $COOKIE" -H "x-csrf-token: $CSRF" \
  --exclude-path /api/v1/auth/logout --exclude-path /api/v1/auth/password \
  --max-examples "${1:-25}" --seed 1 || { echo "server log:"; tail -50 "$DIR/log"; exit 1; }
