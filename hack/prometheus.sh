#!/usr/bin/env bash
# A local Prometheus for wattcap: scrapes the simulated DCGM exporter
# (`wattcap sim exporter`) and the operator's own /metrics every second.
# Uses the Debian `prometheus` binary (hack/install-tools.sh installs it).
#
# Usage: hack/prometheus.sh up        start (no-op if already up; re-renders the
#                                     config and reloads it if the targets changed)
#        hack/prometheus.sh down      stop the Prometheus that `up` started (data kept)
#        hack/prometheus.sh status    up or down, URL, scrape targets (exit 1 if down)
#
# Config, TSDB, pid file and log in .prometheus/ (git-ignored; apart from .cluster/,
# which `hack/cluster.sh down` removes). Env overrides:
#   PROM_PORT (9090)            listen on 127.0.0.1:$PROM_PORT
#   PROM_EXPORTER_TARGET (127.0.0.1:9400)   PROM_OPERATOR_TARGET (127.0.0.1:8080)
#   PROM_SCRAPE_INTERVAL (1s)   PROM_RETENTION (1d)
#   PROM_STATE_DIR (.prometheus)    PROM_LOG (.prometheus/prometheus.log)
#   PROMETHEUS (the binary; default: `prometheus` on PATH)
#   PROM_EXTRA_SCRAPE_CONFIGS   a file of further scrape_configs items (YAML list
#                               items indented two spaces), appended to the config;
#                               `up` without it drops them again (the chaos suite
#                               adds a duplicate exporter target this way)
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
TEMPLATE="$HACK_DIR/prometheus/prometheus.yml.tmpl"

PORT=${PROM_PORT:-9090}
EXPORTER_TARGET=${PROM_EXPORTER_TARGET:-127.0.0.1:9400}
OPERATOR_TARGET=${PROM_OPERATOR_TARGET:-127.0.0.1:8080}
SCRAPE_INTERVAL=${PROM_SCRAPE_INTERVAL:-1s}
RETENTION=${PROM_RETENTION:-1d}
STATE_DIR=${PROM_STATE_DIR:-$REPO_DIR/.prometheus}
LOG_FILE=${PROM_LOG:-$REPO_DIR/.prometheus/prometheus.log}
CONFIG="$STATE_DIR/prometheus.yml"
DATA_DIR="$STATE_DIR/data"
PID_FILE="$STATE_DIR/prometheus.pid"
URL="http://127.0.0.1:$PORT"

