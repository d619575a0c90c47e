# SciTunnel Makefile. `make help` lists the targets.
#
# Everything builds from the Go module proxy into the git-ignored bin/: pinned tools
# (bin/<tool>-<version>), Kubernetes binaries (bin/k8s/<version>-<os>-<arch>/), image tarballs
# (bin/images/), the local cluster's state (bin/cluster/).
#
# Layout: variables and pins, then the general groups (development, build, test, images, local
# cluster, tools), then one group per part of the project (operator; Helm chart, e2e and demo;
# data plane; sFlow sidecar), each holding that part's variables and targets. A new target goes
# in the group of what it works on; `##@ Title` starts a `make help` group, and `## text` after a
# target name is its `make help` line.
#
# `make test` runs the TEST_PHASES_* lists below in order (static checks, go test, fuzz, e2e,
# benchmarks); a group adds its targets to the right list with `+=`, next to the target, e.g.
#
#   fuzz-short: ## Fuzz the sFlow decoder for a bounded time.
#   	...
#   TEST_PHASES_FUZZ += fuzz-short

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
LOCALBIN ?= $(ROOT)/bin
GOOS ?= $(shell go env GOOS)
GOARCH ?= $(shell go env GOARCH)

# Build version: stamped into the binaries (-X main.version) and used as the image tag.
VERSION ?= $(shell git -C $(ROOT) describe --tags --always --dirty 2>/dev/null || echo dev)

## Pinned versions (also in DEVELOPERS.md).
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0
# v5.8.3 cannot be installed here: it needs go >= 1.27 and a k8s.io/kube-openapi version the module
# proxy refuses (403). v5.8.2 is the newest that builds with Go 1.26.
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT_VERSION ?= v2.15.0
K8S_VERSION ?= 1.37.2
ETCD_VERSION ?= 3.6.16
COREDNS_VERSION ?= 1.15.0

## Tool binaries (versioned file names, so a version bump reinstalls).
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

## Kubernetes binaries built from source (hack/k8s-binaries.sh). envtest reads KUBEBUILDER_ASSETS.
K8S_BIN_DIR ?= $(LOCALBIN)/k8s/$(K8S_VERSION)-$(GOOS)-$(GOARCH)
export KUBEBUILDER_ASSETS := $(K8S_BIN_DIR)
K8S_BINARIES_ENV = K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) \
	COREDNS_VERSION=$(COREDNS_VERSION) K8S_BIN_DIR=$(K8S_BIN_DIR)

## Images (tarballs for `ctr images import`; tags other than latest so IfNotPresent never pulls).
# The manager fetches scitags registries over HTTPS: its image carries the build host's CAs
# (Debian's ca-certificates).
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
IMAGES_DIR ?= $(LOCALBIN)/images
IMG_TAG ?= $(VERSION)
MANAGER_IMG ?= localhost/scitunnel/manager:$(IMG_TAG)
DATAPLANE_IMG ?= localhost/scitunnel/dataplane:$(IMG_TAG)
PAUSE_IMG ?= localhost/local/pause:1
COREDNS_IMG ?= localhost/local/coredns:$(COREDNS_VERSION)
# Tests (e2e) and the chart read the image references from the environment.
export MANAGER_IMG DATAPLANE_IMG

## Local cluster (hack/local-cluster). Its kubeconfig is written to CLUSTER_KUBECONFIG.
CLUSTER_DIR ?= $(LOCALBIN)/cluster
CLUSTER_KUBECONFIG ?= $(CLUSTER_DIR)/kubeconfig
CLUSTER_ENV = K8S_BIN_DIR=$(K8S_BIN_DIR) CLUSTER_DIR=$(CLUSTER_DIR) IMAGES_DIR=$(IMAGES_DIR)

## Static, reproducible Go builds.
GO_BUILD_ENV = CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH)
GO_LDFLAGS ?= -s -w -X main.version=$(VERSION)
GO_BUILD_FLAGS ?= -trimpath -ldflags '$(GO_LDFLAGS)'

## go test: -count=1 never reuses a cached result; -p 1 runs one package's tests at a time,
## because privileged tests create network namespaces, veths and sockets that another
## package's tests must not race with. (-p also serialises compiling packages; `make vet`, run
## before it by `make test`, has already compiled the dependencies with every core.)
GO_TEST_FLAGS ?= -count=1 -p 1 -timeout 30m
# Packages `make test-go` leaves out (they have their own phase).
GO_TEST_EXCLUDE ?= /test/e2e

