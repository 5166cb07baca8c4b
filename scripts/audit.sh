#!/usr/bin/env bash
# Dependencies with known vulnerabilities (docs/security.md, OPS-6).
#
# 1. Rust: cargo-audit 0.22.2 checks Cargo.lock (and every lockfile one
#    level down, such as the fuzz workspace's fuzz/Cargo.lock) against a
#    pinned snapshot of the RustSec advisory database (a checkout of GitHub's
#    rustsec/advisory-db), offline. Every advisory fails the run, warnings too (unmaintained,
#    unsound, yanked), except the exceptions listed below, each documented in
#    docs/security.md. An exception that no longer matches anything fails the
#    run as well, so the list stays exactly the documented one.
# 2. npm: `npm audit` of web/package-lock.json (dev tools included: they run
#    on developers' machines and in CI). It needs the registry's bulk
#    advisory endpoint (an HTTP POST); where the registry refuses it (this
#    workplace's registry access answers 405), the packages are NOT checked
#    for advisories and the script says so. What does work with plain GETs is
#    checked always: no locked direct dependency of web/ is deprecated.
#
# CI reaches the crate, npm, PyPI and Debian registries only, so the advisory
# database cannot be downloaded at test time: give a snapshot by path.
#
#   scripts/audit.sh --db DIR            # DIR: a checkout of rustsec/advisory-db
#   STROM_ADVISORY_DB=DIR scripts/audit.sh
#   scripts/audit.sh                     # DIR defaults to $STROM_TOOLS_DIR/advisory-db
#
# Environment:
#   STROM_ADVISORY_DB   the snapshot (default $STROM_TOOLS_DIR/advisory-db)
#   STROM_TOOLS_DIR     where cargo-audit is installed (default $HOME/.cache/strom-tools)
#   STROM_AUDIT_NPM     try (default): report when npm audit cannot run;
#                       require: fail then; skip: no npm section
#   STROM_AUDIT_JSON    also write cargo-audit's JSON report (no exceptions
#                       applied) to this file
#
# Exit status: 0 nothing but the documented exceptions; 1 an advisory or
# warning not on the list, or an exception that matches nothing; 2 the set-up
# is missing (no snapshot, cargo-audit could not be installed, npm audit
# unavailable with STROM_AUDIT_NPM=require).
set -euo pipefail
cd "$(dirname "$0")/.."

# The snapshot docs/security.md records (rustsec/advisory-db, main).
PINNED_COMMIT=bf5c0d245a92671908518d7e765914d437954ed6
PINNED_DATE=2026-08-21
CARGO_AUDIT_VERSION=0.22.2

# The documented exceptions: advisory id, then why (docs/security.md).
EXCEPTIONS=(
  # rsa 0.9.10 (through openidconnect 4.1.0): Marvin timing attack on RSA
  # private-key operations (decryption, signing); no fixed release. strom
  # never holds an RSA private key: openidconnect only verifies identity
  # providers' RS256/PS256 ID-token and UserInfo signatures with their public
  # keys (RsaPublicKey::verify), which leaks nothing secret.
  RUSTSEC-2023-0071
  # paste 1.0.15 (through moq-transport 0.17.0 and netlink-packet-core 0.8,
  # a dependency of if-watch under libp2p-quic): unmaintained, no known
  # vulnerability; a proc-macro that runs at compile time only.
  RUSTSEC-2024-0436
)

DB=""
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DB="${2:?--db needs a directory}"; shift 2 ;;
    --db=*) DB="${1#--db=}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "audit: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
TOOLS_DIR="${STROM_TOOLS_DIR:-$HOME/.cache/strom-tools}"
DB="${DB:-${STROM_ADVISORY_DB:-$TOOLS_DIR/advisory-db}}"
NPM_MODE="${STROM_AUDIT_NPM:-try}"
export CARGO_TERM_COLOR=never

status=0

