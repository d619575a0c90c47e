// Package e2e is SciTunnel's end-to-end suite: on a real cluster (the local one from
// `make cluster-up`, or any cluster KUBECONFIG points at) it installs the operator with Helm, runs
// a producer behind an Inbound StreamTunnel and a consumer in front of the paired Outbound one,
// and checks what a user would: data integrity, `kubectl get tunnels`, live per-tag
// throughput against the true byte counts, the IPv6 flow label on the wire in both directions,
// validation messages, recovery after a proxy pod dies, and clean deletion.
//
// The specs are behind the e2e build tag so `go test ./...` never runs them; `make test-e2e`
// does (test/e2e/run.sh). See README.md.
package e2e
