#!/usr/bin/env bash
# A local Kubernetes control plane from real parts, for wattcap's integration
# and e2e tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# (built by hack/install-tools.sh) plus kwok-controller simulating GPU nodes
# and the lifecycle of their pods. No Docker, no downloads at run time.
#
# Usage: hack/cluster.sh up [--nodes N]   start (default 8 nodes); no-op if already up
#        hack/cluster.sh down             stop what `up` started, delete .cluster/
#        hack/cluster.sh status           up or down, endpoint, nodes (exit 1 if down)
#        hack/cluster.sh env              print `export KUBECONFIG=...` (for eval)
#        hack/cluster.sh restart COMPONENT  SIGKILL one component (etcd, kube-apiserver,
#                                         kube-scheduler, kube-controller-manager,
#                                         kwok-controller) and start it again with the
#                                         same command line, as a crash and a restart would
#
# State, certificates and logs live in <repo>/.cluster/ (git-ignored);
# the admin kubeconfig is <repo>/.cluster/kubeconfig; logs in .cluster/logs/.
# Env: WATTCAP_CACHE (tool cache, default ~/.cache/wattcap).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
STATE_DIR="$REPO_DIR/.cluster"
LOG_DIR="$STATE_DIR/logs"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
CLUSTER_NAME=wattcap
# kwokctl keeps each cluster under $KWOK_WORKDIR/clusters/<name>; point it
# inside .cluster/ so nothing lands in ~/.kwok and `down` can remove it all.
export KWOK_WORKDIR="$STATE_DIR/kwok"
CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
BIN_DIR="${WATTCAP_CACHE:-$HOME/.cache/wattcap}/bin"

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