# ---- 1. Rust crates: cargo-audit against the snapshot -----------------------
echo "== Rust crates (Cargo.lock files) against the RustSec advisory database"
if [ ! -d "$DB/crates" ]; then
  cat >&2 <<EOF
audit: no RustSec advisory database snapshot at $DB
  The audit runs offline against a pinned snapshot: CI and this workplace
  reach the package registries only, so the database cannot be downloaded
  at test time. On a machine that can reach GitHub:
    git clone <rustsec/advisory-db on GitHub> DIR
    git -C DIR checkout $PINNED_COMMIT     # the snapshot of $PINNED_DATE
  then copy DIR here and run
    STROM_ADVISORY_DB=DIR scripts/audit.sh    (or scripts/audit.sh --db DIR)
  A newer snapshot works too (it may show newer advisories).
EOF
  exit 2
fi
if [ -d "$DB/.git" ] || git -C "$DB" rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git -C "$DB" rev-parse HEAD 2>/dev/null || echo unknown)
  date=$(git -C "$DB" log -1 --format=%cs HEAD 2>/dev/null || echo unknown)
  echo "advisory database: $DB at $commit ($date)"
  if [ "$commit" != "$PINNED_COMMIT" ]; then
    echo "note: not the pinned snapshot $PINNED_COMMIT ($PINNED_DATE) that docs/security.md records; results may differ"
  fi
else
  echo "advisory database: $DB (not a git checkout: its commit cannot be told; pinned is $PINNED_COMMIT of $PINNED_DATE)"
fi

export PATH="$TOOLS_DIR/bin:$PATH"
if ! cargo audit --version 2>/dev/null | grep -q " $CARGO_AUDIT_VERSION\$"; then
  echo "installing cargo-audit $CARGO_AUDIT_VERSION into $TOOLS_DIR (a few minutes)"
  if ! CARGO_TARGET_DIR="$TOOLS_DIR/target" nice -n 10 \
      cargo install --root "$TOOLS_DIR" cargo-audit --version "$CARGO_AUDIT_VERSION" --locked; then
    echo "audit: could not install cargo-audit $CARGO_AUDIT_VERSION" >&2
    exit 2
  fi
fi

ignores=()
for id in "${EXCEPTIONS[@]}"; do ignores+=(--ignore "$id"); done
locks=(Cargo.lock)
while IFS= read -r lock; do locks+=("${lock#./}"); done \
  < <(find . -mindepth 2 -maxdepth 2 -name Cargo.lock -not -path './target/*' | sort)

reports=()
trap 'rm -f "${reports[@]}"' EXIT
for lock in "${locks[@]}"; do
  common=(--db "$DB" --no-fetch --stale --file "$lock")
  # Everything cargo-audit knows of, exceptions included (for the report,
  # and to tell exceptions that no longer match anything).
  report=$(mktemp)
  reports+=("$report")
  cargo audit "${common[@]}" --json >"$report" 2>/dev/null || true
  if [ -n "${STROM_AUDIT_JSON:-}" ] && [ "$lock" = Cargo.lock ]; then
    cp "$report" "$STROM_AUDIT_JSON"
  fi
  # The verdict: every advisory and warning fails, but the exceptions.
  if cargo audit "${common[@]}" --deny warnings "${ignores[@]}" >/dev/null 2>&1; then
    echo "$lock: no advisory but the documented exceptions"
  else
    echo "$lock: advisories or warnings that are not documented exceptions:" >&2
    cargo audit "${common[@]}" --deny warnings "${ignores[@]}" >&2 || true
    status=1
  fi
