#!/usr/bin/env bash
# `make demo` / `make demo-down`: SciTunnel end to end in one command.
#
#   hack/demo.sh up     the local cluster (or the cluster of KUBECONFIG), the images, the operator
#                       (helm), the samples (a ScitagPolicy tagging an Inbound/Outbound pair),
#                       iperf3 through the tunnel as SciStream's FAQ does it (iperf3 -s on the
#                       host as the producer, iperf3 -c to the Outbound Service as the consumer),
#                       and `kubectl get tunnels` showing the live throughput per tag.
#   hack/demo.sh down   removes all of it (and the local cluster, if the demo started it).
#
# A second `up` is fast: the Kubernetes binaries, Go builds and the running cluster are reused.
# Environment: DEMO_SECONDS (iperf3 duration, default 30), DEMO_STREAMS (iperf3 -P, default 3),
# MANAGER_IMG/DATAPLANE_IMG (set by the Makefile), HELM, KUBECTL, MAKE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MAKE="${MAKE:-make}"
HELM="${HELM:-$ROOT/bin/helm}"
KUBECTL="${KUBECTL:-$ROOT/bin/kubectl}"
STATE="$ROOT/bin/demo"
DEMO_SECONDS="${DEMO_SECONDS:-30}"
DEMO_STREAMS="${DEMO_STREAMS:-3}"
RELEASE=scitunnel
RELEASE_NS=scitunnel-system
NS=default
# The local cluster's node address: pods reach the host there (hack/local-cluster/lib.sh).
NODE_IP4=10.250.0.1
PRODUCER_PORT=5074

T0=$SECONDS
step() { printf '\n\033[1m==> [%3ds] %s\033[0m\n' $((SECONDS - T0)) "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
	printf '\033[31mdemo: %s\033[0m\n' "$*" >&2
	exit 1
}
kubectl() { "$KUBECTL" "$@"; }

# Which cluster: the one KUBECONFIG names, else the local one this script brings up.
mode_local=1
if [[ -n "${KUBECONFIG:-}" && "$KUBECONFIG" != "$ROOT/bin/cluster/kubeconfig" ]]; then
	mode_local=0
fi
export KUBECONFIG="${KUBECONFIG:-$ROOT/bin/cluster/kubeconfig}"

