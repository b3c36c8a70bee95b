#!/usr/bin/env bash
# wattcap in one command, on this machine: the local control plane (kwok GPU
# nodes), the simulated DCGM exporter, Prometheus, the operator, a PowerPolicy
# with a demand-response window a few minutes ahead, and a mixed workload.
#
# Usage: hack/demo.sh up      start what is not running yet (safe to run twice)
#        hack/demo.sh down    stop what `up` started, and the control plane
#
# Needs the tool cache (hack/install-tools.sh) and the Python package
# (`make deps`). Processes, pid files and logs live in .cluster/demo/.
# Env: DEMO_NODES (8), DEMO_WINDOW_IN (300 s: when the window opens),
#      DEMO_WINDOW_FOR (600 s), PROM_PORT (9090), DEMO_EXPORTER_PORT (9400),
#      DEMO_METRICS_PORT (8080), DEMO_KEEP_CLUSTER (1: `down` leaves the control
#      plane up, for a caller that started it, such as the test session).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
BIN_DIR="${WATTCAP_CACHE:-$HOME/.cache/wattcap}/bin"
STATE_DIR="$REPO_DIR/.cluster/demo"
KUBECONFIG_PATH="$REPO_DIR/.cluster/kubeconfig"
PY="${DEMO_PYTHON:-$REPO_DIR/.venv/bin/python}"
NODES=${DEMO_NODES:-8}
WINDOW_IN=${DEMO_WINDOW_IN:-300}
WINDOW_FOR=${DEMO_WINDOW_FOR:-600}
PROM_PORT=${PROM_PORT:-9090}
EXPORTER_PORT=${DEMO_EXPORTER_PORT:-9400}
METRICS_PORT=${DEMO_METRICS_PORT:-8080}
export PATH="$REPO_DIR/.venv/bin:$BIN_DIR:$PATH"

