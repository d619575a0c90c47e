package envtest_test

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

// The rules that keep a shared cluster safe (issue 11): specs the API server used to accept
// that crash-looped the proxy pod, failed only when the operator applied a child object, or
// were silently ignored. validation_test.go feeds these entries to its tables.

const udpInbound = `
role: Inbound
protocol: UDP
udpTransport: Plain
`

// remoteOutbound is an Outbound end with a remote endpoint; add the endpoint's other fields.
const remoteOutbound = `
role: Outbound
outbound:
  endpoint:
    address: in.example.org
    bundleSecretRef: {name: b}
`

// podContractTunnelEntries: listener ports the pod's own endpoints use (dataplane/contract).
var podContractTunnelEntries = []TableEntry{
	Entry("Inbound listener on the admin port 9090", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100, 9090]}`,
		"spec.inbound.listenPorts", "must not include 9090 or 9091", "admin (9090)"),
	Entry("Inbound listener on the analyzer port 9091", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [9091]}`,
		"spec.inbound.listenPorts", "must not include 9090 or 9091", "analyzer (9091)"),
	Entry("Inbound port range covering 9090", `
role: Inbound
inbound: {producers: ["p:5000"], listenPortRange: {first: 9080, last: 9095}}`,
		"spec.inbound.listenPortRange", "must not cover 9090 or 9091"),
	Entry("Inbound port range of just 9091", `
role: Inbound
inbound: {producers: ["p:5000"], listenPortRange: {first: 9091, last: 9091}}`,
		"spec.inbound.listenPortRange", "must not cover 9090 or 9091"),
	Entry("Outbound local port 9090", validOutbound+`  listenPorts: [9090]`,
		"spec.outbound.listenPorts", "must not include 9090 or 9091"),
	Entry("Outbound local port range ending on 9090", validOutbound+`  listenPortRange: {first: 9085, last: 9090}`,
		"spec.outbound.listenPortRange", "must not cover 9090 or 9091"),
	Entry("Outbound mirroring a remote port 9091 locally", `
role: Outbound
outbound:
  endpoint: {address: in.example.org, ports: [5100, 9091], bundleSecretRef: {name: b}}`,
		"spec.outbound.endpoint.ports", "includes 9090 or 9091", "set spec.outbound.listenPorts"),
	Entry("UDP Inbound listener on the sFlow port 6343", udpInbound+`
inbound: {producers: ["p:5000"], listenPorts: [6343]}`,
		"spec.inbound.listenPorts", "must not include 6343 with protocol UDP"),
	Entry("UDP-over-TLS Inbound listener on 6343 (its Outbound ends mirror it as UDP)", `
role: Inbound
protocol: UDP
inbound: {producers: ["p:5000"], listenPorts: [6343]}`,
		"spec.inbound.listenPorts", "must not include 6343 with protocol UDP"),
	Entry("UDP Inbound port range covering 6343", udpInbound+`
inbound: {producers: ["p:5000"], listenPortRange: {first: 6340, last: 6350}}`,
		"spec.inbound.listenPortRange", "must not cover 6343 with protocol UDP"),
	Entry("UDP Outbound local port 6343", validOutbound+`  listenPorts: [6343]
protocol: UDP`,
		"spec.outbound.listenPorts", "must not include 6343 with protocol UDP"),
	Entry("UDP Outbound local port range covering 6343", validOutbound+`  listenPortRange: {first: 6343, last: 6344}
protocol: UDP`,
		"spec.outbound.listenPortRange", "must not cover 6343 with protocol UDP"),
	Entry("UDP Outbound mirroring a remote port 6343 locally", remoteOutbound+`    ports: [6343]
protocol: UDP`,
		"spec.outbound.endpoint.ports", "includes 6343", "set spec.outbound.listenPorts"),
}

