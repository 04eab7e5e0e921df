#!/usr/bin/env bash
# Smoke test of the docker-compose stack, for real: images, containers, healthchecks, networking, volumes.
#
#   scripts/stack_smoke.sh
#
#  1. engine    a Docker Engine: the running one, else Debian's docker.io (installed with apt if missing,
#               as root), started here in the background and stopped again at the end
#  2. images    scripts/stack_images.sh: every image from Debian's packages, no registry needed
#               (STACK_IMAGES=registry: `compose build` + the registry's postgres and prometheus instead)
#  3. up        `compose up -d` with the cpu profile, then every container running and every healthcheck
#               healthy: postgres, mlflow, ray-head, ray-worker-cpu, api, runner, prometheus
#  4. job       an API key made with `compose exec api autoft keys create`; a small job through the published
#               API port succeeds, every trial once; its trials ran on the Ray worker (the only node with
#               CPUs: the head and the runner's node offer none) and overlapped; its parent run, one child run
#               per trial and its registered model are in the MLflow server (published port); Prometheus
#               scrapes the API target as up
#  5. kill      a second job: the runner container is killed (SIGKILL) once trials are done, started again,
#               and the job finishes with no trial lost, duplicated or rerun
#  6. restart   `compose down` + `up`: both jobs, their MLflow runs and registered models are still there
#  7. down -v   nothing of the project is left (containers, volumes, network)
# Each phase prints its time; the last lines are the totals.
#
# Environment: STACK_PROJECT (compose project, default autoft-smoke), STACK_KEEP=1 (leave the stack up on
# failure, for inspection), DOCKER, COMPOSE (default: `docker compose` if present, else docker-compose).
# Compose 1.29 (Debian's docker-compose) rejects two newer keys of docker-compose.yml, the top-level `name`
# and `depends_on.required`; with it the stack runs from a copy without them (both are no-ops for the cpu
# profile and an explicit project name).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
DOCKER=${DOCKER:-docker}
export DOCKER_BUILDKIT=0
project=${STACK_PROJECT:-autoft-smoke}
work=$(mktemp -d /tmp/autoft-smoke.XXXXXX)
checks=(python3 "$root/scripts/stack_smoke_checks.py")
t_start=$(date +%s)
t_phase=$t_start
started_dockerd=
phases=()

log() { printf '[stack_smoke %s] %s\n' "$(date -u +%T)" "$*" >&2; }
phase_done() {  # name: print and record the time since the last phase ended
    local now
    now=$(date +%s)
    phases+=("$(printf '%-8s %4ss' "$1" $((now - t_phase)))")
    log "phase $1 done in $((now - t_phase))s"
    t_phase=$now
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 1. engine ------------------------------------------------------------------------------------------------------
stop_engine() {
    if [ -n "$started_dockerd" ]; then
        log "stopping the dockerd started here (pid $started_dockerd)"
        kill "$started_dockerd" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
    fi
}
if ! "$DOCKER" info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
        || { ! command -v docker-compose >/dev/null && ! "$DOCKER" compose version >/dev/null 2>&1; }; then
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
            || { echo "no Docker Engine: install docker.io, docker-compose and debootstrap" >&2; exit 1; }
        log "installing docker.io docker-compose debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
    fi
    dockerd_bin=$(command -v dockerd)
    for driver in overlay2 vfs; do
        log "starting dockerd ($driver), log in $work/dockerd.log"
        "$dockerd_bin" --storage-driver "$driver" --exec-opt native.cgroupdriver=cgroupfs \
            >>"$work/dockerd.log" 2>&1 &
        started_dockerd=$!
        for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
        if "$DOCKER" info >/dev/null 2>&1; then break; fi
        kill "$started_dockerd" 2>/dev/null || true
        wait "$started_dockerd" 2>/dev/null || true
        started_dockerd=
    done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; exit 1; }
fi
trap stop_engine EXIT

if [ -n "${COMPOSE:-}" ]; then
    read -r -a compose_cmd <<<"$COMPOSE"
elif "$DOCKER" compose version >/dev/null 2>&1; then
    compose_cmd=("$DOCKER" compose)
else
    compose_cmd=(docker-compose)
fi
compose_file=$root/docker-compose.yml
compose_version=$("${compose_cmd[@]}" version 2>/dev/null || true)   # not piped into grep -q: SIGPIPE + pipefail
if [[ $compose_version == *"version 1."* ]]; then
    compose_file=$work/docker-compose.yml
    sed -e '/^name: /d' -e '/^ *required: false/d' "$root/docker-compose.yml" >"$compose_file"
fi
phase_done engine

