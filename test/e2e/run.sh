#!/usr/bin/env bash
# `make test-e2e`: the end-to-end suite (test/e2e, build tag e2e).
#
# Without KUBECONFIG: builds the images, brings up the local cluster (hack/local-cluster, which
# imports them), runs the suite, then tears the cluster down and checks that nothing is left on
# the host. A cluster that was already up is reused and left up.
# With KUBECONFIG: runs the suite against that cluster; MANAGER_IMG and DATAPLANE_IMG must be
# pullable there or loaded into its nodes (see test/e2e/README.md).
#
# Environment: E2E_KEEP=1 leaves the operator and test namespace installed; E2E_KEEP_CLUSTER=1
# leaves a cluster this script started running; GINKGO_ARGS adds ginkgo flags (e.g.
# "-ginkgo.focus=flow label").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MAKE="${MAKE:-make}"
T0=$SECONDS
say() { echo "e2e: [$((SECONDS - T0))s] $*" >&2; }
declare -a TIMINGS=()
timed() {
	local what="$1" t=$SECONDS
	shift
	"$@"
	TIMINGS+=("$(printf '%-40s %5d s' "$what" $((SECONDS - t)))")
}

started_cluster=0
teardown() {
	local rc=$?
	if ((started_cluster)) && [[ "${E2E_KEEP_CLUSTER:-0}" != 1 ]]; then
		say "tearing the local cluster down"
		timed "local cluster down" "$MAKE" --no-print-directory cluster-down || rc=1
		"$MAKE" --no-print-directory cluster-check-clean || rc=1
	fi
	echo
	echo "==== e2e timings"
	local t
	for t in "${TIMINGS[@]}"; do echo "  $t"; done
	printf '  %-40s %5d s (exit %d)\n' total $((SECONDS - T0)) "$rc"
	exit "$rc"
}
trap teardown EXIT

if [[ -n "${KUBECONFIG:-}" ]]; then
	say "testing the cluster of KUBECONFIG=$KUBECONFIG with $MANAGER_IMG and $DATAPLANE_IMG"
else
	export KUBECONFIG="$ROOT/bin/cluster/kubeconfig"
	timed "images (make images)" "$MAKE" --no-print-directory images
	if [[ -f "$KUBECONFIG" ]] && "$KUBECTL" get --raw /readyz >/dev/null 2>&1; then
		say "the local cluster is already up: reusing it (and leaving it up)"
		timed "image import (make cluster-load-images)" "$MAKE" --no-print-directory cluster-load-images
	else
		started_cluster=1 # set first: a cluster-up that fails half-way is torn down too
		timed "local cluster up (make cluster-up)" "$MAKE" --no-print-directory cluster-up
	fi
fi

say "running the suite"
# shellcheck disable=SC2086 # GINKGO_ARGS is a list of flags
timed "e2e suite (go test -tags e2e)" go test -tags e2e ./test/e2e/ -count=1 -timeout 30m -v \
	-ginkgo.v -ginkgo.show-node-events ${GINKGO_ARGS:-}