// podTunnelEntries: what goes into the proxy pod and its Service.
var podTunnelEntries = []TableEntry{
	Entry("idleTimeout of 1ms", validInbound+`idleTimeout: 1ms`,
		"spec.idleTimeout", "between 1s and 168h"),
	Entry("idleTimeout of 0s", validInbound+`idleTimeout: 0s`,
		"spec.idleTimeout", "between 1s and 168h", "unset it"),
	Entry("idleTimeout beyond a week", validInbound+`idleTimeout: 200h`,
		"spec.idleTimeout", "between 1s and 168h"),
	Entry("pod label key with a space", validInbound+`pod: {labels: {"my team": daq}}`,
		"spec.pod.labels", "key my team is not a label key"),
	Entry("pod label key with two slashes", validInbound+`pod: {labels: {"a/b/c": daq}}`,
		"spec.pod.labels", "key a/b/c is not a label key"),
	Entry("pod label key with an invalid prefix", validInbound+`pod: {labels: {"Example_Org/team": daq}}`,
		"spec.pod.labels", "is not a label key"),
	Entry("pod label value with a space", validInbound+`pod: {labels: {team: "data acquisition"}}`,
		"spec.pod.labels[team]", "must be a label value"),
	Entry("pod label value of 64 characters", validInbound+`pod: {labels: {team: `+strings.Repeat("d", 64)+`}}`,
		"spec.pod.labels.team", "may not be more than 63 bytes"),
	Entry("pod annotation key with a space", validInbound+`pod: {annotations: {"prometheus.io/ scrape": "true"}}`,
		"spec.pod.annotations", "is not a qualified name"),
	Entry("pod annotation key ending in a dash", validInbound+`pod: {annotations: {"scrape-": "true"}}`,
		"spec.pod.annotations", "key scrape- is not a qualified name"),
	Entry("Service annotation key with a space", validInbound+`exposure: {annotations: {"metallb.universe.tf/address pool": dtn}}`,
		"spec.exposure.annotations", "key metallb.universe.tf/address pool is not a qualified name"),
	Entry("Service annotation key with an empty prefix", validInbound+`exposure: {annotations: {"/pool": dtn}}`,
		"spec.exposure.annotations", "key /pool is not a qualified name"),
	Entry("nodeSelector key with a space", validInbound+`pod: {nodeSelector: {"dtn node": "true"}}`,
		"spec.pod.nodeSelector", "key dtn node is not a label key"),
	Entry("nodeSelector value with a slash", validInbound+`pod: {nodeSelector: {site: "a/b"}}`,
		"spec.pod.nodeSelector[site]", "must be a label value"),
	Entry("priorityClassName with upper case", validInbound+`pod: {priorityClassName: DTN-Critical}`,
		"spec.pod.priorityClassName", "must be a PriorityClass name"),
	Entry("proxy CPU limit below its request", validInbound+`pod: {resources: {requests: {cpu: "2"}, limits: {cpu: 500m}}}`,
		"spec.pod.resources.limits", "spec.pod.resources.limits.cpu must not be below its request"),
	Entry("proxy memory limit below its request", validInbound+`pod: {resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}`,
		"spec.pod.resources.limits", "limits.memory must not be below its request"),
	Entry("proxy CPU limit below an integer request", validInbound+`pod: {resources: {requests: {cpu: 1}, limits: {cpu: 999m}}}`,
		"spec.pod.resources.limits", "limits.cpu must not be below its request"),
	Entry("proxy ephemeral-storage limit below its request", validInbound+`pod: {resources: {requests: {ephemeral-storage: 1G}, limits: {ephemeral-storage: 1Mi}}}`,
		"spec.pod.resources.limits", "limits.ephemeral-storage must not be below its request"),
	Entry("sidecar memory limit below its request", validInbound+`pod: {sidecarResources: {requests: {memory: 256Mi}, limits: {memory: 64Mi}}}`,
		"spec.pod.sidecarResources.limits", "spec.pod.sidecarResources.limits.memory must not be below its request"),
	Entry("loadBalancerClass on the default ClusterIP Service", validInbound+`exposure: {loadBalancerClass: example.org/dtn-lb}`,
		"spec.exposure.loadBalancerClass", "applies only to type LoadBalancer"),
	Entry("loadBalancerClass on a NodePort Service", validInbound+`exposure: {type: NodePort, loadBalancerClass: example.org/dtn-lb}`,
		"spec.exposure.loadBalancerClass", "applies only to type LoadBalancer"),
	Entry("loadBalancerClass that is not a qualified name", validInbound+`exposure: {type: LoadBalancer, loadBalancerClass: "dtn lb"}`,
		"spec.exposure.loadBalancerClass", "must be a qualified name"),
	Entry("advertised address of colons only", validInbound+`exposure: {advertisedAddress: ":::"}`,
		"spec.exposure.advertisedAddress", "must be a DNS name or an IP address"),
	Entry("advertised address of dots only", validInbound+`exposure: {advertisedAddress: "..."}`,
		"spec.exposure.advertisedAddress", "must be a DNS name or an IP address"),
	Entry("advertised address with an empty label", validInbound+`exposure: {advertisedAddress: "dtn..example.org"}`,
		"spec.exposure.advertisedAddress", "must be a DNS name or an IP address"),
	Entry("advertised IPv6 address in brackets", validInbound+`exposure: {advertisedAddress: "[2001:db8::1]"}`,
		"spec.exposure.advertisedAddress", "without port or brackets"),
}

