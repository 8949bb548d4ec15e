#!/usr/bin/env bash
# `make test`: pinned venvs, real Prefect servers on loopback (3.9.1, 3.9.1 with an auth
# string, 2.20.25), then the whole Rust test suite against them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

VENV3="$(ensure_venv prefect3 python/requirements-prefect3.txt)"
VENV2="$(ensure_venv prefect2 python/requirements-prefect2.txt)"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/prefect-aci-test.XXXXXX")"
cleanup() {
  for s in p3 p3auth p2; do stop_prefect_server "$STATE/$s"; done
  rm -rf "$STATE"
}
trap cleanup EXIT

AUTH_STRING="admin:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
log "starting Prefect servers"
export PREFECT_ACI_TEST_API_URL PREFECT_ACI_TEST_AUTH_API_URL PREFECT_ACI_TEST_P2_API_URL
PREFECT_ACI_TEST_API_URL="$(start_prefect_server "$VENV3" "$STATE/p3")"
PREFECT_ACI_TEST_AUTH_API_URL="$(start_prefect_server "$VENV3" "$STATE/p3auth" PREFECT_SERVER_API_AUTH_STRING="$AUTH_STRING")"
PREFECT_ACI_TEST_P2_API_URL="$(start_prefect_server "$VENV2" "$STATE/p2")"
export PREFECT_ACI_TEST_AUTH_STRING="$AUTH_STRING"
export PREFECT_ACI_VENV3="$VENV3" PREFECT_ACI_VENV2="$VENV2"
log "Prefect 3: $PREFECT_ACI_TEST_API_URL  (auth: $PREFECT_ACI_TEST_AUTH_API_URL)  Prefect 2: $PREFECT_ACI_TEST_P2_API_URL"

cargo test --workspace --locked "$@"