## `make test` phases, run in this order. The groups below append with +=.
TEST_PHASES_STATIC := verify-fmt verify-generated vet lint
TEST_PHASES_GO := test-go
TEST_PHASES_FUZZ :=
TEST_PHASES_E2E := test-cluster
# Benchmarks print their figures and ratios against the anchors of the same run; they fail only
# when what they measure breaks, never on a number.
TEST_PHASES_BENCH :=

## `make verify-generated` runs GENERATORS, then fails if GENERATED_PATHS differ from git.
## Targets that generate committed files (e.g. CRDs copied into the chart) add to both.
GENERATORS := manifests generate
GENERATED_PATHS := api config

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z0-9_.-]+:.*?##/ { printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs (config/crd/bases) and RBAC (config/rbac) from the API types and markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt over the module.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet over the module.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml: kubebuilder's linters, function length and complexity bounds).
	$(GOLANGCI_LINT) run ./...

.PHONY: lint-fix
lint-fix: $(GOLANGCI_LINT) ## Run golangci-lint and apply the fixes it can make (formatting, imports, some linters).
	$(GOLANGCI_LINT) run --fix ./...

.PHONY: verify-fmt
verify-fmt: ## Fail if a tracked or new Go file is not gofmt-ed.
	@files=$$(git ls-files --cached --others --exclude-standard -- '*.go' | xargs -r gofmt -l); \
	if [[ -n "$$files" ]]; then echo "not gofmt-ed (run make fmt):"; echo "$$files"; exit 1; fi

.PHONY: verify-generated
verify-generated: ## Fail if generated files (CRDs, RBAC, deepcopy) differ from what is committed.
	@$(MAKE) --no-print-directory $(GENERATORS)
	@if ! git diff --quiet -- $(GENERATED_PATHS); then \
		echo "generated files are stale; run 'make manifests generate' and commit:"; \
		git diff --stat -- $(GENERATED_PATHS); exit 1; fi
	@new=$$(git ls-files --others --exclude-standard -- $(GENERATED_PATHS)); \
	if [[ -n "$$new" ]]; then echo "generated files not committed:"; echo "$$new"; exit 1; fi

##@ Build

.PHONY: build
build: ## Build static bin/manager (./cmd) and bin/scitunnel (./cmd/scitunnel).
	$(GO_BUILD_ENV) go build $(GO_BUILD_FLAGS) -o $(LOCALBIN)/manager ./cmd
	$(GO_BUILD_ENV) go build $(GO_BUILD_FLAGS) -o $(LOCALBIN)/scitunnel ./cmd/scitunnel

.PHONY: run
run: manifests generate fmt vet ## Run the manager from source against the cluster in $KUBECONFIG.
	go run ./cmd

##@ Test

.PHONY: test
test: ## Everything CI runs: static checks, go test (unit, envtest, privileged), fuzz, e2e, demo, benchmarks.
	@[[ $$(id -u) != 0 ]] || hack/debian-packages.sh all
	@MAKE="$(MAKE)" hack/run-phases.sh $(TEST_PHASES_STATIC) $(TEST_PHASES_GO) $(TEST_PHASES_FUZZ) $(TEST_PHASES_E2E) $(TEST_PHASES_BENCH)

.PHONY: test-go
test-go: envtest-binaries ## go test every package but e2e: unit, envtest suites, privileged (root) tests.
	go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v -e '$(GO_TEST_EXCLUDE)')

##@ Images

.PHONY: images image-manager image-dataplane
images: image-manager image-dataplane ## Pack the manager and data-plane images into bin/images/*.tar (no base image, reproducible).

image-manager: ## Pack bin/images/manager.tar ($(MANAGER_IMG)).
	$(GO_BUILD_ENV) go build $(GO_BUILD_FLAGS) -o $(LOCALBIN)/manager ./cmd
	go run ./hack/imagepack -o $(IMAGES_DIR)/manager.tar -t $(MANAGER_IMG) \
		-ca-bundle $(CA_BUNDLE) -entrypoint /manager $(LOCALBIN)/manager=/manager

image-dataplane: ## Pack bin/images/dataplane.tar ($(DATAPLANE_IMG)).
	$(GO_BUILD_ENV) go build $(GO_BUILD_FLAGS) -o $(LOCALBIN)/scitunnel ./cmd/scitunnel
	go run ./hack/imagepack -o $(IMAGES_DIR)/dataplane.tar -t $(DATAPLANE_IMG) \
		-cap-net-raw /scitunnel -entrypoint /scitunnel $(LOCALBIN)/scitunnel=/scitunnel

