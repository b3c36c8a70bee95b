#!/usr/bin/env bash
# What the chart's admission policies cost a tenant: the time of `kubectl apply`
# of 500 TrainingJobs, and of 500 suspended GPU-free Jobs (every rule of the
# GPU-workload policy is evaluated for them), by an impersonated tenant with
# `edit` in a governed namespace, without the policies and then with them.
# One run each; needs the local control plane (hack/cluster.sh up) with the
# CRDs applied. Leaves no policies or namespaces behind.
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR="${WATTCAP_CACHE:-$HOME/.cache/wattcap}/bin"
export KUBECONFIG="${KUBECONFIG:-$REPO_DIR/.cluster/kubeconfig}"
N=${1:-500}
k() { "$BIN_DIR/kubectl" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"; "$REPO_DIR/hack/tenancy.sh" down >/dev/null 2>&1 || true' EXIT

for ((i = 0; i < N; i++)); do
  printf -- '---\napiVersion: wattcap.io/v1alpha1\nkind: TrainingJob\nmetadata: {name: tj-%d}\nspec: {gpusPerReplica: 8, template: {spec: {containers: [{name: m, image: "t:1"}]}}}\n' "$i"
done >"$work/tjs.yaml"
for ((i = 0; i < N; i++)); do
  printf -- '---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: cpu-%d}\nspec: {suspend: true, template: {spec: {restartPolicy: Never, containers: [{name: m, image: "t:1"}]}}}\n' "$i"
done >"$work/jobs.yaml"

"$REPO_DIR/hack/tenancy.sh" up >/dev/null  # the tenant roles, in both runs
for mode in without with; do
  if [[ $mode == without ]]; then
    k delete validatingadmissionpolicybinding,validatingadmissionpolicy \
      -l app.kubernetes.io/component=admission >/dev/null
  else
    "$REPO_DIR/hack/tenancy.sh" up >/dev/null
    sleep 5  # policies take effect asynchronously
  fi
  ns=bench-admission-$mode-$RANDOM
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" wattcap.io/governed=true >/dev/null
  k create rolebinding tenant --clusterrole=edit --user=tenant-alice -n "$ns" >/dev/null
  sleep 2
  s=$(date +%s.%N); k --as=tenant-alice -n "$ns" apply -f "$work/tjs.yaml" >/dev/null; e=$(date +%s.%N)
  t1=$(awk -v a="$s" -v b="$e" 'BEGIN {printf "%.1f", b - a}')
  s=$(date +%s.%N); k --as=tenant-alice -n "$ns" apply -f "$work/jobs.yaml" >/dev/null; e=$(date +%s.%N)
  t2=$(awk -v a="$s" -v b="$e" 'BEGIN {printf "%.1f", b - a}')
  echo "$mode policies: $N TrainingJobs ${t1} s; $N suspended GPU-free Jobs ${t2} s"
  k delete namespace "$ns" --timeout=300s >/dev/null  # gone before the next run: no background load
done
