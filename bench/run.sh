#!/usr/bin/env bash
# Benchmarks prefect-aci's worker side by side with Prefect's Python ACI worker
# (prefect-azure==0.4.13), both against one real Prefect 3.9.1 server and the ACI emulator,
# each worker a separate process measured from /proc. Writes bench/RESULTS.md.
#
#   make bench              # full: 200-run burst, 1,000 concurrent 10-minute runs (~1 h)
#   bench/run.sh --quick    # CI-sized: 20-run burst, 40 concurrent 1-minute runs (~5 min)
#   bench/run.sh --workers "rust python"   # choose workers (rust, rust-polling, python)
#
# Raw results and logs stay in bench/out/<worker>/ (git-ignored).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"

MODE=full
WORKERS="rust rust-polling python"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) MODE=quick ;;
    --workers) WORKERS="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $MODE == quick ]]; then
  ARGS=(--idle-seconds 8 --burst-runs 20 --burst-flow-seconds 10 --steady-runs 40 --steady-flow-seconds 60 --steady-window 20 --phase-timeout 180)
else
  ARGS=(--idle-seconds 20 --burst-runs 200 --burst-flow-seconds 60 --steady-runs 1000 --steady-flow-seconds 600 --steady-window 120 --phase-timeout 900)
fi

VENV3="$(ensure_venv prefect3 python/requirements-prefect3.txt)"
VENVPY="$(ensure_venv python-worker bench/requirements-python-worker.txt)"
log "building the release binary"
cargo build --release --locked -p prefect-aci >&2
BIN="$REPO_ROOT/target/release/prefect-aci"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/prefect-aci-bench.XXXXXX")"
cleanup() { stop_prefect_server "$STATE/server"; rm -rf "$STATE"; }
trap cleanup EXIT
# Generous server-side timeouts: a burst of runs and 1,000 containers reporting states load
# SQLite; the benchmark measures workers, not the server's lock contention.
API_URL="$(start_prefect_server "$VENV3" "$STATE/server" PREFECT_SERVER_DATABASE_TIMEOUT=60 PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT=30)"
log "Prefect server at $API_URL ($MODE mode; workers: $WORKERS)"

OUT="$REPO_ROOT/bench/out"
mkdir -p "$OUT"
for w in $WORKERS; do
  extra=()
  # Pickup before/after events: the polling-only variant runs the burst alone.
  [[ $w == rust-polling ]] && extra+=(--skip steady)
  rm -rf "${OUT:?}/$w"
  log "benchmarking the $w worker"
  "$VENV3/bin/python" bench/bench.py --worker "$w" --api-url "$API_URL" --binary "$BIN" \
    --python-venv "$VENVPY" --out "$OUT/$w" --metrics-port "$(free_port)" "${ARGS[@]}" "${extra[@]}"
done
"$VENV3/bin/python" bench/report.py --out "$OUT" --mode "$MODE" --binary "$BIN" --python-venv "$VENVPY" --server-venv "$VENV3" > bench/RESULTS.md
log "wrote bench/RESULTS.md"