.PHONY: cluster-images
cluster-images: cluster-binaries ## Pack the local cluster's own images: pause and CoreDNS.
	$(GO_BUILD_ENV) go build -trimpath -ldflags '-s -w' -o $(LOCALBIN)/pause ./hack/pause
	go run ./hack/imagepack -o $(IMAGES_DIR)/pause.tar -t $(PAUSE_IMG) \
		-entrypoint /pause $(LOCALBIN)/pause=/pause
	go run ./hack/imagepack -o $(IMAGES_DIR)/coredns.tar -t $(COREDNS_IMG) \
		-entrypoint /coredns $(K8S_BIN_DIR)/coredns=/coredns

.PHONY: docker-build
docker-build: ## Build both images with Docker from the Dockerfile (where a Docker engine exists).
	docker build --target manager --build-arg VERSION=$(VERSION) -t $(MANAGER_IMG) .
	docker build --target dataplane --build-arg VERSION=$(VERSION) -t $(DATAPLANE_IMG) .

##@ Local cluster

.PHONY: envtest-binaries
envtest-binaries: ## Build kube-apiserver and etcd for envtest into bin/k8s/ (once; ~5 min cold).
	@$(K8S_BINARIES_ENV) hack/k8s-binaries.sh envtest

.PHONY: cluster-binaries
cluster-binaries: ## Build all the local cluster's Kubernetes binaries, etcd and CoreDNS (once; ~8 min cold); bin/kubectl.
	@$(K8S_BINARIES_ENV) hack/k8s-binaries.sh cluster
	@ln -sfn $(K8S_BIN_DIR)/kubectl $(LOCALBIN)/kubectl

.PHONY: cluster-up
cluster-up: cluster-binaries cluster-images ## Start (or reuse) the local cluster, importing bin/images/*.tar; kubeconfig in bin/cluster/kubeconfig.
	@$(CLUSTER_ENV) hack/local-cluster/up

.PHONY: cluster-load-images
cluster-load-images: ## Import bin/images/*.tar into the running local cluster (after `make images`).
	@$(CLUSTER_ENV) hack/local-cluster/load-images

.PHONY: cluster-down
cluster-down: ## Tear the local cluster down and leave nothing behind.
	@$(CLUSTER_ENV) hack/local-cluster/down

.PHONY: cluster-smoke
cluster-smoke: ## Check the running local cluster: our image in a pod, dual-stack pod IPs and Service, logs, exec, DNS.
	@$(CLUSTER_ENV) DATAPLANE_IMG=$(DATAPLANE_IMG) hack/local-cluster/smoke

.PHONY: test-cluster
test-cluster: image-dataplane ## The local cluster's lifecycle: up, smoke test, down, nothing left on the host.
	@$(MAKE) --no-print-directory cluster-up || { $(MAKE) --no-print-directory cluster-down; exit 1; }
	@$(MAKE) --no-print-directory cluster-smoke || { $(MAKE) --no-print-directory cluster-down; exit 1; }
	@$(MAKE) --no-print-directory cluster-down
	@$(MAKE) --no-print-directory cluster-check-clean

.PHONY: cluster-check-clean
cluster-check-clean: ## Fail if anything of the local cluster is left on the host (run after cluster-down).
	@$(CLUSTER_ENV) hack/local-cluster/check-clean

##@ Tools

.PHONY: controller-gen helm kustomize golangci-lint tools
tools: controller-gen helm kustomize golangci-lint ## Install every pinned tool into bin/.
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into bin/.
helm: $(HELM) ## Install helm into bin/.
kustomize: $(KUSTOMIZE) ## Install kustomize into bin/.
golangci-lint: $(GOLANGCI_LINT) ## Install golangci-lint into bin/.

$(CONTROLLER_GEN):
	$(call go-install-tool,controller-gen,sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))
$(HELM):
	$(call go-install-tool,helm,helm.sh/helm/v3/cmd/helm,$(HELM_VERSION),-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION))
$(KUSTOMIZE):
	$(call go-install-tool,kustomize,sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))