// identityTunnelEntries: certificates, client identities and the names of other objects.
var identityTunnelEntries = []TableEntry{
	Entry("extra SAN of colons only", validInbound+`certificates: {extraSANs: [":::"]}`,
		"spec.certificates.extraSANs[0]", "must be a DNS name (optionally *.domain) or an IP address"),
	Entry("extra SAN of dots only", validInbound+`certificates: {extraSANs: ["dtn.example.org", "..."]}`,
		"spec.certificates.extraSANs[1]", "must be a DNS name"),
	Entry("extra SAN with a wildcard in the middle", validInbound+`certificates: {extraSANs: ["dtn.*.example.org"]}`,
		"spec.certificates.extraSANs[0]", "must be a DNS name"),
	Entry("extra SANs on an Outbound end", validOutbound+`certificates: {extraSANs: ["dtn.example.org"]}`,
		"spec.certificates.extraSANs", "applies only to the Inbound end"),
	Entry("issuer name with an underscore", validInbound+`certificates: {source: CertManager, issuerRef: {name: site_ca}}`,
		"spec.certificates.issuerRef.name", "must be an issuer name"),
	Entry("issuer group with a space", validInbound+`certificates: {source: CertManager, issuerRef: {name: ca, group: "cert manager.io"}}`,
		"spec.certificates.issuerRef.group", "must be an API group"),
	Entry("certificate Secret name with upper case", validInbound+`certificates: {source: Secret, secretRef: {name: Site-TLS}}`,
		"spec.certificates.secretRef.name", "must be an object name"),
	Entry("allowed client that is no identity", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100], allowedClients: ["not an identity!"]}`,
		"spec.inbound.allowedClients[0]", "must be a certificate identity"),
	Entry("allowed client of colons only", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100], allowedClients: [":::"]}`,
		"spec.inbound.allowedClients[0]", "must be a certificate identity"),
	Entry("allowed client URI without the two slashes", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100], allowedClients: ["spiffe:partner/consumer"]}`,
		"spec.inbound.allowedClients[0]", "a URI with a scheme"),
	Entry("allowed client DNS name in upper case (matched exactly)", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100], allowedClients: ["Consumer.Example.org"]}`,
		"spec.inbound.allowedClients[0]", "a lower-case DNS name"),
	Entry("server name with a port", remoteOutbound+`    ports: [5100]
    serverName: "in.example.org:443"`,
		"spec.outbound.endpoint.serverName", "must be a DNS name or an IP address"),
	Entry("server name of dots only", remoteOutbound+`    ports: [5100]
    serverName: "..."`,
		"spec.outbound.endpoint.serverName", "must be a DNS name or an IP address"),
	Entry("remote address of colons only", `
role: Outbound
outbound:
  endpoint: {address: ":::", ports: [5100], bundleSecretRef: {name: b}}`,
		"spec.outbound.endpoint.address", "must be a DNS name or an IP address"),
	Entry("remote address of dots only", `
role: Outbound
outbound:
  endpoint: {address: "...", ports: [5100], bundleSecretRef: {name: b}}`,
		"spec.outbound.endpoint.address", "must be a DNS name or an IP address"),
	Entry("bundle Secret name with an exclamation mark", `
role: Outbound
outbound:
  endpoint: {address: in.example.org, ports: [5100], bundleSecretRef: {name: "bundle!"}}`,
		"spec.outbound.endpoint.bundleSecretRef.name", "must be an object name"),
	Entry("tunnelRef namespace with an underscore", `
role: Outbound
outbound: {tunnelRef: {name: in, namespace: daq_site}}`,
		"spec.outbound.tunnelRef.namespace", "must be a namespace name"),
	Entry("tunnelRef namespace starting with a dash", `
role: Outbound
outbound: {tunnelRef: {name: in, namespace: -daq}}`,
		"spec.outbound.tunnelRef.namespace", "must be a namespace name"),
	Entry("tunnelRef name starting with a digit", `
role: Outbound
outbound: {tunnelRef: {name: 1inbound}}`,
		"spec.outbound.tunnelRef.name", "must be a StreamTunnel name"),
	Entry("tunnelRef name longer than a StreamTunnel's", `
role: Outbound
outbound: {tunnelRef: {name: `+strings.Repeat("i", 49)+`}}`,
		"spec.outbound.tunnelRef.name", "at most 48 characters"),
	Entry("scitag policyRef name with a space", validInbound+`scitag: {policyRef: {name: "atlas policy"}}`,
		"spec.scitag.policyRef.name", "must be an object name"),
	Entry("producer host with an empty label", `
role: Inbound
inbound: {producers: ["daq..svc:5000"], listenPorts: [5100]}`,
		"spec.inbound.producers[0]", "the host before the port must be a DNS name"),
	Entry("producer IPv6 host of colons only", `
role: Inbound
inbound: {producers: ["[:::]:5000"], listenPorts: [5100]}`,
		"spec.inbound.producers[0]", "an IPv6 address in brackets"),
	Entry("sFlow collector with a bracketed non-address", validInbound+`telemetry: {collectors: ["[fff]:6343"]}`,
		"spec.telemetry.collectors[0]", "the host before the port must be a DNS name"),
	Entry("firefly collector host with a label ending in a dash", validInbound+`telemetry: {fireflies: {collectors: ["collector-.example.org:10514"]}}`,
		"spec.telemetry.fireflies.collectors[0]", "the host before the port must be a DNS name"),
}