kubectl_() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# True when our apiserver answers /readyz with the admin credentials.
apiserver_ready() {
  [[ -f "$KUBECONFIG_PATH" && -x "$BIN_DIR/kubectl" ]] &&
    kubectl_ get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# Every component kwokctl started has a pid file; "up" means all of them live.
components_running() {
  local f pid n=0
  resolve_dirs
  [[ -d "$CLUSTER_DIR/pids" ]] || return 1
  for f in "$CLUSTER_DIR"/pids/*.pid; do
    [[ -e "$f" ]] || return 1
    pid=$(<"$f")
    pid_is_ours "$pid" || return 1
    n=$((n + 1))
  done
  [[ $n -gt 0 ]]
}

# A pid from our pid files is only ours if that process runs one of the cached
# binaries from inside this cluster's work dir: after a reboot the numbers in
# stale pid files may belong to unrelated processes (or to another checkout's
# cluster), which must never be signalled.
# (Real paths are resolved once, while the directories still exist.)
BIN_REAL="" CLUSTER_REAL=""
resolve_dirs() {
  BIN_REAL=$(cd "$BIN_DIR" 2>/dev/null && pwd -P) || BIN_REAL=$BIN_DIR
  CLUSTER_REAL=$(cd "$CLUSTER_DIR" 2>/dev/null && pwd -P) || CLUSTER_REAL=$CLUSTER_DIR
}
pid_is_ours() {
  local exe cwd
  pid_alive "$1" || return 1
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
  [[ "$exe" == "$BIN_REAL"/* ]] && [[ "$cwd" == "$CLUSTER_REAL" || "$cwd" == "$CLUSTER_REAL (deleted)" ]]
}

# kill -0 also succeeds for a zombie that nobody has reaped yet; count that as dead.
pid_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z)
  [[ "$state" != Z ]]
}

endpoint() {
  awk '$1=="server:"{print $2; exit}' "$KUBECONFIG_PATH" 2>/dev/null
}

# Node objects for the simulated GPU fleet. kwok manages nodes annotated
# kwok.x-k8s.io/node=fake; the node-initialize stage keeps the capacity given
# here and marks them Ready.
node_manifests() {
  local n=$1 i
  for ((i = 0; i < n; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: gpu-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: "8"
    wattcap.io/site: local
spec: {}
status:
  capacity:
    cpu: "64"
    memory: 512Gi
    pods: "110"
    nvidia.com/gpu: "8"
  allocatable:
    cpu: "64"
    memory: 512Gi
    pods: "110"
    nvidia.com/gpu: "8"
EOF
  done
}

no_node_taints() {
  [[ -z "$(kubectl_ get nodes -l type=kwok -o jsonpath='{.items[*].spec.taints}')" ]]
}

# Waits up to $1 seconds for "$2..." to succeed.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what (see $LOG_DIR/)"
    sleep 0.5
  done
}

# Like wait_for, but returns 1 instead of dying.
wait_for_quiet() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

cmd_up() {
  local nodes=8
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --nodes) [[ $# -ge 2 ]] || die "--nodes needs a value"; nodes=$2; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      *) die "up: unknown argument: $1" ;;
    esac
  done
  [[ "$nodes" =~ ^[0-9]+$ ]] || die "--nodes must be a non-negative integer, got '$nodes'"

  if components_running && apiserver_ready; then
    log "already up at $(endpoint) with $(kubectl_ get nodes -l type=kwok --no-headers 2>/dev/null | wc -l) kwok nodes; nothing to do (use 'down' first to change --nodes)"
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    return 0
  fi
  if [[ -d "$CLUSTER_DIR" ]]; then
    # Half-started or left over from a reboot: start clean rather than guess.
    # (Only our own part of .cluster/ goes; other tools may keep files there.)
    log "found a stale cluster in $CLUSTER_DIR; cleaning it up first"
    stop_cluster
  fi

  local t0=$SECONDS
  # kwokctl treats binary paths as URLs (file paths are linked, http(s) are
  # downloaded), and in a URL '#' starts a fragment.
  [[ "$STATE_DIR$BIN_DIR" != *'#'* ]] || die "'#' in $STATE_DIR or $BIN_DIR breaks kwokctl; move the repo or set WATTCAP_CACHE"

  mkdir -p "$LOG_DIR"
  "$HACK_DIR/install-tools.sh" 2> >(tee -a "$LOG_DIR/install-tools.log" >&2) >/dev/null
  local t_tools=$SECONDS

  local configs=(--config "$HACK_DIR/kwok/kwokctl.yaml") f
  for f in "$HACK_DIR"/kwok/*.yaml; do
    [[ "$f" == */kwokctl.yaml ]] || configs+=(--config "$f")
  done

  log "starting control plane (logs: $LOG_DIR)"
  # 9<&-: the daemons kwokctl forks must not inherit our lock's descriptor,
  # or they would hold the lock for as long as the cluster runs.
  # --kubeconfig "": do not touch ~/.kube/config (or $KUBECONFIG); we hand out
  # the cluster's own admin kubeconfig instead. Every binary is a local path,
  # so kwokctl only links them into its work dir and downloads nothing.
  if ! "$BIN_DIR/kwokctl" --name "$CLUSTER_NAME" "${configs[@]}" create cluster \
      --runtime binary \
      --kubeconfig "" \
      --etcd-binary "$BIN_DIR/etcd" \
      --kube-apiserver-binary "$BIN_DIR/kube-apiserver" \
      --kube-controller-manager-binary "$BIN_DIR/kube-controller-manager" \
      --kube-scheduler-binary "$BIN_DIR/kube-scheduler" \
      --kwok-controller-binary "$BIN_DIR/kwok" \
      --wait 2m --timeout 3m \
      >>"$LOG_DIR/kwokctl.log" 2>&1 9<&-; then
    tail -n 20 "$LOG_DIR/kwokctl.log" >&2 || true
    die "kwokctl create cluster failed; see $LOG_DIR/kwokctl.log and $CLUSTER_DIR/logs/"
  fi
  # Component logs stay where kwokctl writes them; link them next to ours.
  for f in "$CLUSTER_DIR"/logs/*.log; do
    [[ -e "$f" ]] && ln -sfn "$f" "$LOG_DIR/$(basename "$f")"
  done
  cp "$CLUSTER_DIR/kubeconfig.yaml" "$KUBECONFIG_PATH"
  chmod 600 "$KUBECONFIG_PATH"

  wait_for 120 "kube-apiserver /readyz" apiserver_ready
  # Pods cannot be created in a namespace until the controller-manager has made
  # its default ServiceAccount (ServiceAccount admission), so tests that run
  # right after `up` would otherwise race it.
  wait_for 120 "the default ServiceAccount" kubectl_ -n default get serviceaccount default
  local t_cp=$SECONDS

  if [[ $nodes -gt 0 ]]; then
    log "creating $nodes kwok GPU nodes"
    node_manifests "$nodes" | kubectl_ apply -f - >>"$LOG_DIR/kwokctl.log"
    # kwok marks nodes Ready a few per second on 2 cores: the waits grow with
    # the fleet (1,000 nodes: 420 s and 160 s) and stay as they were for tests.
    kubectl_ wait --for=condition=Ready node -l type=kwok --timeout="$((120 + nodes * 3 / 10))s" \
      >>"$LOG_DIR/kwokctl.log" || die "kwok nodes did not become Ready; see $LOG_DIR/kwok-controller.log"
    # The node lifecycle controller taints a node not-ready until it has seen
    # it Ready; wait for that taint to go so the first test pods schedule at once.
    wait_for "$((60 + nodes / 10))" "the not-ready taints to clear" no_node_taints
  fi

  log "up in $((SECONDS - t0))s (tools $((t_tools - t0))s, control plane $((t_cp - t_tools))s, nodes $((SECONDS - t_cp))s): $(endpoint), $nodes nodes"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

# Stops the processes of this checkout's cluster and deletes its kwokctl state
# and kubeconfig.
stop_cluster() {
  local pids=() f pid
  resolve_dirs
  # Remember exactly which processes kwokctl started, to make sure they are gone
  # afterwards without touching anything else on the machine.
  if [[ -d "$CLUSTER_DIR/pids" ]]; then
    for f in "$CLUSTER_DIR"/pids/*.pid; do
      [[ -e "$f" ]] || continue
      pid=$(<"$f")
      if pid_is_ours "$pid"; then
        pids+=("$pid")
      else
        # Stale: drop it so that kwokctl does not kill whatever has this pid now.
        rm -f "$f"
      fi
    done
  fi
  if [[ -d "$CLUSTER_DIR" ]]; then
    if [[ -x "$BIN_DIR/kwokctl" ]]; then
      log "stopping cluster $CLUSTER_NAME"
      mkdir -p "$LOG_DIR"
      # (delete rejects an empty --kubeconfig; it only removes its context
      # from our own copy, which goes away with .cluster/ anyway.)
      "$BIN_DIR/kwokctl" --name "$CLUSTER_NAME" delete cluster --kubeconfig "$KUBECONFIG_PATH" >>"$LOG_DIR/kwokctl.log" 2>&1 9<&- ||
        log "kwokctl delete cluster failed; stopping by pid files"
    fi
  fi
  # Whatever kwokctl left running dies the way kwokctl kills too: SIGKILL. The
  # cluster's data is deleted next, so there is nothing to shut down
  # gracefully (and a TERMed kube-apiserver waits a long time for its etcd).
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while pid_is_ours "$pid" && ((SECONDS < deadline)); do
      kill -9 "$pid" 2>/dev/null || true
      sleep 0.1
    done
    if pid_is_ours "$pid"; then log "WARNING: pid $pid survived SIGKILL"; fi
  done
  rm -rf "$KWOK_WORKDIR" "$KUBECONFIG_PATH"
}

cmd_down() {
  stop_cluster
  if [[ -d "$STATE_DIR" ]]; then
    rm -rf "$STATE_DIR"
    log "down: removed $STATE_DIR"
  else
    log "down: nothing to do"
  fi
}

cmd_status() {
  if components_running && apiserver_ready; then
    echo "status:     up"
    echo "endpoint:   $(endpoint)"
    echo "kubeconfig: $KUBECONFIG_PATH"
    # Ports kwokctl picked for each component, from its saved configuration.
    if [[ -f "$CLUSTER_DIR/kwok.yaml" ]]; then
      echo "ports:      $(awk '/^  [a-zA-Z]*Port: [0-9]+$/ {sub(":","",$1); printf "%s=%s ", $1, $2}' "$CLUSTER_DIR/kwok.yaml")"
    fi
    echo "nodes:"
    kubectl_ get nodes -L nvidia.com/gpu.product -o wide 2>&1 | sed 's/^/  /'
    return 0
  fi
  if [[ -d "$CLUSTER_DIR" ]]; then
    echo "status:     broken (state in $STATE_DIR, but not all components are running; try 'down' then 'up')"
  else
    echo "status:     down"
  fi
  return 1
}

# A crash and a restart of one component, for the chaos suite: the process is
# SIGKILLed (no graceful shutdown, as on an OOM kill or a lost node) and started
# again from its own command line, working directory and log file, so nothing
# about how kwokctl runs it changes. Waits until the API server answers again.
cmd_restart() {
  local comp=${1:-} pidf pid cwd logf args=()
  [[ -n "$comp" ]] || die "restart: which component? (e.g. etcd, kube-apiserver)"
  resolve_dirs
  pidf="$CLUSTER_DIR/pids/$comp.pid"
  [[ -f "$pidf" ]] || die "restart: no component '$comp' (no $pidf)"
  pid=$(<"$pidf")
  pid_is_ours "$pid" || die "restart: $comp (pid $pid) is not running"
  mapfile -d '' args <"/proc/$pid/cmdline"
  cwd=$(readlink "/proc/$pid/cwd")
  logf=$(readlink "/proc/$pid/fd/1" 2>/dev/null) || logf="$LOG_DIR/$comp.restarted.log"
  [[ "$logf" == /* ]] || logf="$LOG_DIR/$comp.restarted.log"
  log "restart $comp: SIGKILL pid $pid"
  kill -9 "$pid"
  local deadline=$((SECONDS + 10))
  while pid_alive "$pid"; do
    ((SECONDS < deadline)) || die "restart: $comp (pid $pid) survived SIGKILL"
    sleep 0.1
  done
  # The killed server's accepted connections linger in FIN_WAIT until their
  # clients close them (up to tcp_fin_timeout, 60 s), and until then its port
  # cannot be bound again ("address already in use"), SO_REUSEADDR or not; so
  # a new process that exits at once is started again, until the deadline.
  deadline=$((SECONDS + 180))
  while :; do
    # setsid: the new process leaves our session, like the one kwokctl started;
    # 9<&-: it must not hold the up/down lock.
    (cd "$cwd" && exec setsid "${args[@]}" </dev/null >>"$logf" 2>&1 9<&-) &
    pid=$!
    echo "$pid" >"$pidf"
    until apiserver_ready; do
      pid_alive "$pid" || break
      if ((SECONDS >= deadline)); then
        tail -n 40 "$logf" >&2 || true
        die "timed out after 180s waiting for the API server after restarting $comp"
      fi
      sleep 0.5
    done
    pid_alive "$pid" && break
    ((SECONDS < deadline)) || die "restart: $comp kept exiting at start for 180s (see $logf)"
    log "restart $comp: pid $pid exited at start (port still held?); starting it again"
    sleep 2
  done
  log "restart $comp: running again as pid $pid"
}

# up/down from several test sessions at once must not interleave. The lock is
# this script itself (opened read-only), so no lock file is left behind, and
# it is per checkout, like .cluster/.
lock() {
  exec 9<"${BASH_SOURCE[0]}"
  if ! flock -n 9; then
    log "another cluster.sh up/down is running in this checkout; waiting for it"
    flock 9
  fi
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up|down|restart) lock ;;
  esac
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart) cmd_restart "$@" ;;
    env) echo "export KUBECONFIG=$KUBECONFIG_PATH" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
