#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests and the local cluster need, from source, through the
# Go module proxy only: prebuilt downloads (setup-envtest, GitHub releases) are unreachable here.
#
#   hack/k8s-binaries.sh envtest   kube-apiserver + etcd + kubectl (what `make test` needs)
#   hack/k8s-binaries.sh cluster   envtest + kube-controller-manager kube-scheduler kubelet
#                                  kube-proxy kubectl + coredns   (what `make cluster-up` needs)
#   hack/k8s-binaries.sh print-dir the cache directory
#
# Results land in bin/k8s/<k8s version>-<os>-<arch>/ and are reused when present. Each binary is
# built into a temporary directory and renamed into place, so an interrupted build never leaves a
# half-written binary behind; a lock serialises concurrent runs (two engineers, or make -j) so the
# heavy build never runs twice at once.
#
# k8s.io/kubernetes maps its staging modules (k8s.io/api, ...) to ./staging/... with replace
# directives, which Go ignores in a dependency, so `go install k8s.io/kubernetes/cmd/x@v1.37.2`
# refuses. A throwaway module that re-states those replaces against the published staging
# versions builds every command. The throwaway modules live under bin/k8s/.build/, outside the
# project's go.mod (a directory with its own go.mod is a separate module).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
COREDNS_VERSION="${COREDNS_VERSION:-1.15.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GOOS_ARCH="$(go env GOOS)-$(go env GOARCH)"
CACHE="${K8S_BIN_DIR:-$ROOT/bin/k8s/${K8S_VERSION}-${GOOS_ARCH}}"
WORK="$ROOT/bin/k8s/.build"

# k8s.io/kubernetes v1.X.Y publishes its staging modules as v0.X.Y.
STAGING_VERSION="v0.${K8S_VERSION#*.}"
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_MINOR} -X k8s.io/component-base/version.gitTreeState=clean"

# kubectl too: the envtest suite checks `kubectl get tunnels` with the real client.
ENVTEST_KUBE=(kube-apiserver kubectl)
CLUSTER_KUBE=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# The build must not see a go.work from the outside nor the project's flags.
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { echo "k8s-binaries: $*" >&2; }

have() { [[ -x "$CACHE/$1" ]]; }

# etcd and CoreDNS have versions of their own, but share the cache directory named after the
# Kubernetes version: a stamp beside each says which version it is, so a bump rebuilds it.
have_version() { have "$1" && [[ "$(cat "$CACHE/$1.version" 2>/dev/null)" == "$2" ]]; }
stamp_version() { echo "$2" >"$CACHE/$1.version"; }

# install_from TMPDIR NAME...: atomically move freshly built binaries into the cache.
install_from() {
	local tmp="$1"
	shift
	local n
	for n in "$@"; do
		chmod 0755 "$tmp/$n"
		mv -f "$tmp/$n" "$CACHE/$n"
	done
}

# kube_module writes (once) the throwaway module that can build k8s.io/kubernetes/cmd/*.
kube_module() {
	local dir="$WORK/kubernetes-v${K8S_VERSION}"
	if [[ -f "$dir/.ready" ]]; then
		echo "$dir"
		return
	fi
	log "preparing the build module for k8s.io/kubernetes v${K8S_VERSION} (go mod download, tidy)..."
	rm -rf "$dir"
	mkdir -p "$dir"
	local gomod
	gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	[[ -f "$gomod" ]] || {
		log "could not download k8s.io/kubernetes@v${K8S_VERSION}'s go.mod"
		exit 1
	}
	{
		echo "module local/k8s-binaries"
		echo
		echo "go $(go env GOVERSION | sed 's/^go//')"
		echo
		echo "require k8s.io/kubernetes v${K8S_VERSION}"
		echo
		echo "replace ("
		grep -oE '^[[:space:]]*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" |
			awk -v v="$STAGING_VERSION" '{ print "\t" $1 " => " $1 " " v }'
		echo ")"
	} >"$dir/go.mod"
	{
		echo "//go:build tools"
		echo
		echo "// Package tools makes \`go mod tidy\` resolve every command we build."
		echo "package tools"
		echo
		echo "import ("
		local c
		for c in "${CLUSTER_KUBE[@]}"; do
			echo "	_ \"k8s.io/kubernetes/cmd/$c\""
		done
		echo ")"
	} >"$dir/tools.go"
	(cd "$dir" && go mod tidy)
	touch "$dir/.ready"
	echo "$dir"
}