# 2. images --------------------------------------------------------------------------------------------------------
files=(-f "$compose_file")
if [ "${STACK_IMAGES:-local}" = local ]; then
    DOCKER=$DOCKER scripts/stack_images.sh
    files+=(-f "$root/deploy/compose.local.yml")
fi
api_port=$(free_port)
mlflow_port=$(free_port)
cat >"$work/.env" <<ENV
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
GRAFANA_ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
RAY_AUTH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
COMPOSE_PROFILES=cpu
API_PORT=$api_port
MLFLOW_PORT=$mlflow_port
GRAFANA_PORT=$(free_port)
AUTOFT_RUNNER_LEASE_SECONDS=15
ENV
compose() { "${compose_cmd[@]}" -p "$project" --project-directory "$root" --env-file "$work/.env" "${files[@]}" "$@"; }
if [ "${STACK_IMAGES:-local}" != local ]; then compose build; fi
phase_done images

api=http://127.0.0.1:$api_port
mlflow=http://127.0.0.1:$mlflow_port
services=(postgres mlflow ray-head ray-worker-cpu api runner prometheus)
healthy=(postgres mlflow ray-head api)   # the services with a healthcheck

teardown() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        log "FAILED (rc $rc); the last lines of each service:"
        compose logs --no-color --tail 30 >&2 2>/dev/null || true
        for id in $(compose ps -q 2>/dev/null); do   # the healthchecks' last results
            "$DOCKER" inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}} {{range .State.Health.Log}}[{{.ExitCode}} {{.Output}}] {{end}}{{end}}' "$id" >&2 || true
        done
        if [ -n "${STACK_KEEP:-}" ]; then
            log "STACK_KEEP: left up; remove with: ${compose_cmd[*]} -p $project down -v"
            return
        fi
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    stop_engine
    rm -rf "$work"
}
trap teardown EXIT

