# Shared by up, down, check-clean, load-images and smoke: where the local cluster keeps things and
# how its processes are started and stopped. Sourced, not run.
#
# Every process is started detached with its PID recorded in ${STATE}/pids/NAME (with the
# executable it was started as), and stopped by that PID only after checking /proc/PID/exe still
# is that executable: never by name, so nothing else on the machine is ever signalled.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/hack/local-cluster"

K8S_BIN_DIR="${K8S_BIN_DIR:-$ROOT/bin/k8s/1.37.2-linux-amd64}"
STATE="${CLUSTER_DIR:-$ROOT/bin/cluster}"
IMAGES_DIR="${IMAGES_DIR:-$ROOT/bin/images}"
# Runtime state (sockets, runc and shim state) lives on /run, away from any system containerd.
RUN="${CLUSTER_RUN_DIR:-/run/scitunnel-cluster}"
# Outside ${STATE}, so they survive `down`: the last run's logs and the host's settings before `up`.
LOGS_KEEP="$ROOT/bin/cluster-logs"
HOST_BASELINE="$ROOT/bin/cluster-host-baseline"

NODE_NAME=local-node
NODE_IP4=10.250.0.1
NODE_IP6=fd00:250::1
SERVICE_CIDRS=10.96.0.0/16,fd00:96::/112
CLUSTER_CIDRS=10.244.0.0/16,fd00:244::/56
BRIDGE=localbr0
KUBE_PROXY_MODE="${KUBE_PROXY_MODE:-iptables}"
PAUSE_IMAGE="${PAUSE_IMG:-localhost/local/pause:1}"
COREDNS_IMAGE="${COREDNS_IMG:-localhost/local/coredns:1.15.0}"
CONTAINERD_SOCK="$RUN/containerd/containerd.sock"
KUBECONFIG_ADMIN="$STATE/kubeconfig"

# Host sysctls the node needs; `up` records their previous values and `down` restores them.
HOST_SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding
	net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

log() { echo "local-cluster: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

kubectl() { "$K8S_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# start NAME BINARY ARGS...: run detached (own session, so a Ctrl-C of `make` does not take the
# cluster down half-way), output to ${STATE}/logs/NAME.log, PID recorded.
start() {
	local name="$1"
	shift
	mkdir -p "$STATE/logs" "$STATE/pids"
	local exe
	exe="$(readlink -f "$(command -v "$1")")"
	setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
	echo "$! $exe" >"$STATE/pids/$name"
}

# pid_of NAME: the recorded PID if that process still runs the recorded executable, else empty.
pid_of() {
	local f="$STATE/pids/$1" pid exe
	[[ -f "$f" ]] || return 0
	read -r pid exe <"$f"
	if [[ -n "$pid" && "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]; then
		echo "$pid"
	fi
}

running() { [[ -n "$(pid_of "$1")" ]]; }

# alive PID: the process exists and is not a zombie (a zombie has exited; its parent, init
# after `up` exits, reaps it when it gets to it).
alive() {
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ "${stat:0:1}" != Z ]]
}

# stop GRACE NAME...: SIGTERM to all of them at once, then SIGKILL to those still running after
# GRACE seconds.
stop() {
	local grace="$1" name pid i
	shift
	local -A pids=()
	for name in "$@"; do
		pid="$(pid_of "$name")"
		rm -f "$STATE/pids/$name"
		[[ -n "$pid" ]] || continue
		pids[$name]=$pid
		kill -TERM "$pid" 2>/dev/null || true
	done
	local any
	for ((i = 0; i < grace * 10; i++)); do
		any=0
		for pid in "${pids[@]}"; do alive "$pid" && any=1; done
		((any)) || return 0
		sleep 0.1
	done
	for name in "${!pids[@]}"; do
		pid=${pids[$name]}
		alive "$pid" || continue
		log "$name (pid $pid) still running ${grace} s after SIGTERM: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		while alive "$pid"; do sleep 0.1; done
	done
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: poll COMMAND every 0.5 s until it succeeds.
wait_for() {
	local what="$1" timeout="$2" start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= timeout)); then
			log "timed out after ${timeout} s waiting for $what"
			return 1
		fi
		sleep 0.5
	done
}

# render TEMPLATE OUT: substitute the ${...} placeholders of a config template.
render() {
	sed -e "s|\${STATE}|$STATE|g" -e "s|\${RUN}|$RUN|g" \
		-e "s|\${NODE_IP4}|$NODE_IP4|g" -e "s|\${NODE_IP6}|$NODE_IP6|g" \
		-e "s|\${NODE_NAME}|$NODE_NAME|g" -e "s|\${RESOLV_CONF}|$RESOLV_CONF|g" \
		-e "s|\${KUBE_PROXY_MODE}|$KUBE_PROXY_MODE|g" -e "s|\${COREDNS_IMAGE}|$COREDNS_IMAGE|g" \
		-e "s|\${PAUSE_IMAGE}|$PAUSE_IMAGE|g" "$1" >"$2"
}

# Host paths created outside the state directories by components that hard-code them: the
# kubelet's device-plugin socket dir, libcni's result cache, the kubelet's pod log links, the
# shims' socket dir, network namespaces. `up` records which existed; `down` removes what the
# cluster created.
HOST_PATHS=(/var/lib/kubelet /var/lib/cni /var/log/containers /run/containerd /run/netns)

# baseline KIND NAME: the value recorded before `up` for a sysctl or path ("absent"/"present").
baseline() {
	[[ -f "$HOST_BASELINE" ]] || return 0
	awk -v k="$1" -v n="$2" '$1 == k && $2 == n { print $3 }' "$HOST_BASELINE"
}

# The node's addresses, ports, bridge and ${RUN} are host-wide, so one local cluster per host:
# ${RUN}/owner names the state directory of the clone whose cluster holds the host.
OWNER_FILE="$RUN/owner"

# other_owner: prints the state directory of another clone's cluster holding the host, if any
# (a stale record, whose state directory is gone, does not count).
other_owner() {
	local o
	o="$(cat "$OWNER_FILE" 2>/dev/null)" || return 0
	if [[ -n "$o" && "$o" != "$STATE" && -d "$o" ]]; then
		echo "$o"
	fi
}

# The order components start in; `down` stops them in its own order.
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

require_root() {
	[[ $(id -u) == 0 ]] || die "must run as root (it runs a kubelet, containerd and iptables)"
}