# build_kube NAME...: builds the missing Kubernetes commands in one go invocation (they share
# most packages, so one build is much cheaper than one per command).
build_kube() {
	local missing=() n
	for n in "$@"; do
		have "$n" || missing+=("$n")
	done
	((${#missing[@]})) || return 0
	local dir tmp pkgs=() start=$SECONDS
	dir="$(kube_module)"
	for n in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
	log "building ${missing[*]} v${K8S_VERSION} (about 5 min the first time on 2 cores, seconds with a warm Go cache)..."
	tmp="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
	(cd "$dir" && go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$tmp/" "${pkgs[@]}")
	install_from "$tmp" "${missing[@]}"
	rm -rf "$tmp"
	log "built ${missing[*]} in $((SECONDS - start)) s"
}

build_etcd() {
	have_version etcd "$ETCD_VERSION" && return 0
	local dir="$WORK/etcd-v${ETCD_VERSION}" tmp start=$SECONDS
	log "building etcd v${ETCD_VERSION} (about 30 s the first time)..."
	if [[ ! -f "$dir/.ready" ]]; then
		rm -rf "$dir"
		mkdir -p "$dir"
		printf 'module local/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' \
			"$(go env GOVERSION | sed 's/^go//')" "$ETCD_VERSION" >"$dir/go.mod"
		printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
		(cd "$dir" && go mod tidy)
		touch "$dir/.ready"
	fi
	tmp="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
	(cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
	install_from "$tmp" etcd
	stamp_version etcd "$ETCD_VERSION"
	rm -rf "$tmp"
	log "built etcd in $((SECONDS - start)) s"
}

# build_coredns: the stock CoreDNS build links every plugin (and cloud SDKs); the local cluster
# only needs the handful below, so a tiny main with just those plugins builds fast and small.
build_coredns() {
	have_version coredns "$COREDNS_VERSION" && return 0
	local dir="$WORK/coredns-v${COREDNS_VERSION}" tmp start=$SECONDS
	local plugins=(cache errors forward health kubernetes loadbalance log loop ready reload)
	log "building coredns v${COREDNS_VERSION} with plugins ${plugins[*]} (about 1-2 min the first time)..."
	if [[ ! -f "$dir/.ready" ]]; then
		rm -rf "$dir"
		mkdir -p "$dir"
		printf 'module local/coredns\n\ngo %s\n\nrequire github.com/coredns/coredns v%s\n' \
			"$(go env GOVERSION | sed 's/^go//')" "$COREDNS_VERSION" >"$dir/go.mod"
		{
			echo "// Command coredns is CoreDNS v${COREDNS_VERSION} with only the plugins the local cluster uses."
			echo "package main"
			echo
			echo "import ("
			echo '	"github.com/coredns/coredns/coremain"'
			echo
			local p
			for p in "${plugins[@]}"; do
				echo "	_ \"github.com/coredns/coredns/plugin/$p\""
			done
			echo ")"
			echo
			echo "// Plugins run in CoreDNS's canonical order (core/dnsserver.Directives); listed but"
			echo "// unlinked plugins are simply never used by our Corefile."
			echo "func main() { coremain.Run() }"
		} >"$dir/main.go"
		(cd "$dir" && go mod tidy)
		touch "$dir/.ready"
	fi
	tmp="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
	(cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .)
	install_from "$tmp" coredns
	stamp_version coredns "$COREDNS_VERSION"
	rm -rf "$tmp"
	log "built coredns in $((SECONDS - start)) s"
}

main() {
	local what="${1:-envtest}"
	if [[ "$what" == print-dir ]]; then
		echo "$CACHE"
		return
	fi
	mkdir -p "$CACHE" "$WORK"
	# One build at a time across processes; the second waiter finds the binaries present.
	exec 9>"$ROOT/bin/k8s/.lock"
	if ! flock -n 9; then
		log "another build of the Kubernetes binaries is running; waiting for it..."
		flock 9
	fi
	# Leftovers of an interrupted build.
	rm -rf "$CACHE"/.tmp.*
	case "$what" in
	envtest)
		build_etcd
		build_kube "${ENVTEST_KUBE[@]}"
		;;
	cluster)
		build_etcd
		build_kube "${ENVTEST_KUBE[@]}" # first, so envtest users get it sooner
		build_kube "${CLUSTER_KUBE[@]}"
		build_coredns
		;;
	coredns) build_coredns ;;
	*)
		echo "usage: $0 envtest|cluster|coredns|print-dir" >&2
		exit 2
		;;
	esac
	log "ready in $CACHE"
}

main "$@"
