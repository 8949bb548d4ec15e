# shellcheck shell=bash
# Shared helpers for the test and demo scripts: pinned Python venvs and local Prefect servers.
# Everything listens on 127.0.0.1 only.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Venvs live outside the work tree so that fresh clones on one machine reuse them; a stamp
# with the requirements' hash decides when to rebuild.
VENV_ROOT="${PREFECT_ACI_VENV_ROOT:-$HOME/.cache/prefect-aci/venvs}"
PYTHON_BIN="${PYTHON:-python3}"

log() { printf '\033[1m[prefect-aci]\033[0m %s\n' "$*" >&2; }

# ensure_venv NAME REQUIREMENTS_FILE -> prints the venv path
ensure_venv() {
  local name="$1" req="$2" dir="$VENV_ROOT/$1" stamp
  stamp="$(sha256sum "$req" | cut -c1-16)"
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
    echo "$dir"; return 0
  fi
  log "creating Python venv $name from $(basename "$req") (first run only; takes a few minutes)"
  rm -rf "$dir"
  mkdir -p "$VENV_ROOT"
  "$PYTHON_BIN" -m venv "$dir" >&2
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$stamp" > "$dir/.stamp"
  echo "$dir"
}

free_port() {
  "$PYTHON_BIN" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_prefect_server VENV STATE_DIR [EXTRA_ENV...] -> prints the API URL; pid in STATE_DIR/pid
start_prefect_server() {
  local venv="$1" state="$2"; shift 2
  local port; port="$(free_port)"
  mkdir -p "$state/home"
  (
    export PREFECT_HOME="$state/home"
    export PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$state/prefect.db"
    export PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$state/prefect.db"
    export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false PREFECT_SERVER_UI_ENABLED=false
    export PREFECT_SERVER_LOGGING_LEVEL=WARNING PREFECT_LOGGING_SERVER_LEVEL=WARNING
    unset PREFECT_API_URL PREFECT_API_KEY PREFECT_API_AUTH_STRING
    for kv in "$@"; do export "${kv?}"; done
    exec "$venv/bin/prefect" server start --host 127.0.0.1 --port "$port" >"$state/server.log" 2>&1
  ) &
  echo $! > "$state/pid"
  local url="http://127.0.0.1:$port/api" i
  for i in $(seq 1 240); do
    if curl -fsS "$url/health" >/dev/null 2>&1; then echo "$url"; return 0; fi
    if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  log "Prefect server in $state did not become healthy; its log:"
  tail -50 "$state/server.log" >&2
  return 1
}

stop_prefect_server() {
  local state="$1"
  [[ -f "$state/pid" ]] || return 0
  local pid; pid="$(cat "$state/pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
}