up() {
	mkdir -p "$STATE"
	[[ $(id -u) == 0 || $mode_local == 0 ]] || die "the local cluster needs root (or set KUBECONFIG to another cluster)"
	if ((mode_local)); then
		# iperf3 and the local cluster's node runtime, from Debian, if missing.
		"$ROOT/hack/debian-packages.sh" demo || die "the demo needs these Debian packages"
	fi

	step "building the images (Go build cache: seconds on a second run)"
	"$MAKE" --no-print-directory images | sed 's/^/    /'

	if ((mode_local)); then
		if [[ -f "$KUBECONFIG" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
			step "the local cluster is up: importing the fresh images"
			"$MAKE" --no-print-directory cluster-load-images 2>&1 | sed 's/^/    /'
		else
			step "bringing up the local cluster (the first time builds Kubernetes from source: ~8 min)"
			echo local >"$STATE/started-cluster"
			"$MAKE" --no-print-directory cluster-up 2>&1 | sed 's/^/    /'
		fi
	else
		step "using the cluster of KUBECONFIG=$KUBECONFIG"
		note "its nodes must be able to run $MANAGER_IMG and $DATAPLANE_IMG (see test/e2e/README.md)"
	fi
	kubectl get nodes -o wide | sed 's/^/    /'

	step "installing the operator: helm upgrade --install $RELEASE charts/scitunnel"
	# A rebuilt image keeps its tag (the commit): the tarball's hash on the pod template makes
	# Helm roll the manager out exactly when the image changed.
	local image_hash=""
	[[ -f bin/images/manager.tar ]] && image_hash="$(sha256sum bin/images/manager.tar | cut -c1-16)"
	"$HELM" upgrade --install "$RELEASE" charts/scitunnel --namespace "$RELEASE_NS" --create-namespace \
		--set-string "manager.podAnnotations.scitunnel\.io/image-tarball=$image_hash" \
		--set image.repository="${MANAGER_IMG%:*}" --set image.tag="${MANAGER_IMG##*:}" \
		--set dataplane.image.repository="${DATAPLANE_IMG%:*}" --set dataplane.image.tag="${DATAPLANE_IMG##*:}" \
		--set manager.throughputInterval=5s --wait --timeout 3m >"$STATE/helm.out" ||
		{
			cat "$STATE/helm.out"
			kubectl -n "$RELEASE_NS" get pods -o wide
			die "helm install failed"
		}
	note "$(grep -E '^(STATUS|REVISION):' "$STATE/helm.out" | tr '\n' ' ')"

	step "the producer: iperf3 -s on the host ($NODE_IP4:$PRODUCER_PORT), reached by the Service daq-producer"
	if ((mode_local)); then
		stop_iperf_server
		iperf3 -s -B "$NODE_IP4" -p "$PRODUCER_PORT" -D -I "$STATE/iperf3.pid" --logfile "$STATE/iperf3-server.log"
		for _ in $(seq 50); do [[ -s "$STATE/iperf3.pid" ]] && break; sleep 0.1; done
		note "iperf3 server pid $(cat "$STATE/iperf3.pid")"
		# A Service without selector whose EndpointSlice is the host: the samples' Inbound end
		# forwards to daq-producer.default.svc:5074 as it would to a producer pod.
		kubectl apply --server-side -f - >/dev/null <<-EOF
			apiVersion: v1
			kind: Service
			metadata: {name: daq-producer, namespace: $NS, labels: {app.kubernetes.io/part-of: scitunnel-demo}}
			spec:
			  ports: [{name: data, port: $PRODUCER_PORT, targetPort: $PRODUCER_PORT}]
			---
			apiVersion: discovery.k8s.io/v1
			kind: EndpointSlice
			metadata:
			  name: daq-producer-host
			  namespace: $NS
			  labels: {kubernetes.io/service-name: daq-producer, app.kubernetes.io/part-of: scitunnel-demo}
			addressType: IPv4
			ports: [{name: data, port: $PRODUCER_PORT, protocol: TCP}]
			endpoints: [{addresses: ["$NODE_IP4"], conditions: {ready: true}}]
		EOF
	else
		note "(another cluster: its pods cannot reach this host, so the producer is 'scitunnel loadgen serve' in a pod)"
		producer_pod
	fi

	step "the samples: kubectl apply -k config/samples (ScitagPolicy + Inbound/Outbound pair)"
	kubectl apply -k config/samples | sed 's/^/    /'
	note "waiting for both ends to be Ready..."
	if ! kubectl -n "$NS" wait --for=condition=Ready streamtunnel/detector-inbound streamtunnel/detector-outbound --timeout=180s >/dev/null; then
		kubectl -n "$NS" get tunnels -o wide
		kubectl -n "$NS" get pods -o wide
		die "the tunnel did not become Ready (kubectl describe streamtunnel detector-inbound)"
	fi
	kubectl -n "$NS" get tunnels | sed 's/^/    /'
	# Ready means the proxy pods are; consumers reach them through the Services once kube-proxy
	# has their endpoints (a connection a moment earlier is refused).
	note "waiting for the Services' endpoints..."
	local svc ok
	for svc in detector-inbound detector-outbound; do
		ok=0
		for _ in $(seq 120); do
			# One line per EndpointSlice (one per IP family): its endpoints' ready flags.
			if kubectl -n "$NS" get endpointslices -l "kubernetes.io/service-name=$svc" \
				-o jsonpath='{range .items[*]}{.endpoints[*].conditions.ready}{"\n"}{end}' 2>/dev/null |
				awk 'NF { n++; if ($0 !~ /true/) bad++ } END { exit !(n > 0 && bad == 0) }'; then
				ok=1
				break
			fi
			sleep 0.5
		done
		((ok)) || die "the Service $svc has no ready endpoint (kubectl get endpointslices -l kubernetes.io/service-name=$svc)"
	done
	sleep 2 # kube-proxy applies endpoint changes within its one-second minimum sync period

	local outbound_ip start_client=$SECONDS
	outbound_ip="$(kubectl -n "$NS" get service detector-outbound -o jsonpath='{.spec.clusterIP}')"
	if ((mode_local)); then
		step "the consumer: iperf3 -c $outbound_ip -p 7100 -R -P $DEMO_STREAMS -t $DEMO_SECONDS (producer -> consumer through the tunnel)"
		start_client=$SECONDS
		# Bounded: a transfer that stalls fails the demo instead of hanging it.
		timeout $((DEMO_SECONDS + 60)) iperf3 -c "$outbound_ip" -p 7100 -R -P "$DEMO_STREAMS" -t "$DEMO_SECONDS" -i 5 \
			--rcv-timeout 15000 --forceflush >"$STATE/iperf3-client.log" 2>&1 &
	else
		step "the consumer: scitunnel loadgen get from a pod, through detector-outbound:7100, for $DEMO_SECONDS s"
		consumer_pod
		start_client=$SECONDS
		timeout $((DEMO_SECONDS + 60)) kubectl -n "$NS" exec deploy/demo-consumer -- /scitunnel loadgen get --connect detector-outbound:7100 \
			--duration "${DEMO_SECONDS}s" --parallel "$DEMO_STREAMS" >"$STATE/iperf3-client.log" 2>&1 &
	fi
	local client=$!
	# Live: kubectl get tunnels every 5 s while the data flows; remember whether both ends
	# showed a measured rate (the demo fails if the sidecars never reported one).
	rm -f "$STATE"/throughput-seen-*
	while kill -0 "$client" 2>/dev/null; do
		sleep 5
		printf '\n    --- kubectl get tunnels (%ds into the transfer)\n' $((SECONDS - start_client))
		kubectl -n "$NS" get tunnels | sed 's/^/    /'
		for end in inbound outbound; do
			# The THROUGHPUT column: the tunnel's own tag (traffic under other tags does not count).
			kubectl -n "$NS" get streamtunnel "detector-$end" -o jsonpath='{.status.throughputSummary}' 2>/dev/null |
				grep -Eq '[1-9]' && touch "$STATE/throughput-seen-$end"
		done
	done &
	local watcher=$!
	local rc=0
	wait "$client" || rc=$?
	kill "$watcher" 2>/dev/null || true
	wait "$watcher" 2>/dev/null || true
	echo
	sed 's/^/    /' "$STATE/iperf3-client.log" | tail -n 12
	((rc == 0)) || die "the consumer failed (exit $rc): $STATE/iperf3-client.log"
	for end in inbound outbound; do
		[[ -f "$STATE/throughput-seen-$end" ]] ||
			die "data flowed, but detector-$end never showed a measured throughput for its tag: kubectl describe streamtunnel detector-$end; kubectl logs deploy/detector-$end -c sflow"
	done

	step "kubectl get tunnels -o wide (per-tag throughput from the sFlow sidecars; flow label, connections)"
	kubectl -n "$NS" get tunnels -o wide | sed 's/^/    /'
	kubectl -n "$NS" get streamtunnel detector-inbound -o jsonpath='{range .status.throughput[*]}    {.tag}: {.bitsPerSecond} bit/s ±{.errorPercent}% ({.samples} samples, {.bytes} bytes so far){"\n"}{end}'
	cat <<-EOF

		Done in $((SECONDS - T0)) s. Try:
		  export KUBECONFIG=$KUBECONFIG PATH=$ROOT/bin:\$PATH
		  kubectl get tunnels -o wide
		  kubectl describe streamtunnel detector-inbound
		  iperf3 -c $outbound_ip -p 7100 -R -t 60 &   # then watch: kubectl get tunnels -w
		Clean up with: make demo-down
	EOF
}

# producer_pod / consumer_pod: loadgen pods for clusters whose pods cannot reach this host.
producer_pod() {
	kubectl apply --server-side -f - >/dev/null <<-EOF
		apiVersion: apps/v1
		kind: Deployment
		metadata: {name: daq-producer, namespace: $NS, labels: {app.kubernetes.io/part-of: scitunnel-demo}}
		spec:
		  selector: {matchLabels: {app: daq-producer}}
		  template:
		    metadata: {labels: {app: daq-producer}}
		    spec:
		      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
		      containers:
		      - name: loadgen
		        image: $DATAPLANE_IMG
		        args: [loadgen, serve, --listen, ":$PRODUCER_PORT"]
		        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
		---
		apiVersion: v1
		kind: Service
		metadata: {name: daq-producer, namespace: $NS, labels: {app.kubernetes.io/part-of: scitunnel-demo}}
		spec:
		  ipFamilyPolicy: PreferDualStack
		  selector: {app: daq-producer}
		  ports: [{name: data, port: $PRODUCER_PORT}]
	EOF
	kubectl -n "$NS" rollout status deployment/daq-producer --timeout=120s | sed 's/^/    /'
}

consumer_pod() {
	kubectl apply --server-side -f - >/dev/null <<-EOF
		apiVersion: apps/v1
		kind: Deployment
		metadata: {name: demo-consumer, namespace: $NS, labels: {app.kubernetes.io/part-of: scitunnel-demo}}
		spec:
		  selector: {matchLabels: {app: demo-consumer}}
		  template:
		    metadata: {labels: {app: demo-consumer}}
		    spec:
		      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
		      containers:
		      - name: loadgen
		        image: $DATAPLANE_IMG
		        args: [loadgen, serve, --listen, "127.0.0.1:9999"]
		        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
	EOF
	kubectl -n "$NS" rollout status deployment/demo-consumer --timeout=120s | sed 's/^/    /'
}

# stop_iperf_server stops the iperf3 server this script started (by its recorded PID, after
# checking it still is iperf3).
stop_iperf_server() {
	local pid
	pid="$(cat "$STATE/iperf3.pid" 2>/dev/null || true)"
	if [[ -n "$pid" && "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$(command -v iperf3)")" ]]; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$STATE/iperf3.pid"
}

down() {
	step "removing the demo"
	stop_iperf_server
	if [[ -f "$KUBECONFIG" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
		kubectl delete -k config/samples --ignore-not-found --wait=true --timeout=120s 2>&1 | sed 's/^/    /' || true
		kubectl -n "$NS" delete deployment,service,endpointslice -l app.kubernetes.io/part-of=scitunnel-demo --ignore-not-found 2>&1 | sed 's/^/    /' || true
		"$HELM" uninstall "$RELEASE" --namespace "$RELEASE_NS" --wait --timeout 2m 2>&1 | sed 's/^/    /' || true
		# The chart keeps its CRDs (and so tunnels) on uninstall; the demo made them, it removes them.
		kubectl delete crd streamtunnels.scitunnel.io scitagpolicies.scitunnel.io --ignore-not-found 2>&1 | sed 's/^/    /' || true
		kubectl delete namespace "$RELEASE_NS" --ignore-not-found --wait=true --timeout=120s 2>&1 | sed 's/^/    /' || true
	fi
	if ((mode_local)) && [[ -f "$STATE/started-cluster" ]]; then
		step "tearing down the local cluster the demo started"
		"$MAKE" --no-print-directory cluster-down 2>&1 | sed 's/^/    /'
		"$MAKE" --no-print-directory cluster-check-clean 2>&1 | sed 's/^/    /'
	fi
	rm -rf "$STATE"
	step "clean"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) die "usage: hack/demo.sh up|down" ;;
esac
