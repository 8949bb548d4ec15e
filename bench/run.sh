#!/usr/bin/env bash
# Benchmarks prefect-aci's worker side by side with Prefect's Python ACI worker
# (prefect-azure==0.4.13), both against one real Prefect 3.9.1 server and the ACI emulator,
# each worker a separate process measured from /proc. Writes bench/RESULTS.md.
#
#   make bench              # full: 200-run burst, 1,000 concurrent 10-minute runs (~1 h)
#   bench/run.sh --quick    # CI-sized: 20-run burst, 30 concurrent 85-second runs (~5 min)
#   bench/run.sh --workers "rust python"   # choose workers (rust, rust-polling, python)
#   bench/run.sh --sqlite   # the server on SQLite instead of a throwaway PostgreSQL 15
#   bench/run.sh --no-python-steady   # skip the Python worker's 1,000-run phase (~40 min)
#
# The Prefect server runs on PostgreSQL when `initdb`/`pg_ctl` are installed: on SQLite a burst
# of runs makes the server answer 503 (database locked) and the workers' retries, not the
# workers, would dominate pickup latency.
#
# Raw results and logs stay in bench/out/<worker>/ (git-ignored).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"

MODE=full
WORKERS="rust python rust-polling"
DB=postgres
PYTHON_STEADY=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) MODE=quick ;;
    --sqlite) DB=sqlite ;;
    --no-python-steady) PYTHON_STEADY=0 ;;
    --workers) WORKERS="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $MODE == quick ]]; then
  ARGS=(--idle-seconds 6 --burst-runs 20 --burst-flow-seconds 10 --steady-runs 30 --steady-flow-seconds 85 --steady-settle 32 --steady-window 15 --phase-timeout 180)
else
  ARGS=(--idle-seconds 20 --burst-runs 200 --burst-flow-seconds 60 --steady-runs 1000 --steady-flow-seconds 600 --steady-settle 60 --steady-window 120 --phase-timeout 900)
fi

VENV3="$(ensure_venv prefect3 python/requirements-prefect3.txt)"
VENVPY="$(ensure_venv python-worker bench/requirements-python-worker.txt)"
log "building the release binary"
cargo build --release --locked -p prefect-aci >&2
BIN="$REPO_ROOT/target/release/prefect-aci"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/prefect-aci-bench.XXXXXX")"
chmod 755 "$STATE"
PG_AS=()
[[ $(id -u) == 0 ]] && PG_AS=(runuser -u postgres --)  # PostgreSQL refuses to run as root
cleanup() {
  stop_prefect_server "$STATE/server"
  [[ -d $STATE/pg/data ]] && "${PG_AS[@]}" pg_ctl -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

# start_postgres DIR -> prints a SQLAlchemy URL of a fresh, throwaway database
start_postgres() {
  local dir="$1" port; port="$(free_port)"
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown postgres "$dir"
  "${PG_AS[@]}" initdb -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
  "${PG_AS[@]}" pg_ctl -D "$dir/data" -l "$dir/pg.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
  psql -h 127.0.0.1 -p "$port" -U postgres -qc "create database prefect" >&2
  echo "postgresql+asyncpg://postgres@127.0.0.1:$port/prefect"
}

SERVER_ENV=()
if [[ $DB == postgres ]] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
  PG_URL="$(start_postgres "$STATE/pg")"
  SERVER_ENV=(PREFECT_API_DATABASE_CONNECTION_URL="$PG_URL" PREFECT_SERVER_DATABASE_CONNECTION_URL="$PG_URL")
else
  DB=sqlite
fi
API_URL="$(start_prefect_server "$VENV3" "$STATE/server" "${SERVER_ENV[@]}")"
log "Prefect server at $API_URL on $DB ($MODE mode; workers: $WORKERS)"

OUT="$REPO_ROOT/bench/out"
mkdir -p "$OUT"
for w in rust rust-polling python; do rm -rf "${OUT:?}/$w"; done
for w in $WORKERS; do
  extra=()
  # Pickup before/after events: the polling-only variant runs the burst alone.
  [[ $w == rust-polling ]] && extra+=(--skip steady)
  [[ $w == python && $PYTHON_STEADY == 0 ]] && extra+=(--skip steady)
  log "benchmarking the $w worker"
  "$VENV3/bin/python" bench/bench.py --worker "$w" --api-url "$API_URL" --binary "$BIN" \
    --python-venv "$VENVPY" --out "$OUT/$w" --metrics-port "$(free_port)" "${ARGS[@]}" "${extra[@]}"
  # Rewritten after each worker, so an interrupted run still leaves what it measured.
  "$VENV3/bin/python" bench/report.py --out "$OUT" --mode "$MODE" --binary "$BIN" --python-venv "$VENVPY" --server-venv "$VENV3" --db "$DB" > bench/RESULTS.md
  log "wrote bench/RESULTS.md"
done