log() { printf '[prometheus %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

find_prometheus() {
  local bin=${PROMETHEUS:-}
  if [[ -z "$bin" ]]; then
    bin=$(command -v prometheus 2>/dev/null) || {
      log "ERROR: prometheus is not on PATH."
      log "Install it with hack/install-tools.sh, or directly (Debian/Ubuntu, as root):"
      log "  apt-get install -y --no-install-recommends prometheus"
      log "(then stop the service the package may start: systemctl disable --now prometheus)"
      log "or point PROMETHEUS at a prometheus binary."
      exit 1
    }
  fi
  [[ -x "$bin" ]] || die "PROMETHEUS=$bin is not an executable"
  PROM_BIN=$(readlink -f "$bin")
}

# True if $1 is a live process running our binary with our config file: a
# stale pid file's number may since belong to an unrelated process.
pid_is_ours() {
  local pid=$1 exe state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)
  [[ "$state" != Z ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ "$(basename "${exe% (deleted)}")" == prometheus* ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--config.file=$CONFIG"
}

our_pid() { # prints the pid from the pid file if it is ours
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid=$(<"$PID_FILE")
  pid_is_ours "$pid" || return 1
  echo "$pid"
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null; }

render_config() { # writes the config to $1
  sed -e "s|@SCRAPE_INTERVAL@|$SCRAPE_INTERVAL|g" \
    -e "s|@EXPORTER_TARGET@|$EXPORTER_TARGET|g" \
    -e "s|@OPERATOR_TARGET@|$OPERATOR_TARGET|g" \
    -e "s|@PROMETHEUS_TARGET@|127.0.0.1:$PORT|g" \
    "$TEMPLATE" >"$1"
  if [[ -n "${PROM_EXTRA_SCRAPE_CONFIGS:-}" ]]; then
    [[ -f "$PROM_EXTRA_SCRAPE_CONFIGS" ]] || die "PROM_EXTRA_SCRAPE_CONFIGS=$PROM_EXTRA_SCRAPE_CONFIGS is not a file"
    { echo; cat "$PROM_EXTRA_SCRAPE_CONFIGS"; } >>"$1"
  fi
}

check_config() {
  local promtool
  promtool=$(command -v promtool 2>/dev/null) || return 0
  "$promtool" check config "$1" >/dev/null 2>&1 || {
    "$promtool" check config "$1" >&2 || true
    die "rendered config $1 is invalid"
  }
}

cmd_up() {
  find_prometheus
  [[ -f "$TEMPLATE" ]] || die "missing $TEMPLATE"
  mkdir -p "$STATE_DIR" "$DATA_DIR" "$(dirname "$LOG_FILE")"
  local new="$STATE_DIR/prometheus.yml.new" pid
  render_config "$new"
  check_config "$new"

  if pid=$(our_pid); then
    if cmp -s "$new" "$CONFIG"; then
      rm -f "$new"
      log "already up (pid $pid) at $URL"
    else
      mv "$new" "$CONFIG"
      log "already up (pid $pid); targets changed, reloading the config"
      curl -fsS --max-time 10 -X POST "$URL/-/reload" >/dev/null ||
        die "reload failed (see $LOG_FILE)"
    fi
    wait_ready "$pid"
    return
  fi
  rm -f "$PID_FILE"
  mv "$new" "$CONFIG"
  if http_ok "$URL/-/ready" || ! port_free "$PORT"; then
    die "127.0.0.1:$PORT is taken by a process this script did not start; set PROM_PORT"
  fi

  # Newer Prometheus (3.x) removed --web.console.*; the defaults of the Debian
  # 2.x build point at /etc/prometheus, which is fine, so none are passed.
  local args=(
    "--config.file=$CONFIG"
    "--storage.tsdb.path=$DATA_DIR"
    "--storage.tsdb.retention.time=$RETENTION"
    "--web.listen-address=127.0.0.1:$PORT"
    "--web.enable-lifecycle"
  )
  log "starting $PROM_BIN on $URL (scraping $EXPORTER_TARGET, $OPERATOR_TARGET every $SCRAPE_INTERVAL)"
  # stdin/stdout/stderr detached, so a caller capturing our output is not kept
  # waiting; 8<&-: Prometheus must not inherit (and so hold) our lock.
  nohup "$PROM_BIN" "${args[@]}" </dev/null >>"$LOG_FILE" 2>&1 8<&- &
  pid=$!
  disown "$pid" 2>/dev/null || true
  echo "$pid" >"$PID_FILE"
  wait_ready "$pid"
  log "up (pid $pid) at $URL; log: $LOG_FILE"
}

port_free() {
  python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

wait_ready() {
  local pid=$1 deadline=$((SECONDS + ${PROM_READY_TIMEOUT:-60}))
  until http_ok "$URL/-/ready"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      die "prometheus exited before it was ready (log: $LOG_FILE)"
    fi
    ((SECONDS < deadline)) || die "prometheus not ready after ${PROM_READY_TIMEOUT:-60}s (log: $LOG_FILE)"
    sleep 0.3
  done
}

cmd_down() {
  local pid i
  if ! pid=$(our_pid); then
    rm -f "$PID_FILE"
    log "not running (nothing that this script started)"
    return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_is_ours "$pid" || break
    sleep 0.2
  done
  if pid_is_ours "$pid"; then
    log "still running after 20s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "down (data kept in $DATA_DIR)"
}

cmd_status() {
  local pid
  if ! pid=$(our_pid); then
    echo "status:     down"
    return 1
  fi
  echo "status:     up (pid $pid)"
  echo "url:        $URL"
  echo "config:     $CONFIG"
  echo "log:        $LOG_FILE"
  if http_ok "$URL/-/ready"; then
    echo "ready:      yes"
    curl -fsS --max-time 3 "$URL/api/v1/targets?state=active" 2>/dev/null | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    job, url, health = t["labels"]["job"], t["scrapeUrl"], t["health"]
    err = t.get("lastError") or ""
    print(f"target:     {job:<18} {url:<36} {health} {err}")
' || true
  else
    echo "ready:      no"
  fi
}

# Concurrent up/down (parallel test sessions) must not interleave. The lock is
# this script itself, opened read-only, so no lock file is left behind.
lock() {
  exec 8<"${BASH_SOURCE[0]}"
  flock 8
}

case "${1:-}" in
  up) shift; lock; cmd_up "$@" ;;
  down) shift; lock; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
