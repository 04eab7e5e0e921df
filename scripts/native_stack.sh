#!/usr/bin/env bash
# Start the docker-compose services natively, with the same environment, on one machine:
# PostgreSQL databases (on the server at 127.0.0.1:5432), `mlflow server`, a Ray head plus a second Ray
# worker node, the API (`autoft serve --no-runner`) and a runner (`autoft runner`) on that cluster.
#
#   scripts/native_stack.sh up DIR      start everything; writes DIR/stack.env (source it to use the stack)
#   scripts/native_stack.sh down DIR    stop everything started for DIR and drop its databases
#   scripts/native_stack.sh mlflow-stop|mlflow-start DIR    stop / restart only the MLflow server
#
# Ports come from API_PORT, MLFLOW_PORT, RAY_PORT (defaults 8000, 5000, 6379). Everything binds 127.0.0.1.
set -euo pipefail
cmd=${1:?usage: native_stack.sh up|down DIR}
dir=$(realpath -m "${2:?usage: native_stack.sh up|down DIR}")
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${AUTOFT_BIN:-$here/.venv/bin}
PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
prefix=${STACK_DB_PREFIX:-autoft_$(basename "$dir" | tr -c 'a-zA-Z0-9\n' '_')}

wait_http() {  # url, seconds
    for _ in $(seq 1 $(( $2 * 5 ))); do
        if "$bin/python" -c "import sys,httpx; sys.exit(httpx.get('$1', timeout=1).status_code != 200)" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "timed out waiting for $1" >&2
    return 1
}

up() {
    mkdir -p "$dir/logs" "$dir/mlartifacts" "$dir/data"
    api_port=${API_PORT:-8000} mlflow_port=${MLFLOW_PORT:-5000} ray_port=${RAY_PORT:-6379}
    for db in jobs optuna mlflow; do
        psql -q -d postgres -c "CREATE DATABASE ${prefix}_$db" >/dev/null
    done
    pg="postgresql+psycopg://$PGUSER@$PGHOST:$PGPORT/$prefix"
    cat > "$dir/stack.env" <<ENV
export AUTOFT_ENVIRONMENT=production
export AUTOFT_DATA_DIR=$dir/data
export AUTOFT_DATABASE_URL=${pg}_jobs
export AUTOFT_OPTUNA_STORAGE_URL=${pg}_optuna
export AUTOFT_MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port
export AUTOFT_MLFLOW_ARTIFACT_LOCATION=mlflow-artifacts:/autoft
export AUTOFT_MLFLOW_UI_URL=http://127.0.0.1:$mlflow_port
export AUTOFT_RAY_ADDRESS=127.0.0.1:$ray_port
export AUTOFT_URL=http://127.0.0.1:$api_port
export RAY_AUTH_MODE=disabled
ENV
    if [ -n "${AUTOFT_TASK_CACHE_DIR:-}" ]; then echo "export AUTOFT_TASK_CACHE_DIR=$AUTOFT_TASK_CACHE_DIR" >> "$dir/stack.env"; fi
    # shellcheck disable=SC1091
    . "$dir/stack.env"
    # the MLflow server's own start script, so it can be restarted alone (`native_stack.sh mlflow DIR`)
    cat > "$dir/start-mlflow.sh" <<MLF
#!/usr/bin/env bash
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_BACKEND_STORE_URI="${pg}_mlflow" \\
    setsid nohup "$bin/mlflow" server --host 127.0.0.1 --port "$mlflow_port" --workers 1 \\
    --artifacts-destination "$dir/mlartifacts" --serve-artifacts >> "$dir/logs/mlflow.log" 2>&1 &
echo \$! > "$dir/mlflow.pid"
MLF
    bash "$dir/start-mlflow.sh"
    "$bin/ray" start --head --port="$ray_port" --num-cpus=1 --node-ip-address=127.0.0.1 \
        --include-dashboard=false --disable-usage-stats --temp-dir="$dir/ray" > "$dir/logs/ray-head.log" 2>&1
    "$bin/ray" start --address="127.0.0.1:$ray_port" --num-cpus=1 --node-ip-address=127.0.0.1 \
        --disable-usage-stats > "$dir/logs/ray-worker.log" 2>&1
    wait_http "http://127.0.0.1:$mlflow_port/health" 120
    nohup "$bin/autoft" serve --no-runner --host 127.0.0.1 --port "$api_port" > "$dir/logs/api.log" 2>&1 &
    echo $! > "$dir/api.pid"
    nohup "$bin/autoft" runner > "$dir/logs/runner.log" 2>&1 &
    echo $! > "$dir/runner.pid"
    wait_http "http://127.0.0.1:$api_port/healthz" 120
    echo "stack up: API $AUTOFT_URL/docs, MLflow $AUTOFT_MLFLOW_TRACKING_URI, Ray $AUTOFT_RAY_ADDRESS"
}

stop_mlflow() {
    if [ -f "$dir/mlflow.pid" ]; then
        kill -TERM -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null || kill -TERM "$(cat "$dir/mlflow.pid")" 2>/dev/null || true
        rm -f "$dir/mlflow.pid"
    fi
}

down() {
    stop_mlflow
    for p in runner api; do
        if [ -f "$dir/$p.pid" ]; then
            pid=$(cat "$dir/$p.pid")
            pkill -TERM -P "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
            rm -f "$dir/$p.pid"
        fi
    done
    # this stack's Ray processes only (never `ray stop`, which stops every Ray on the machine)
    if [ -f "$dir/stack.env" ]; then
        addr=$(sed -n 's/^export AUTOFT_RAY_ADDRESS=//p' "$dir/stack.env")
        pkill -TERM -f -- "$dir/ray" 2>/dev/null || true
        pkill -TERM -f -- "${addr##*:}" 2>/dev/null || true
    fi
    sleep 2
    pkill -KILL -f -- "$dir/ray" 2>/dev/null || true
    for db in jobs optuna mlflow; do
        psql -q -d postgres -c "DROP DATABASE IF EXISTS ${prefix}_$db WITH (FORCE)" >/dev/null || true
    done
    echo "stack down"
}

case "$cmd" in
    up) up ;;
    mlflow-stop) stop_mlflow ;;   # a tracking-server outage, for the reliability suite
    mlflow-start) bash "$dir/start-mlflow.sh"; . "$dir/stack.env"; wait_http "$AUTOFT_MLFLOW_TRACKING_URI/health" 120 ;;
    down) down ;;
    *) echo "usage: native_stack.sh up|down DIR" >&2; exit 2 ;;
esac
