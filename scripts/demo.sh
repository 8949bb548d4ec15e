#!/usr/bin/env bash
# `make demo`: the guide's my_flow on ACI — here the local ACI emulator — end to end.
# Starts a local Prefect server, the emulator and the worker; deploys examples/my_flow.py to an
# azure-container-instance pool; runs it; prints the flow's log line and final state as Prefect
# stored them; shuts everything down. Everything listens on 127.0.0.1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

VENV3="$(ensure_venv prefect3 python/requirements-prefect3.txt)"
log "building prefect-aci"
cargo build --quiet -p prefect-aci
BIN="$REPO_ROOT/target/debug/prefect-aci"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/prefect-aci-demo.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_prefect_server "$STATE/server"
  rm -rf "$STATE"
}
trap cleanup EXIT

log "starting a local Prefect server"
export PREFECT_API_URL
PREFECT_API_URL="$(start_prefect_server "$VENV3" "$STATE/server")"
export PREFECT_HOME="$STATE/client-home"

POOL=demo-aci-pool
REGISTRY=prefectdemo
cat > "$STATE/emulator.json" <<JSON
{
  "resource_groups": [{"name": "prefect-demo", "location": "eastus"}],
  "images": [
    {"image": "$REGISTRY.azurecr.io/example:*", "working_dir": "$REPO_ROOT/examples",
     "path_prepend": ["$VENV3/bin"], "entrypoint_aliases": {"/opt/prefect/entrypoint.sh": []}},
    {"image": "prefecthq/prefect:*", "path_prepend": ["$VENV3/bin"],
     "entrypoint_aliases": {"/opt/prefect/entrypoint.sh": []}}
  ],
  "pull_delay_ms": 300,
  "provisioning_delay_ms": 300
}
JSON
log "starting the ACI emulator"
"$BIN" emulator --listen 127.0.0.1:0 --config "$STATE/emulator.json" --env-file "$STATE/azure.env" \
  >"$STATE/emulator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s "$STATE/azure.env" ]] && break; sleep 0.1; done
[[ -s "$STATE/azure.env" ]] || { cat "$STATE/emulator.log" >&2; exit 1; }
set -a; source "$STATE/azure.env"; set +a

log "starting the worker on pool $POOL"
"$BIN" worker start --pool "$POOL" --name demo-worker >"$STATE/worker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$PREFECT_API_URL/work_pools/$POOL" >/dev/null 2>&1 && break; sleep 0.2
done

# The guide's steps 1-5 on the emulator: a user-assigned identity the flow containers pull
# their image with (ACR needs a credential), passed as job variables.
TOKEN="$(curl -fsS "$AZURE_AUTHORITY_HOST/$AZURE_TENANT_ID/oauth2/v2.0/token" \
  -d grant_type=client_credentials -d "client_id=$AZURE_CLIENT_ID" \
  --data-urlencode "client_secret=$AZURE_CLIENT_SECRET" \
  --data-urlencode scope=https://management.azure.com/.default | "$VENV3/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
IDENTITY_ID="/subscriptions/$AZURE_SUBSCRIPTION_ID/resourceGroups/prefect-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/prefect-demo-identity"
curl -fsS -X PUT "$AZURE_RESOURCE_MANAGER_ENDPOINT$IDENTITY_ID?api-version=2023-01-31" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"location":"eastus"}' >/dev/null

log "deploying examples/my_flow.py"
(cd examples && PREFECT_ACI_DEMO=1 REGISTRY_NAME="$REGISTRY" WORK_POOL_NAME="$POOL" \
  PREFECT_ACI_JOB_VARIABLES="{\"subscription_id\": \"$AZURE_SUBSCRIPTION_ID\", \"resource_group_name\": \"prefect-demo\", \"stream_output\": true, \"identities\": [\"$IDENTITY_ID\"], \"image_registry\": {\"registry_url\": \"$REGISTRY.azurecr.io\", \"identity\": \"$IDENTITY_ID\"}}" \
  "$VENV3/bin/python" my_flow.py >"$STATE/deploy.log" 2>&1) || { cat "$STATE/deploy.log" >&2; exit 1; }

log "running my-flow/aci-deployment"
if ! "$VENV3/bin/python" scripts/demo_run.py; then
  log "the demo run did not complete; worker log:"
  tail -40 "$STATE/worker.log" >&2
  exit 1
fi
log "done; shutting down"