log() { printf '[demo %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# A pid file's number is ours only if that process still runs our command line.
alive() { # name
  local pid_file="$STATE_DIR/$1.pid" pid
  [[ -f "$pid_file" ]] || return 1
  pid=$(<"$pid_file")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "wattcap.cli $2"
}

start() { # name, what to grep in its command line, args...
  local name=$1 marker=$2
  shift 2
  if alive "$name" "$marker"; then
    log "$name: already running (pid $(<"$STATE_DIR/$name.pid"))"
    return
  fi
  log "$name: starting"
  KUBECONFIG="$KUBECONFIG_PATH" nohup "$PY" -m wattcap.cli "$@" \
    </dev/null >>"$STATE_DIR/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/$name.pid"
}

stop() { # name, marker
  local pid i
  if ! alive "$1" "$2"; then
    rm -f "$STATE_DIR/$1.pid"
    return
  fi
  pid=$(<"$STATE_DIR/$1.pid")
  log "$1: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE_DIR/$1.pid"
}

wait_http() { # url, what
  local i
  for ((i = 0; i < 120; i++)); do
    curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null && return
    sleep 0.5
  done
  die "$2 did not come up ($1); see $STATE_DIR/"
}

policy() {
  local now start end
  now=$(date -u +%s)
  start=$(date -u -d "@$((now + WINDOW_IN))" +%Y-%m-%dT%H:%M:%SZ)
  end=$(date -u -d "@$((now + WINDOW_IN + WINDOW_FOR))" +%Y-%m-%dT%H:%M:%SZ)
  # 8 nodes x 8 GPUs, PUE 1: idle 8 x (500 + 8 x 70) = 8.5 kW. The cap fits three
  # 8-GPU jobs at the 700 W prior; the window's cap about one.
  cat <<EOF
apiVersion: wattcap.io/v1alpha1
kind: PowerPolicy
metadata:
  name: site
spec:
  capWatts: 24000
  capSchedule:
    - name: demand-response
      start: "$start"
      end: "$end"
      capWatts: 14000
  pue: 1.0
  nodeBaseWatts: 500
  gpuIdleWatts: 70
  gpuTdpWatts: 700
  safetyMargin: 0.02
  controlPeriod: 5s
  gracePeriod: 20s
  maxWait: 30m
  nodeSelector:
    type: kwok
  prometheus:
    url: http://127.0.0.1:$PROM_PORT
EOF
}

job() { # namespace name replicas gpus priority-class(- for none) preemptible class true-watts seconds
  cat <<EOF
---
apiVersion: wattcap.io/v1alpha1
kind: TrainingJob
metadata:
  name: $2
  namespace: $1
spec:
  replicas: $3
  gpusPerReplica: $4
$( [[ "$5" == - ]] || echo "  priorityClassName: $5" )
  preemptible: $6
  workloadClass: $7
  expectedDuration: ${9}s
  template:
    metadata:
      annotations:
        wattcap.io/sim-duration: ${9}s
        wattcap.io/sim-power: '{"watts": $8, "noise": 0.02}'
    spec:
      containers:
        - name: train
          image: trainer:demo
EOF
}

workload() {
  # priority classes: examples/priorityclasses.yaml (research-high 100, research-batch 10)
  job ml llm-pretrain 2 8 research-high false llm 560 1500
  job ml llm-finetune-a 1 8 research-batch true llm-ft 450 480
  job ml llm-finetune-b 1 8 research-batch true llm-ft 450 480
  job vision resnet-sweep-1 1 4 - true cv 300 300
  job vision resnet-sweep-2 1 4 - true cv 300 300
  job vision resnet-sweep-3 1 4 - true cv 300 300
  job vision eval-nightly 1 2 - false eval 250 900
  job vision distill 1 8 research-batch false cv 380 1200
}

cmd_up() {
  [[ -x "$PY" ]] || die "no $PY: run 'make deps' first"
  [[ -x "$BIN_DIR/kubectl" ]] || die "no tools in $BIN_DIR: run hack/install-tools.sh"
  "$HACK_DIR/cluster.sh" up --nodes "$NODES"
  mkdir -p "$STATE_DIR"
  kc apply --server-side --force-conflicts -f "$REPO_DIR/crds" >/dev/null
  kc apply -f "$REPO_DIR/examples/priorityclasses.yaml" >/dev/null
  kc wait --for=condition=Established --timeout=60s \
    crd/trainingjobs.wattcap.io crd/powerpolicies.wattcap.io >/dev/null
  start exporter "sim exporter" sim exporter --kubeconfig "$KUBECONFIG_PATH" \
    --port "$EXPORTER_PORT" --interval 1
  wait_http "http://127.0.0.1:$EXPORTER_PORT/metrics" "the exporter"
  PROM_PORT=$PROM_PORT PROM_EXPORTER_TARGET="127.0.0.1:$EXPORTER_PORT" \
    PROM_OPERATOR_TARGET="127.0.0.1:$METRICS_PORT" "$HACK_DIR/prometheus.sh" up
  start operator "operator" operator --metrics-port "$METRICS_PORT"
  wait_http "http://127.0.0.1:$METRICS_PORT/metrics" "the operator"
  # Created once: a second `up` keeps the window where the first one put it.
  if kc get powerpolicy site >/dev/null 2>&1; then
    log "PowerPolicy site: exists, kept"
  else
    policy | kc create -f - >/dev/null
    log "PowerPolicy site: created (demand-response window in ${WINDOW_IN}s)"
  fi
  for ns in ml vision; do
    kc get namespace "$ns" >/dev/null 2>&1 || kc create namespace "$ns" >/dev/null
  done
  workload | kc apply -f - | sed 's/^/  /' >&2
  cat <<EOF

wattcap demo is up. To watch (in another terminal):

  export KUBECONFIG=$KUBECONFIG_PATH PATH=$REPO_DIR/.venv/bin:$BIN_DIR:\$PATH
  kubectl wattcap status --hours 1  # cap now and next, draw, headroom, the plan ahead
  kubectl wattcap queue -A          # who waits, why, estimated start
  kubectl wattcap explain distill -n vision
  kubectl wattcap top -A            # measured against forecast, by namespace and class
  kubectl get tj -A -w

Prometheus: http://127.0.0.1:$PROM_PORT/graph?g0.expr=wattcap_site_power_watts%20or%20wattcap_cap_watts&g0.tab=0&g0.range_input=30m
Logs: $STATE_DIR/   Stop everything: make demo-down
EOF
}

cmd_down() {
  stop operator "operator"
  stop exporter "sim exporter"
  PROM_PORT=$PROM_PORT "$HACK_DIR/prometheus.sh" down
  if [[ "${DEMO_KEEP_CLUSTER:-0}" == 1 ]]; then
    log "control plane kept (DEMO_KEEP_CLUSTER=1)"
  else
    "$HACK_DIR/cluster.sh" down
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