// sharedClusterPolicyEntries: ScitagPolicy selectors and registry sources.
var sharedClusterPolicyEntries = []TableEntry{
	Entry("selector operator that does not exist", policyWith(`
tunnelSelector:
  matchExpressions: [{key: experiment, operator: Equals, values: [atlas]}]`),
		"spec.tunnelSelector.matchExpressions", "each operator must be one of In, NotIn, Exists, DoesNotExist"),
	Entry("selector operator in lower case", policyWith(`
tunnelSelector:
  matchExpressions: [{key: experiment, operator: in, values: [atlas]}]`),
		"spec.tunnelSelector.matchExpressions", "each operator must be one of"),
	Entry("selector In without values", policyWith(`
tunnelSelector:
  matchExpressions: [{key: experiment, operator: In}]`),
		"spec.tunnelSelector.matchExpressions", "In and NotIn need at least one value"),
	Entry("selector Exists with values", policyWith(`
tunnelSelector:
  matchExpressions: [{key: experiment, operator: Exists, values: [atlas]}]`),
		"spec.tunnelSelector.matchExpressions", "Exists and DoesNotExist take no values"),
	Entry("selector label key with two slashes", policyWith(`
tunnelSelector:
  matchLabels: {"scitags.org/a/b": atlas}`),
		"spec.tunnelSelector.matchLabels", "each key must be a label key"),
	Entry("selector label value of 64 characters", policyWith(`
tunnelSelector:
  matchLabels: {scitags.org/experiment: `+strings.Repeat("a", 64)+`}`),
		"spec.tunnelSelector.matchLabels", "each value must be a label value of at most 63 characters"),
	Entry("registry url without a host", policyWith(`registry: {url: "https:///api.json"}`),
		"spec.registry.url", "must be an http:// or https:// URL with a host"),
	Entry("registry url of a file", policyWith(`registry: {url: "file:///etc/scitags/api.json"}`),
		"spec.registry.url", "must be an http:// or https:// URL"),
	Entry("registry url that is relative", policyWith(`registry: {url: "registry.example.org/api.json"}`),
		"spec.registry.url", "must be an http:// or https:// URL"),
	Entry("registry url with a space", policyWith(`registry: {url: "https://registry.example.org/api .json"}`),
		"spec.registry.url", "no spaces"),
	Entry("registry url with credentials", policyWith(`registry: {url: "https://reader:secret@registry.example.org/api.json"}`),
		"spec.registry.url", "must not carry user:password@"),
	Entry("registry url with a fragment", policyWith(`registry: {url: "https://registry.example.org/api.json#v2"}`),
		"spec.registry.url", "must not carry a #fragment"),
	Entry("refresh interval beyond a week", policyWith(`registry: {url: "https://registry.example.org/api.json", refreshInterval: 200h}`),
		"spec.registry.refreshInterval", "at most 168h"),
	Entry("registry ConfigMap name with upper case", policyWith(`registry: {configMapRef: {name: Site-Registry}}`),
		"spec.registry.configMapRef.name", "must be a ConfigMap name"),
	Entry("policy firefly collector with an IPv6 host of colons only", policyWith(`fireflies: {collectors: ["[::::]:10514"]}`),
		"spec.fireflies.collectors[0]", "an IPv6 address in brackets"),
}

