#!/usr/bin/env bash
# `make demo`: the guide's my_flow on ACI — here the local ACI emulator — end to end.
# Starts a local Prefect server and the emulator (with RBAC); runs `prefect-aci setup`, which
# provisions everything and starts the worker in a container running as a managed identity;
# deploys examples/my_flow.py to the pool; runs it; prints the flow's log line and final state as Prefect
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
RG=prefect-demo
# The emulator enforces Azure RBAC. Its image table maps the registry's images to local
# programs: the worker image runs this build of prefect-aci, the flow image the Prefect venv.
cat > "$STATE/emulator.json" <<JSON
{
  "rbac": true,
  "images": [
    {"image": "$REGISTRY.azurecr.io/prefect-aci:*", "path_prepend": ["$REPO_ROOT/target/debug"],
     "env": {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_HOME": "$STATE/worker-home"}},
    {"image": "$REGISTRY.azurecr.io/example:*", "working_dir": "$REPO_ROOT/examples",
     "path_prepend": ["$VENV3/bin"], "entrypoint_aliases": {"/opt/prefect/entrypoint.sh": []}},
    {"image": "prefecthq/prefect:*", "path_prepend": ["$VENV3/bin"],
     "entrypoint_aliases": {"/opt/prefect/entrypoint.sh": []}}
  ],
  "pull_delay_ms": 300,
  "provisioning_delay_ms": 300
}
JSON
log "starting the ACI emulator (RBAC enforced)"
"$BIN" emulator --listen 127.0.0.1:0 --rbac --config "$STATE/emulator.json" --env-file "$STATE/azure.env" \
  >"$STATE/emulator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s "$STATE/azure.env" ]] && break; sleep 0.1; done
[[ -s "$STATE/azure.env" ]] || { cat "$STATE/emulator.log" >&2; exit 1; }
set -a; source "$STATE/azure.env"; set +a

# GET an ARM path as the admin (for diagnostics and waits); prints the JSON body.
arm_get() {
  local token
  token="$(curl -fsS "$AZURE_AUTHORITY_HOST/$AZURE_TENANT_ID/oauth2/v2.0/token" \
    -d grant_type=client_credentials -d "client_id=$AZURE_CLIENT_ID" \
    --data-urlencode "client_secret=$AZURE_CLIENT_SECRET" \
    --data-urlencode scope=https://management.azure.com/.default | "$VENV3/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  curl -fsS -H "Authorization: Bearer $token" "$AZURE_RESOURCE_MANAGER_ENDPOINT/subscriptions/$AZURE_SUBSCRIPTION_ID/resourceGroups/$RG/providers/$1"
}
# The worker's own container group logs.
worker_logs() {
  arm_get "Microsoft.ContainerInstance/containerGroups/$POOL/containers/prefect-aci-worker/logs?api-version=2025-09-01&tail=40" \
    | "$VENV3/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["content"])'
}

# The guide's steps 1-5 in one command, as the subscription's admin: resource group, role,
# identity, role assignments, registry, work pool, and the worker's container group, which
# runs `prefect-aci worker start` as the identity (tokens from the emulator's IMDS).
log "prefect-aci setup"
"$BIN" setup --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$RG" --location eastus \
  --identity prefect-demo-identity --registry "$REGISTRY" --pool "$POOL" --yes
log "prefect-aci setup again: nothing to change"
"$BIN" setup --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$RG" --location eastus \
  --identity prefect-demo-identity --registry "$REGISTRY" --pool "$POOL" --dry-run

log "deploying examples/my_flow.py"
# The pool's defaults (set by setup) carry the identity, registry, subscription and group.
(cd examples && PREFECT_ACI_DEMO=1 REGISTRY_NAME="$REGISTRY" WORK_POOL_NAME="$POOL" \
  PREFECT_ACI_JOB_VARIABLES='{"stream_output": true}' \
  "$VENV3/bin/python" my_flow.py >"$STATE/deploy.log" 2>&1) || { cat "$STATE/deploy.log" >&2; exit 1; }

log "running my-flow/aci-deployment"
if ! "$VENV3/bin/python" scripts/demo_run.py; then
  log "the demo run did not complete; worker log:"
  worker_logs >&2 || tail -40 "$STATE/emulator.log" >&2
  exit 1
fi
# The worker deletes the flow run's container group once the run is over; wait for that, so
# the resource group is empty of anything setup did not create.
for _ in $(seq 1 100); do
  groups="$(arm_get "Microsoft.ContainerInstance/containerGroups?api-version=2025-09-01" \
    | "$VENV3/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["value"]))')"
  [[ "$groups" == 1 ]] && break; sleep 0.2
done
log "prefect-aci teardown: remove what setup created"
"$BIN" teardown --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$RG" --pool "$POOL" --yes
log "done; shutting down"