wait_stack() {  # every service's container running, every healthcheck healthy
    local deadline=$(( $(date +%s) + ${1:-420} )) s id status pending
    while :; do
        pending=()
        for s in "${services[@]}"; do
            id=$(compose ps -q "$s" 2>/dev/null || true)
            if [ -z "$id" ]; then pending+=("$s:absent"); continue; fi
            status=$("$DOCKER" inspect -f '{{.State.Status}}{{if .State.Health}}/{{.State.Health.Status}}{{end}}' "$id")
            case "$status" in running | running/healthy) ;; *) pending+=("$s:$status") ;; esac
        done
        [ ${#pending[@]} = 0 ] && return 0
        if [ "$(date +%s)" -gt "$deadline" ]; then
            log "not ready: ${pending[*]}"
            return 1
        fi
        sleep 3
    done
}

# 3. up ------------------------------------------------------------------------------------------------------------
compose up -d >/dev/null
wait_stack 420
for s in "${healthy[@]}"; do
    [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$s")")" = healthy ] \
        || { echo "$s has no healthy healthcheck" >&2; exit 1; }
done
phase_done up

# 4. job -----------------------------------------------------------------------------------------------------------
key=$(compose exec -T api autoft keys create --tenant smoke --name smoke | tail -1 | tr -d '\r')
[ -n "$key" ] || { echo "no API key from autoft keys create" >&2; exit 1; }
job1=$("${checks[@]}" submit "$api" "$key" smoke-one 4 | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
"${checks[@]}" wait-job "$api" "$key" "$job1" 4 | tee "$work/job1.json"
python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if j["overlapped"] else "no two trials ran at once")' "$work/job1.json"
"${checks[@]}" mlflow "$mlflow" "$work/job1.json" 4 "autoft~smoke~smoke-one" | tee "$work/mlflow1.json"

# Where the trials ran: Ray's nodes as the cluster sees them, matched to the containers' addresses. Only the
# worker offers CPUs, and every actor the job's trials ran in (alive or dead) is on the worker.
worker_ip=$("$DOCKER" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(compose ps -q ray-worker-cpu)")
compose exec -T ray-head python - "$worker_ip" <<'PY' | tee "$work/ray.json"
import json, sys
import ray
from ray.util.state import list_actors, list_tasks
worker_ip = sys.argv[1]
ray.init(address="ray-head:6379", log_to_driver=False, logging_level="ERROR")
nodes = [n for n in ray.nodes() if n["Alive"]]
with_cpu = {n["NodeManagerAddress"] for n in nodes if n["Resources"].get("CPU", 0) > 0}
ip_of = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
def cpus(resources):  # in a placement group (Tune's trials) CPU is named CPU_group_<...>
    return sum(v for k, v in (resources or {}).items() if k == "CPU" or k.startswith("CPU_group_"))
units = [(a.class_name, a.node_id) for a in list_actors(detail=True, limit=10000, raise_on_missing_output=False)
         if cpus(a.required_resources) > 0]
units += [(t.name, t.node_id) for t in list_tasks(detail=True, limit=10000, raise_on_missing_output=False)
          if cpus(t.required_resources) > 0 and t.node_id]
on = sorted({ip_of.get(node, node) for _, node in units})
print(json.dumps({"alive_nodes": len(nodes), "nodes_with_cpus": sorted(with_cpu), "cpu_actors_and_tasks": len(units),
                  "names": sorted({name for name, _ in units}), "ran_on": on}))
assert len(nodes) == 3, "expected 3 Ray nodes: the head, the worker and the runner's"
assert with_cpu == {worker_ip}, f"CPUs on {with_cpu}, the worker is {worker_ip}"
assert units and on == [worker_ip], f"CPU work ran on {on}, the worker is {worker_ip}"
PY

# Prometheus (not published): its targets, read from the API container over the stack's network. Wait for
# the first scrape (15 s interval).
compose exec -T api python - <<'PY' | tee "$work/prometheus.json"
import json, time, urllib.request
deadline = time.time() + 90
while True:
    targets = json.load(urllib.request.urlopen("http://prometheus:9090/api/v1/targets", timeout=10))["data"]["activeTargets"]
    health = {t["labels"]["job"] + "/" + t["labels"]["instance"]: t["health"] for t in targets}
    if health.get("autoft-api/api:8000") == "up" or time.time() > deadline:
        break
    time.sleep(3)
print(json.dumps(health))
assert health.get("autoft-api/api:8000") == "up", health
PY
phase_done job

# 5. kill ----------------------------------------------------------------------------------------------------------
job2=$("${checks[@]}" submit "$api" "$key" smoke-two 6 | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
"${checks[@]}" wait-trials "$api" "$key" "$job2" 2
"${checks[@]}" seen "$api" "$key" "$job2" "$work/seen.json"
runner=$(compose ps -q runner)
"$DOCKER" kill --signal KILL "$runner" >/dev/null
log "runner killed (SIGKILL)"
"$DOCKER" wait "$runner" >/dev/null 2>&1 || true
compose start runner >/dev/null
"${checks[@]}" wait-job "$api" "$key" "$job2" 6 "$work/seen.json" | tee "$work/job2.json"
python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if (j["attempts"] or 0) >= 2 else "attempts %s: the kill did not interrupt the job" % j["attempts"])' "$work/job2.json"
"${checks[@]}" mlflow "$mlflow" "$work/job2.json" 6 "autoft~smoke~smoke-two" | tee "$work/mlflow2.json"
phase_done kill

# 6. restart -------------------------------------------------------------------------------------------------------
compose down >/dev/null 2>&1
[ -z "$(compose ps -q)" ] || { echo "containers left after compose down" >&2; exit 1; }
compose up -d >/dev/null
wait_stack 420
"${checks[@]}" wait-job "$api" "$key" "$job1" 4 >/dev/null
"${checks[@]}" wait-job "$api" "$key" "$job2" 6 "$work/seen.json" >/dev/null
"${checks[@]}" mlflow "$mlflow" "$work/job1.json" 4 "autoft~smoke~smoke-one" >/dev/null
"${checks[@]}" mlflow "$mlflow" "$work/job2.json" 6 "autoft~smoke~smoke-two" | tee "$work/mlflow2b.json"
phase_done restart

# 7. down -v -------------------------------------------------------------------------------------------------------
compose down -v --remove-orphans >/dev/null 2>&1
left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$project")
vols=$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left$vols" ] || { echo "left after down -v: containers [$left] volumes [$vols]" >&2; exit 1; }
phase_done down

python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
j1, j2 = (json.load(open(f"{w}/job{i}.json")) for i in (1, 2))
m1, m2 = (json.load(open(f"{w}/{f}.json")) for f in ("mlflow1", "mlflow2"))
ray = json.load(open(f"{w}/ray.json"))
print(f"[stack_smoke] job 1: {j1['trials']} trials, MLflow {m1['runs']} runs ({m1['children']} child runs), "
      f"model {m1['model']} v{m1['versions']}; {ray['cpu_actors_and_tasks']} Ray actors/tasks with CPUs, all on the worker {ray['ran_on']}")
print(f"[stack_smoke] job 2 (runner killed): {j2['attempts']} attempts, {j2['trials']} trials, {j2['interrupted']} "
      f"interrupted and replaced, {j2['lost']} lost, {j2['duplicated']} duplicated, {j2['rerun']} rerun; "
      f"MLflow {m2['runs']} runs ({m2['children']} child runs)")
PY
for p in "${phases[@]}"; do echo "[stack_smoke] $p"; done
echo "[stack_smoke] PASSED in $(( $(date +%s) - t_start ))s"
