#!/usr/bin/env bash
# `make soak`: the fault matrix in its long mode (20 worker kills, more runs per scenario,
# a 60 s Prefect outage), against real Prefect servers on loopback like `make test`.
# Rewrites docs/RELIABILITY.md with the soak numbers. Takes about 15-25 minutes on 2 cores.
#
#   scripts/soak.sh            # all fault scenarios
#   scripts/soak.sh worker     # only scenarios whose test name contains "worker"
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

VENV3="$(ensure_venv prefect3 python/requirements-prefect3.txt)"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/prefect-aci-soak.XXXXXX")"
cleanup() {
  stop_prefect_server "$STATE/p3"
  rm -rf "$STATE"
}
trap cleanup EXIT

log "starting a Prefect 3 server"
export PREFECT_ACI_TEST_API_URL
PREFECT_ACI_TEST_API_URL="$(start_prefect_server "$VENV3" "$STATE/p3")"
export PREFECT_ACI_VENV3="$VENV3" PREFECT_ACI_SOAK=1
log "soak against $PREFECT_ACI_TEST_API_URL"
# Two scenarios at a time: each runs real Prefect engines in emulated containers.
cargo test -p prefect-aci-worker --locked --test faults -- --test-threads 2 "$@"
log "results: docs/RELIABILITY.md"