// policyWith is a valid ScitagPolicy spec plus extra top-level fields.
func policyWith(extra string) string {
	return "experiment: atlas\nactivity: Debug\n" + strings.TrimPrefix(extra, "\n") + "\n"
}

// acceptedTunnelSpecs sit just inside the new rules: they must stay valid.
var acceptedTunnelSpecs = []TableEntry{
	Entry("a TCP listener on 6343 (only UDP clashes with sFlow)", `
role: Inbound
protocol: TCP
inbound: {producers: ["p:5000"], listenPorts: [6343]}`),
	Entry("port ranges just below and above the pod's ports", `
role: Inbound
inbound: {producers: ["p:5000"], listenPortRange: {first: 9080, last: 9089}}`),
	Entry("an Outbound range starting after 9091", validOutbound+`  listenPortRange: {first: 9092, last: 9093}`),
	Entry("an Outbound mirroring 9090 onto other local ports", `
role: Outbound
outbound:
  endpoint: {address: "2001:db8::10", ports: [9090], bundleSecretRef: {name: b}, serverName: DTN.Example.org}
  listenPorts: [7100]`),
	Entry("idleTimeout at both bounds", validInbound+`idleTimeout: 1s`),
	Entry("idleTimeout of a week", validInbound+`idleTimeout: 168h`),
	Entry("labels, annotations and node selectors in every legal shape", validInbound+`
pod:
  labels: {team: daq, example.org/site: "", a.b/C_d.e-f: X9}
  annotations: {prometheus.io/scrape: "true", note: "any text at all: spaces, / and ü"}
  nodeSelector: {kubernetes.io/hostname: dtn-01}
  priorityClassName: dtn-critical
exposure:
  type: LoadBalancer
  loadBalancerClass: example.org/dtn-lb
  annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}
  advertisedAddress: 2001:db8::7`),
	Entry("resources with equal, integer, extended and limit-only quantities", validInbound+`
pod:
  resources:
    requests: {cpu: 1, memory: 1Gi, example.com/fpga: 1}
    limits: {cpu: 1000m, memory: 1073741824, ephemeral-storage: 1Gi, example.com/fpga: 1}
  sidecarResources: {requests: {cpu: 100m}, limits: {memory: 128Mi}}`),
	Entry("certificate identities of every kind", `
role: Inbound
inbound:
  producers: ["daq-producer.default.svc:5074", "192.0.2.1:5000", "[2001:db8::1]:5000"]
  listenPorts: [5100, 5101, 5102]
  allowedClients: ["spiffe://partner.org/ns/daq/streamtunnel/out", "consumer.example.org", "192.0.2.9", "2001:db8::9", "ops@example.org"]
certificates: {extraSANs: ["*.dtn.example.org", "DTN.Example.org", "192.0.2.7", "2001:db8::7"]}`),
	Entry("an Outbound naming a tunnel in another namespace", `
role: Outbound
outbound: {tunnelRef: {name: detector-inbound, namespace: daq-01}}`),
}

var acceptedPolicySpecs = []TableEntry{
	Entry("a selector with every operator", policyWith(`
tunnelSelector:
  matchLabels: {scitags.org/experiment: atlas}
  matchExpressions:
  - {key: site, operator: In, values: [cern, bnl]}
  - {key: site, operator: NotIn, values: [test]}
  - {key: scitags.org/activity, operator: Exists}
  - {key: legacy, operator: DoesNotExist}`)),
	Entry("an http registry with a port and a query", policyWith(`registry: {url: "http://registry.internal:8080/api.json?v=2", refreshInterval: 168h}`)),
}

// createE2ETunnels creates test/e2e/testdata/tunnels.yaml's objects, filled in as the e2e suite
// fills them, in a namespace of their own: a rule that refused them would only show on a cluster.
func createE2ETunnels() {
	const ns = "e2e-fixture"
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "test", "e2e", "testdata", "tunnels.yaml"))
	Expect(err).NotTo(HaveOccurred())
	filled := strings.NewReplacer("${NAMESPACE}", ns, "${SAMPLING_RATE}", "100").Replace(string(data))
	docs := strings.Split(filled, "\n---\n")
	Expect(docs).To(HaveLen(3))
	for _, doc := range docs {
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed())
		Expect(k8sClient.Create(ctx, u)).To(Succeed(), "test/e2e/testdata/tunnels.yaml: %s", u.GetName())
	}
}