done
python3 - "${#EXCEPTIONS[@]}" "${EXCEPTIONS[@]}" "${locks[@]}" "${reports[@]}" <<'EOF' || status=1
import json, sys
n = int(sys.argv[1])
exceptions = set(sys.argv[2:2 + n])
rest = sys.argv[2 + n:]
locks, reports = rest[: len(rest) // 2], rest[len(rest) // 2 :]
matched = set()
for lock, report in zip(locks, reports):
    try:
        d = json.load(open(report))
    except Exception as e:
        sys.exit(f"audit: cargo-audit gave no JSON report for {lock} ({e})")
    found = [(v["advisory"]["id"], v["package"]["name"], v["package"]["version"], "vulnerability")
             for v in d["vulnerabilities"]["list"]]
    for kind, ws in d.get("warnings", {}).items():
        for w in ws:
            adv = (w.get("advisory") or {}).get("id", "-")
            found.append((adv, w["package"]["name"], w["package"]["version"], kind))
    print(f"{lock}: {d['lockfile']['dependency-count']} crates, "
          f"{d['database']['advisory-count']} advisories; findings:")
    for adv, name, version, kind in sorted(found):
        mark = "exception (docs/security.md)" if adv in exceptions else "NOT ALLOWED"
        print(f"  {name} {version}: {adv} {kind}: {mark}")
    if not found:
        print("  none")
    matched |= {f[0] for f in found}
stale = sorted(exceptions - matched)
for adv in stale:
    print(f"audit: exception {adv} matches nothing any more: "
          "remove it from scripts/audit.sh and docs/security.md")
sys.exit(1 if stale else 0)
EOF

# ---- 2. npm packages of web/ ------------------------------------------------
if [ "$NPM_MODE" != skip ]; then
  echo
  echo "== npm packages (web/package-lock.json)"
  if ! command -v npm >/dev/null; then
    echo "audit: npm is not installed: web/ not checked" >&2
    [ "$NPM_MODE" = require ] && exit 2
  else
    npm_report=$(mktemp)
    trap 'rm -f "$report" "$npm_report"' EXIT
    (cd web && npm audit --package-lock-only --json >"$npm_report" 2>/dev/null) || true
    rc=0
    python3 - "$npm_report" "$NPM_MODE" <<'EOF' || rc=$?
import json, sys
report, mode = sys.argv[1], sys.argv[2]
try:
    d = json.load(open(report))
except Exception:
    d = {"message": "no JSON from npm audit"}
if "vulnerabilities" in d:
    deps = d.get("metadata", {}).get("dependencies", {}).get("total", "?")
    print(f"npm audit: {deps} packages checked")
    vulns = d["vulnerabilities"]
    for name, v in sorted(vulns.items()):
        print(f"  {name} {v.get('range', '')}: {v.get('severity')} (fix: {v.get('fixAvailable')})")
    if vulns:
        print("audit: npm audit found advisories (no npm exceptions are documented)")
        sys.exit(1)
    print("  no advisories")
else:
    why = d.get("message") or (d.get("error") or {}).get("summary") or "unknown error"
    print(f"npm audit could not run: {why}")
    print("  web/'s npm packages were NOT checked for advisories (the registry refuses")
    print("  the bulk advisory endpoint); run scripts/audit.sh where it answers.")
    sys.exit(2 if mode == "require" else 0)
EOF
    case "$rc" in
      0) ;;
      2) status=2 ;;
      *) status=1 ;;
    esac
    # Registry metadata that plain GETs reach: a deprecated locked version.
    deprecated=0
    while read -r name version; do
      note=$(cd web && npm view "$name@$version" deprecated 2>/dev/null || echo "?")
      if [ "$note" = "?" ]; then
        echo "  $name $version: registry metadata unavailable"
      elif [ -n "$note" ]; then
        echo "  $name $version: DEPRECATED: $note"
        deprecated=1
      fi
    done < <(python3 - <<'EOF'
import json
lock = json.load(open("web/package-lock.json"))
root = lock["packages"][""]
for name in sorted({**root.get("dependencies", {}), **root.get("devDependencies", {})}):
    print(name, lock["packages"][f"node_modules/{name}"]["version"])
EOF
)
    if [ "$deprecated" = 1 ]; then
      echo "audit: a locked direct dependency of web/ is deprecated" >&2
      status=1
    else
      echo "npm deprecation check: no locked direct dependency of web/ is deprecated"
    fi
  fi
fi

exit "$status"
