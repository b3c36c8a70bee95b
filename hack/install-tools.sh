#!/usr/bin/env bash
# Builds (once) and caches everything the local control plane needs:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (hack/tools)
#   etcd                                                             (hack/tools/etcd)
#   kwok, kwokctl, helm                                              (go install, pinned)
# and installs Prometheus from Debian if it is not on PATH.
#
# Binaries land in ${WATTCAP_CACHE:-$HOME/.cache/wattcap}/bin. A stamp file
# records what they were built from; when it matches, the Go work is skipped,
# so a warm run takes a second or two. GOMODCACHE/GOCACHE stay at Go's
# defaults (under $HOME) so a rebuild after a version bump is incremental.
#
# Usage: hack/install-tools.sh [--force]     (--force ignores the stamp)
# Prints the bin directory's path as its last line on stdout; everything else
# goes to stderr, so callers can do  BIN=$(hack/install-tools.sh | tail -n1).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS_DIR="$HACK_DIR/tools"
CACHE_DIR="${WATTCAP_CACHE:-$HOME/.cache/wattcap}"
BIN_DIR="$CACHE_DIR/bin"
STAMP="$BIN_DIR/.stamp"

# Pins that are not expressed in a go.mod. The Kubernetes and etcd pins live in
# hack/tools/go.mod and hack/tools/etcd/go.mod (bump them there, then run
# `go mod tidy` in that directory).
KWOK_VERSION=v0.8.0   # v0.8.0 is the newest release that builds with go 1.26
HELM_VERSION=v3.22.0
# helm's release build stamps the Kubernetes version it was compiled against
# (its client-go minor) into `helm template`/`helm lint`; v3.22.0 uses client-go v0.37.
HELM_K8S_MINOR=37

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-tools.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[install-tools %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs "$@" and logs how long it took; the timings are the point of the output.
timed() {
  local what=$1; shift
  local t0=$SECONDS
  "$@"
  log "$what: $((SECONDS - t0))s"
}

mod_version() { # go.mod-file module -> pinned version, read without invoking go
  awk -v m="$2" '($1=="require" && $2==m){print $3; exit} ($1==m && $2 ~ /^v/){print $2; exit}' "$1"
}

KUBE_VERSION=$(mod_version "$TOOLS_DIR/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(mod_version "$TOOLS_DIR/etcd/go.mod" go.etcd.io/etcd/server/v3)
[[ -n "$KUBE_VERSION" ]] || die "no k8s.io/kubernetes pin in $TOOLS_DIR/go.mod"
[[ -n "$ETCD_VERSION" ]] || die "no go.etcd.io/etcd/server/v3 pin in $TOOLS_DIR/etcd/go.mod"

command -v go >/dev/null || die "go is not on PATH (need go >= 1.26)"
# Never let a dependency's go/toolchain line make the go command fetch a
# different toolchain: the build must use the Go that is installed here.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# Two cores: more parallel compiles only add memory pressure. -mod=readonly
# makes a stale go.sum fail loudly instead of silently re-resolving.
BUILD_GOFLAGS="-p=2 -buildvcs=false -trimpath"
KUBE_TAGS="selinux,notest,grpcnotrace"
KUBE_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINS=("${KUBE_BINS[@]}" etcd kwok kwokctl helm)

stamp_text() {
  # Everything the binaries depend on: pins, build flags, the module files
  # (which carry the replaces and checksums) and the Go release.
  {
    echo "kube=$KUBE_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION helm=$HELM_VERSION/$HELM_K8S_MINOR"
    echo "flags=$BUILD_GOFLAGS tags=$KUBE_TAGS ldflags=$KUBE_LDFLAGS"
    go env GOVERSION GOOS GOARCH
    cat "$TOOLS_DIR/go.mod" "$TOOLS_DIR/go.sum" "$TOOLS_DIR/etcd/go.mod" "$TOOLS_DIR/etcd/go.sum" "$TOOLS_DIR/etcd/main.go"
  } | sha256sum | cut -d' ' -f1
}

go_tools_present() {
  local b
  for b in "${ALL_BINS[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

build_go_tools() {
  mkdir -p "$BIN_DIR"
  # Build into a scratch dir and move into place at the end, so an interrupted
  # build never leaves a half-written binary next to a valid stamp.
  local stage
  stage=$(mktemp -d "$CACHE_DIR/.build.XXXXXX")
  # shellcheck disable=SC2064  # expand $stage now: it is local to this function
  trap "rm -rf '$stage'" EXIT

  log "building Kubernetes $KUBE_VERSION (${KUBE_BINS[*]}); a cold build takes tens of minutes on 2 cores"
  local pkgs=() b
  for b in "${KUBE_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  # One `go build` for all four shares the compile of their common packages.
  (cd "$TOOLS_DIR" && timed "kubernetes build" \
    env GOFLAGS="$BUILD_GOFLAGS -mod=readonly" go build -tags "$KUBE_TAGS" -ldflags "$KUBE_LDFLAGS" -o "$stage/" "${pkgs[@]}")

  log "building etcd $ETCD_VERSION"
  (cd "$TOOLS_DIR/etcd" && timed "etcd build" \
    env GOFLAGS="$BUILD_GOFLAGS -mod=readonly" go build -ldflags "-s -w" -o "$stage/etcd" .)

  # kwok and helm have no local replaces, so `go install mod@version` works and
  # verifies their go.sum against the checksum database.
  log "building kwok, kwokctl $KWOK_VERSION"
  timed "kwok build" env GOBIN="$stage" GOFLAGS="$BUILD_GOFLAGS" go install -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"

  log "building helm $HELM_VERSION"
  timed "helm build" env GOBIN="$stage" GOFLAGS="$BUILD_GOFLAGS" go install -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

  for b in "${ALL_BINS[@]}"; do mv -f "$stage/$b" "$BIN_DIR/$b"; done
  rm -rf "$stage"
  trap - EXIT
}

install_prometheus() {
  if command -v prometheus >/dev/null; then
    log "prometheus: already on PATH ($(command -v prometheus)), skipping"
    return
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "prometheus is missing and installing it needs root (or sudo)"
    sudo=(sudo)
  fi
  # The Debian package starts a prometheus daemon from its postinst. Tests start
  # their own Prometheus with their own config, so forbid service starts for the
  # duration of the install (policy-rc.d exit 101 = "action forbidden"), unless
  # the image already ships such a policy.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 0755 "$policy"
    added_policy=1
  fi
  log "prometheus: installing the Debian package"
  local rc=0
  timed "prometheus apt install" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus' >&2 || rc=$?
  if [[ $added_policy -eq 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi
  [[ $rc -eq 0 ]] || die "apt-get install prometheus failed (rc=$rc)"
  # Belt and braces: if an init system started it anyway, stop that service
  # (it is the distro's unit, not a process a test started).
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    log "prometheus: stopping and disabling the service the package started"
    "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]] && "${sudo[@]}" /etc/init.d/prometheus status >/dev/null 2>&1; then
    "${sudo[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
}

main() {
  local t0=$SECONDS want
  mkdir -p "$BIN_DIR"
  # Test sessions may call this (via cluster.sh up) concurrently, and checkouts
  # share the cache: one builder at a time, the others then see a fresh stamp.
  exec 9>"$CACHE_DIR/.install.lock"
  if ! flock -n 9; then
    log "another install-tools.sh is running; waiting for it"
    flock 9
  fi
  want=$(stamp_text)
  if [[ $FORCE -eq 0 ]] && go_tools_present && [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$want" ]]; then
    log "Go tools up to date in $BIN_DIR (kube $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION)"
  else
    rm -f "$STAMP"
    timed "Go tools total" build_go_tools
    echo "$want" > "$STAMP"
    log "built into $BIN_DIR: $(cd "$BIN_DIR" && du -ch "${ALL_BINS[@]}" | tail -n1 | cut -f1) in total"
  fi
  install_prometheus
  log "versions: $("$BIN_DIR/kubectl" version --client 2>/dev/null | head -n1); etcd $("$BIN_DIR/etcd" --version | awk '/etcd Version/{print $3}'); $("$BIN_DIR/kwokctl" --version 2>&1 | head -n1); helm $("$BIN_DIR/helm" version --short); $(prometheus --version 2>&1 | head -n1)"
  log "done in $((SECONDS - t0))s"
  echo "$BIN_DIR"
}

main
