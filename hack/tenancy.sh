#!/usr/bin/env bash
# The chart's trust boundary on the local control plane (hack/cluster.sh): its
# ValidatingAdmissionPolicies (only wattcap starts GPU work; only wattcap
# changes the Jobs it manages) and the tenant roles aggregated into the
# built-in edit/view roles, rendered with `helm template` from charts/wattcap
# and applied with the admin kubeconfig. Nothing else of the chart is applied.
#
# Usage: hack/tenancy.sh up [--all-namespaces]   apply (idempotent)
#        hack/tenancy.sh down                    delete what `up` applied
#
# In the test control plane the operator runs with the admin kubeconfig, so
# the admin's username (kubectl auth whoami) is trusted as the operator. By
# default only namespaces labelled wattcap.io/governed=true are governed, so
# other tests' namespaces are left alone; --all-namespaces governs every
# namespace but the chart's exempt ones (the chart's default).
# Env: KUBECONFIG (default <repo>/.cluster/kubeconfig), WATTCAP_CACHE.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
BIN_DIR="${WATTCAP_CACHE:-$HOME/.cache/wattcap}/bin"
export KUBECONFIG="${KUBECONFIG:-$REPO_DIR/.cluster/kubeconfig}"
SELECTOR='app.kubernetes.io/component in (admission,tenant-rbac)'
GOVERNED='{"matchLabels":{"wattcap.io/governed":"true"}}'

kubectl_() { "$BIN_DIR/kubectl" "$@"; }

render() {
  local user
  user=$(kubectl_ auth whoami -o jsonpath='{.status.userInfo.username}')
  [[ -n "$user" ]] || { echo "tenancy: cannot tell who the admin is" >&2; exit 1; }
  "$BIN_DIR/helm" template wattcap-test "$REPO_DIR/charts/wattcap" --namespace wattcap-test \
    --set-json "admission.operatorUsers=[\"$user\"]" \
    --set-json "admission.namespaceSelector=$GOVERNED"
}

case "${1:-}" in
  up)
    [[ "${2:-}" == --all-namespaces ]] && GOVERNED='{}'
    render | kubectl_ apply -f - -l "$SELECTOR"
    ;;
  down)
    render | kubectl_ delete -f - -l "$SELECTOR" --ignore-not-found
    ;;
  *)
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