$(GOLANGCI_LINT):
	$(call go-install-tool,golangci-lint,github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

# go-install-tool NAME,PACKAGE,VERSION[,LDFLAGS]: `go install` into a temporary GOBIN, move the
# binary to bin/NAME-VERSION (atomic: an interrupted install leaves nothing half-written) and
# point the bin/NAME symlink at it for interactive use.
define go-install-tool
@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
echo "installing $(2)@$(3) into $(LOCALBIN)"; \
mkdir -p $(LOCALBIN); \
GOBIN="$$tmp" GOWORK=off go install -trimpath -ldflags '-s -w $(4)' $(2)@$(3); \
mv "$$tmp/$(1)" $(LOCALBIN)/$(1)-$(3); \
ln -sfn $(1)-$(3) $(LOCALBIN)/$(1)
endef

# ---------------------------------------------------------------------------------------------
# The parts of the project: their variables, targets and test phases.

##@ Operator: API, reconcilers, envtest

.PHONY: test-envtest
test-envtest: envtest-binaries ## The operator's envtest suites: API validation table, printer columns, reconcilers.
	go test ./test/envtest/ ./controllers/ -count=1

.PHONY: bench-reconcile
bench-reconcile: envtest-binaries ## The real manager on envtest: 1,000 StreamTunnels reconciled (time, memory, API writes per tunnel), and its RSS beside 10,000 unrelated Secrets and ConfigMaps; met or MISSED against the goals.
	go test ./test/envtest/ -run '^$$' -bench '^Benchmark(Reconcile1000|UnrelatedObjects)$$' -benchtime=1x -timeout 30m
TEST_PHASES_BENCH += bench-reconcile

##@ Helm chart, end-to-end tests, demo

CHART_DIR ?= $(ROOT)/charts/scitunnel
# The chart keeps verbatim copies of what controller-gen generates (CRDs) and of config/rbac's
# roles; its templates read them, and test/helm fails when they drift from config/.
CHART_SYNC_SOURCES := config/crd/bases/*.yaml=$(CHART_DIR)/files/crds config/rbac/*role.yaml=$(CHART_DIR)/files/rbac
# The chart tests (go test ./test/helm) and the e2e suite find the pinned tools through these.
export HELM KUSTOMIZE

.PHONY: chart-sync
chart-sync: ## Copy the generated CRDs and config/rbac's roles into the chart (after make manifests).
	@for pair in $(CHART_SYNC_SOURCES); do \
		src="$${pair%%=*}"; dst="$${pair#*=}"; \
		mkdir -p "$$dst"; rm -f "$$dst"/*.yaml; cp $$src "$$dst"/; \
	done
	@echo "chart-sync: $(CHART_DIR)/files updated from config/"

# `make verify-generated` also re-syncs the chart and fails when its copies are stale.
GENERATORS += chart-sync
GENERATED_PATHS += charts

# test/helm is a plain Go package: `make test-go` runs it too, so it needs the tools.
test-go: $(HELM) $(KUSTOMIZE)

.PHONY: test-helm
test-helm: $(HELM) $(KUSTOMIZE) envtest-binaries ## Chart tests: helm lint, template per values file, schema refusals, drift from config/, helm install into envtest.
	go test ./test/helm/ -count=1 -v

# Another cluster pulls from a registry: IMAGE_REGISTRY=registry.example.org/team names the images
# `make images` packs (push the tarballs there, e.g. `crane push bin/images/manager.tar
# $MANAGER_IMG`), and test-e2e and demo install them.
ifneq ($(IMAGE_REGISTRY),)
MANAGER_IMG = $(IMAGE_REGISTRY)/scitunnel/manager:$(IMG_TAG)
DATAPLANE_IMG = $(IMAGE_REGISTRY)/scitunnel/dataplane:$(IMG_TAG)
endif

# The e2e suite and the demo use the pinned kubectl and helm.
RELEASE_TOOLS_ENV = MAKE="$(MAKE)" HELM=$(HELM) KUBECTL=$(K8S_BIN_DIR)/kubectl

.PHONY: test-e2e
test-e2e: $(HELM) cluster-binaries cluster-images ## End-to-end suite on the local cluster (or $KUBECONFIG's): helm install, data, throughput, flow labels, recovery, cleanup.
	go vet -tags e2e ./test/e2e/
	@$(RELEASE_TOOLS_ENV) test/e2e/run.sh
TEST_PHASES_E2E += test-e2e

.PHONY: demo
demo: $(HELM) cluster-binaries cluster-images ## Local cluster, operator, samples, iperf3 through the tunnel, live `kubectl get tunnels` (uses $KUBECONFIG if set).
	@$(RELEASE_TOOLS_ENV) hack/demo.sh up

.PHONY: demo-down
demo-down: ## Remove everything `make demo` made (and the local cluster, if the demo started it).
	@$(RELEASE_TOOLS_ENV) hack/demo.sh down

.PHONY: test-demo
test-demo: ## The README's `make demo` as a new user runs it, then `make demo-down` (CI).
	@DEMO_SECONDS=20 $(MAKE) --no-print-directory demo || { $(MAKE) --no-print-directory demo-down; exit 1; }
	@$(MAKE) --no-print-directory demo-down
TEST_PHASES_E2E += test-demo

##@ Data plane: tunnel proxy tests and throughput benchmark

## Flags for the benchmark driver, e.g. BENCH_TUNNEL_ARGS='-seconds 10 -streams 1,2,4'. By
## default every path is measured three times, interleaved, and the medians reported: single
## runs on a 2-core machine drift by 10% and more.
BENCH_TUNNEL_ARGS ?= -repeat 3

.PHONY: bench-tunnel
bench-tunnel: ## iperf3 through our TLS and TCP tunnel pairs vs stunnel4, haproxy, socat and direct (1 and 4 streams): Gbit/s, ratios, CPU s/Gbit, 1 KiB ping-pong latency; goals met or MISSED. Needs iperf3 stunnel4 haproxy socat.
	$(GO_BUILD_ENV) go build $(GO_BUILD_FLAGS) -o $(LOCALBIN)/scitunnel ./cmd/scitunnel
	go run ./hack/bench/tunnel -scitunnel $(LOCALBIN)/scitunnel $(BENCH_TUNNEL_ARGS)
TEST_PHASES_BENCH += bench-tunnel

.PHONY: test-dataplane
test-dataplane: ## The data plane's tests (proxy, flow-label dialer, CLI); as root they include the network-namespace wire tests.
	go test $(GO_TEST_FLAGS) ./dataplane/config/ ./dataplane/contract/ ./dataplane/proxy/... ./dataplane/firefly/ ./cmd/scitunnel/

##@ sFlow sidecar: fuzzing, decode rate, sampler cost

# Per fuzz target, as a count of executions (about 20 s each on this 2-core machine): a duration makes Go 1.26's
# fuzz coordinator race its own deadline and fail with a bare "context deadline exceeded" and no
# failing input (go.dev/issue/75804, fixed in Go 1.27); a count has no deadline to race.
SFLOW_FUZZ_TIME ?= 400000x
SFLOW_ANALYZER_FUZZ_TIME ?= 80000x
# The tunnel's throughput with the sidecar started and stopped every second within one iperf3 run of
# this length (see hack/bench/tunnel/toggle.go: separate runs drift more than the cost measured).
SFLOW_TOGGLE_TIME ?= 240s

.PHONY: fuzz-short
fuzz-short: ## Fuzz the sFlow decoder (against goflow2, the oracle) and the analyzer for a bounded time (CI).
	go test ./dataplane/telemetry/sflow -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(SFLOW_FUZZ_TIME)
	go test ./dataplane/telemetry/analyzer -run '^$$' -fuzz '^FuzzIngest$$' -fuzztime $(SFLOW_ANALYZER_FUZZ_TIME)

.PHONY: bench-sflow
bench-sflow: ## sFlow figures: decode+attribute samples/s on one core and x goflow2; sampler on/off throughput ratio, on a veth pair and through the TLS tunnel (root, iperf3).
	go test ./dataplane/telemetry/sflow -run '^$$' -bench '^BenchmarkDecodeRatio$$' -cpu 1
	go test ./dataplane/telemetry/analyzer -run '^$$' -bench '^(BenchmarkIngest|BenchmarkGoflow2Decode|BenchmarkIngestVsGoflow2)$$' -cpu 1
	go test ./dataplane/telemetry/sampler -run '^$$' -bench '^BenchmarkThroughputSamplerOnOff$$' -benchtime 1x -v
	$(GO_BUILD_ENV) go build $(GO_BUILD_FLAGS) -o $(LOCALBIN)/scitunnel ./cmd/scitunnel
	go run ./hack/bench/tunnel -scitunnel $(LOCALBIN)/scitunnel -paths '' -streams 1,4 -sampler-toggle $(SFLOW_TOGGLE_TIME)

TEST_PHASES_FUZZ += fuzz-short
TEST_PHASES_BENCH += bench-sflow

.PHONY: bench-abuse
bench-abuse: ## Floods against the proxy (UDP sources, stalled TLS handshakes, half-closed connections), the sFlow analyzer (agents, forged sources) and the manager's registry fetcher: heap and goroutines at rest and under each, and what the caps turned away (root for the forged-source flood).
	go test -run '^$$' -bench '^BenchmarkAbuse' -benchtime=1x ./dataplane/proxy/ ./dataplane/telemetry/analyzer/ ./controllers/scitagpolicy/
TEST_PHASES_BENCH += bench-abuse
