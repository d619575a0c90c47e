package envtest_test

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

const validationNS = "validation"

// object builds an unstructured scitunnel.io object from a YAML spec, so that a case can send
// what the Go types could not express (wrong types, unknown enum values, missing fields).
func object(kind, name, specYAML string) *unstructured.Unstructured {
	var spec map[string]any
	ExpectWithOffset(1, yaml.Unmarshal([]byte(specYAML), &spec)).To(Succeed())
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "scitunnel.io/v1alpha1",
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": validationNS},
		"spec":       spec,
	}}
	return u
}

const validInbound = `
role: Inbound
inbound:
  producers: ["producer.daq.svc:5000"]
  listenPorts: [5100]
`

const validOutbound = `
role: Outbound
outbound:
  tunnelRef: {name: detector-inbound}
`

// refused creates obj and asserts the API server refuses it with a message naming field and
// saying what is allowed.
func refused(kind, spec string, wants ...string) {
	obj := object(kind, "bad", spec)
	err := k8sClient.Create(ctx, obj)
	Expect(err).To(HaveOccurred(), "the API server accepted an invalid %s: %s", kind, spec)
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected an Invalid error, got %v", err)
	for _, w := range wants {
		Expect(err.Error()).To(ContainSubstring(w))
	}
}

// accepted creates a valid object (under a generated name) and deletes it again.
func accepted(kind, spec string) {
	obj := object(kind, "", spec)
	obj.SetGenerateName("edge-")
	Expect(k8sClient.Create(ctx, obj)).To(Succeed(), "the API server refused a valid %s: %s", kind, spec)
	Expect(k8sClient.Delete(ctx, obj)).To(Succeed())
}

var _ = Describe("API validation", Ordered, func() {
	BeforeAll(func() {
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: validationNS}})).To(Succeed())
	})

	It("accepts the minimal valid Inbound and Outbound ends and fills defaults", func() {
		in := object("StreamTunnel", "ok-inbound", validInbound)
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		Expect(in.Object["spec"].(map[string]any)["protocol"]).To(Equal("TLS"))
		Expect(in.Object["spec"].(map[string]any)["replicas"]).To(BeEquivalentTo(1))
		out := object("StreamTunnel", "ok-outbound", validOutbound)
		Expect(k8sClient.Create(ctx, out)).To(Succeed())
		pol := object("ScitagPolicy", "ok-policy", "experiment: atlas\nactivity: Production Output\n")
		Expect(k8sClient.Create(ctx, pol)).To(Succeed())
	})

	It("accepts every sample in config/samples", func() {
		files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "scitunnel_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).To(HaveLen(4))
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			u := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal(data, &u.Object)).To(Succeed())
			u.SetNamespace(validationNS)
			Expect(k8sClient.Create(ctx, u)).To(Succeed(), "sample %s", f)
		}
	})

	It("accepts the end-to-end suite's tunnels", createE2ETunnels)

	DescribeTable("refuses an invalid StreamTunnel, naming the field and what is allowed",
		func(spec string, wants ...string) { refused("StreamTunnel", spec, wants...) },

		// role and protocol
		Entry("role missing", `
inbound: {producers: ["p:5000"], listenPorts: [5100]}`,
			"spec.role", "Required value"),
		Entry("unknown role", `
role: Sideways
inbound: {producers: ["p:5000"], listenPorts: [5100]}`,
			"spec.role", `Unsupported value: "Sideways"`, `"Inbound"`, `"Outbound"`),
		Entry("unknown protocol", validInbound+`protocol: SCTP`,
			"spec.protocol", `Unsupported value: "SCTP"`, `"TLS"`, `"TCP"`, `"UDP"`),
		Entry("unknown UDP transport", validInbound+`protocol: UDP
udpTransport: QUIC`,
			"spec.udpTransport", `Unsupported value: "QUIC"`, `"Plain"`),
		Entry("udpTransport without protocol UDP", validInbound+`udpTransport: Plain`,
			"spec.udpTransport", "applies only to protocol UDP"),

		// role-specific sections
		Entry("Inbound without spec.inbound", `role: Inbound`,
			"spec.inbound", "spec.inbound is required when role is Inbound"),
		Entry("Inbound with spec.outbound", validInbound+`outbound: {tunnelRef: {name: x}}`,
			"spec.outbound", "must not be set when role is Inbound"),
		Entry("Outbound without spec.outbound", `role: Outbound`,
			"spec.outbound", "spec.outbound is required when role is Outbound"),
		Entry("Outbound with spec.inbound", validOutbound+`inbound: {producers: ["p:5000"], listenPorts: [5100]}`,
			"spec.inbound", "must not be set when role is Outbound"),

		// producers
		Entry("Inbound without producers", `
role: Inbound
inbound: {listenPorts: [5100]}`,
			"spec.inbound.producers", "Required value"),
		Entry("Inbound with an empty producer list", `
role: Inbound
inbound: {producers: [], listenPorts: [5100]}`,
			"spec.inbound.producers", "at least 1 items"),
		Entry("producer without a port", `
role: Inbound
inbound: {producers: ["producer.daq.svc"], listenPorts: [5100]}`,
			"spec.inbound.producers[0]", "must be host:port"),
		Entry("producer port out of range", `
role: Inbound
inbound: {producers: ["producer.daq.svc:70000"], listenPorts: [5100]}`,
			"spec.inbound.producers[0]", "port after the colon must be 1..65535"),
		Entry("duplicate producers", `
role: Inbound
inbound: {producers: ["p:5000", "p:5000"], listenPorts: [5100, 5101]}`,
			"spec.inbound.producers[1]", "Duplicate value"),

		// listener ports
		Entry("listener port 0", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [0]}`,
			"spec.inbound.listenPorts[0]", "greater than or equal to 1"),
		Entry("listener port above 65535", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [65536]}`,
			"spec.inbound.listenPorts[0]", "less than or equal to 65535"),
		Entry("duplicate listener ports", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100, 5100]}`,
			"spec.inbound.listenPorts[1]", "Duplicate value"),
		Entry("both listenPorts and listenPortRange", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100], listenPortRange: {first: 5100, last: 5101}}`,
			"spec.inbound", "set exactly one of spec.inbound.listenPorts or spec.inbound.listenPortRange"),
		Entry("neither listenPorts nor listenPortRange", `
role: Inbound
inbound: {producers: ["p:5000"]}`,
			"spec.inbound", "set exactly one of spec.inbound.listenPorts or spec.inbound.listenPortRange"),
		Entry("port range running backwards", `
role: Inbound
inbound: {producers: ["p:5000"], listenPortRange: {first: 5105, last: 5100}}`,
			"spec.inbound.listenPortRange", "listenPortRange.last must not be below listenPortRange.first"),
		Entry("port range of more than 64 ports", `
role: Inbound
inbound: {producers: ["p:5000"], listenPortRange: {first: 5100, last: 5200}}`,
			"spec.inbound.listenPortRange", "at most 64 ports"),
		Entry("port range end above 65535", `
role: Inbound
inbound: {producers: ["p:5000"], listenPortRange: {first: 65530, last: 65536}}`,
			"spec.inbound.listenPortRange.last", "less than or equal to 65535"),
		Entry("fewer listener ports than producers", `
role: Inbound
inbound: {producers: ["a:5000", "b:5000"], listenPorts: [5100]}`,
			"spec.inbound", "at least one listener port per producer"),

		// parallel streams
		Entry("parallelStreams not matching listenPorts", validInbound+`parallelStreams: 3`,
			"spec.inbound.listenPorts", "must hold exactly spec.parallelStreams ports"),
		Entry("parallelStreams not matching listenPortRange", `
role: Inbound
parallelStreams: 2
inbound: {producers: ["p:5000"], listenPortRange: {first: 5100, last: 5102}}`,
			"spec.inbound.listenPortRange", "must hold exactly spec.parallelStreams ports"),
		Entry("parallelStreams 0", validInbound+`parallelStreams: 0`,
			"spec.parallelStreams", "greater than or equal to 1"),
		Entry("parallelStreams above 64", validInbound+`parallelStreams: 65`,
			"spec.parallelStreams", "less than or equal to 64"),
		Entry("parallelStreams on an Outbound end", validOutbound+`parallelStreams: 2`,
			"spec.parallelStreams", "set on the Inbound end"),

		// the Outbound's remote
		Entry("Outbound without a remote", `
role: Outbound
outbound: {listenPorts: [7100]}`,
			"spec.outbound", "needs a remote: tunnelRef"),
		Entry("Outbound with both remote forms", `
role: Outbound
outbound:
  tunnelRef: {name: in}
  endpoint: {address: in.example.org, ports: [5100], bundleSecretRef: {name: b}}`,
			"spec.outbound", "set only one of spec.outbound.tunnelRef or spec.outbound.endpoint"),
		Entry("remote endpoint without its bundle Secret under TLS", `
role: Outbound
outbound:
  endpoint: {address: in.example.org, ports: [5100]}`,
			"spec.outbound.endpoint.bundleSecretRef", "Required value", "connection-bundle Secret"),
		Entry("remote endpoint address carrying a port", `
role: Outbound
outbound:
  endpoint: {address: "in.example.org:5100", ports: [5100], bundleSecretRef: {name: b}}`,
			"spec.outbound.endpoint.address", "must be a DNS name or an IP address"),
		Entry("remote endpoint with duplicate ports", `
role: Outbound
outbound:
  endpoint: {address: in.example.org, ports: [5100, 5100], bundleSecretRef: {name: b}}`,
			"spec.outbound.endpoint.ports[1]", "Duplicate value"),
		Entry("local ports not matching the remote's", `
role: Outbound
outbound:
  endpoint: {address: in.example.org, ports: [5100, 5101], bundleSecretRef: {name: b}}
  listenPorts: [7100]`,
			"spec.outbound", "one local port per spec.outbound.endpoint.ports entry"),
		Entry("local listenPorts and listenPortRange together", `
role: Outbound
outbound:
  tunnelRef: {name: in}
  listenPorts: [7100]
  listenPortRange: {first: 7100, last: 7100}`,
			"spec.outbound", "set at most one of spec.outbound.listenPorts or spec.outbound.listenPortRange"),
		Entry("tunnelRef without a name", `
role: Outbound
outbound: {tunnelRef: {name: ""}}`,
			"spec.outbound.tunnelRef.name", "at least 1 chars"),

		// replicas and exposure
		Entry("negative replicas", validInbound+`replicas: -1`,
			"spec.replicas", "greater than or equal to 0"),
		Entry("too many replicas", validInbound+`replicas: 33`,
			"spec.replicas", "less than or equal to 32"),
		Entry("unknown Service type", validInbound+`exposure: {type: ExternalName}`,
			"spec.exposure.type", `Unsupported value: "ExternalName"`, `"LoadBalancer"`),
		Entry("advertised address with a port", validInbound+`exposure: {advertisedAddress: "dtn.example.org:443"}`,
			"spec.exposure.advertisedAddress", "must be a DNS name or an IP address"),

		// client identities
		Entry("allowedClients without mutual TLS", `
role: Inbound
protocol: TCP
inbound: {producers: ["p:5000"], listenPorts: [5100], allowedClients: ["spiffe://x/ns/a/streamtunnel/b"]}`,
			"spec.inbound.allowedClients", "needs mutual TLS"),
		Entry("malformed allowed peer namespace", `
role: Inbound
inbound: {producers: ["p:5000"], listenPorts: [5100], allowedPeerNamespaces: ["Bad_NS"]}`,
			"spec.inbound.allowedPeerNamespaces[0]", "should match"),

		// certificates
		Entry("unknown certificate source", validInbound+`certificates: {source: Vault}`,
			"spec.certificates.source", `Unsupported value: "Vault"`, `"CertManager"`),
		Entry("source Secret without secretRef", validInbound+`certificates: {source: Secret}`,
			"spec.certificates", "secretRef is required when source is Secret"),
		Entry("source CertManager without issuerRef", validInbound+`certificates: {source: CertManager}`,
			"spec.certificates", "issuerRef is required when source is CertManager"),
		Entry("secretRef with operator-managed certificates", validInbound+`certificates: {secretRef: {name: mine}}`,
			"spec.certificates", "secretRef applies only to source Secret"),
		Entry("unknown issuer kind", validInbound+`certificates: {source: CertManager, issuerRef: {name: ca, kind: Vault}}`,
			"spec.certificates.issuerRef.kind", `Unsupported value: "Vault"`, `"ClusterIssuer"`),
		Entry("certificate lifetime too short", validInbound+`certificates: {duration: 10m}`,
			"spec.certificates.duration", "between 1h and 8760h"),
		Entry("invalid extra SAN", validInbound+`certificates: {extraSANs: ["not a name!"]}`,
			"spec.certificates.extraSANs[0]", "must be a DNS name (optionally *.domain) or an IP address"),

		// scitag
		Entry("policyRef together with an inline tag", validInbound+`scitag: {policyRef: {name: p}, experiment: atlas, activity: Debug}`,
			"spec.scitag", "either policyRef or inline experiment/activity, not both"),
		Entry("experiment without activity", validInbound+`scitag: {experiment: atlas}`,
			"spec.scitag", "needs policyRef, or both experiment and activity"),
		Entry("experiment id the flow label cannot hold", validInbound+`scitag: {experiment: "512", activity: "1"}`,
			"spec.scitag.experiment", "experiment id must be 0..511"),
		Entry("activity id the flow label cannot hold", validInbound+`scitag: {experiment: "2", activity: "64"}`,
			"spec.scitag.activity", "activity id must be 0..63"),
		Entry("experiment name with forbidden characters", validInbound+`scitag: {experiment: "at/las", activity: "1"}`,
			"spec.scitag.experiment", "should match"),

		// telemetry
		Entry("negative sampling rate", validInbound+`telemetry: {samplingRate: -1}`,
			"spec.telemetry.samplingRate", "greater than or equal to 0"),
		Entry("sFlow collector without a port", validInbound+`telemetry: {collectors: ["sflow-rt.monitoring"]}`,
			"spec.telemetry.collectors[0]", "must be host:port"),
		Entry("firefly collector with port 0", validInbound+`telemetry: {fireflies: {enabled: true, collectors: ["collector:0"]}}`,
			"spec.telemetry.fireflies.collectors[0]", "port after the colon must be 1..65535"),
		podContractTunnelEntries, podTunnelEntries, identityTunnelEntries,
	)

	DescribeTable("accepts StreamTunnel specs just inside the rules",
		func(spec string) { accepted("StreamTunnel", spec) }, acceptedTunnelSpecs)
	DescribeTable("accepts ScitagPolicy specs just inside the rules",
		func(spec string) { accepted("ScitagPolicy", spec) }, acceptedPolicySpecs)

	It("refuses names that cannot name the tunnel's Service", func() {
		for _, name := range []string{"1detector", strings.Repeat("d", 49)} {
			obj := object("StreamTunnel", name, validInbound)
			err := k8sClient.Create(ctx, obj)
			Expect(err).To(HaveOccurred(), name)
			Expect(err.Error()).To(ContainSubstring("metadata.name must be a DNS-1035 label"))
		}
	})

	It("refuses changing the role of an existing tunnel", func() {
		obj := object("StreamTunnel", "role-change", validInbound)
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		spec := obj.Object["spec"].(map[string]any)
		spec["role"] = "Outbound"
		delete(spec, "inbound")
		spec["outbound"] = map[string]any{"tunnelRef": map[string]any{"name": "x"}}
		err := k8sClient.Update(ctx, obj)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec.role"))
		Expect(err.Error()).To(ContainSubstring("spec.role is immutable"))
	})

	It("refuses ScitagPolicy names that cannot be a label value", func() {
		err := k8sClient.Create(ctx, object("ScitagPolicy", strings.Repeat("p", 64), policyWith("")))
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("metadata.name of a ScitagPolicy must be at most 63 characters"))
		Expect(k8sClient.Create(ctx, object("ScitagPolicy", strings.Repeat("p", 63), policyWith("")))).To(Succeed())
	})

	DescribeTable("refuses an invalid ScitagPolicy, naming the field and what is allowed",
		func(spec string, wants ...string) { refused("ScitagPolicy", spec, wants...) },
		Entry("experiment missing", `activity: Debug`, "spec.experiment", "Required value"),
		Entry("activity missing", `experiment: atlas`, "spec.activity", "Required value"),
		Entry("experiment id out of range", "experiment: \"600\"\nactivity: \"1\"",
			"spec.experiment", "experiment id must be 0..511"),
		Entry("activity id out of range", "experiment: \"2\"\nactivity: \"99\"",
			"spec.activity", "activity id must be 0..63"),
		Entry("registry with url and ConfigMap", `
experiment: atlas
activity: Debug
registry: {url: "https://registry.example.org/api.json", configMapRef: {name: reg}}`,
			"spec.registry", "set only one of url or configMapRef"),
		Entry("empty registry source", `
experiment: atlas
activity: Debug
registry: {}`,
			"spec.registry", "needs url or configMapRef"),
		Entry("registry url not http(s)", `
experiment: atlas
activity: Debug
registry: {url: "ftp://registry.example.org/api.json"}`,
			"spec.registry.url", "must be an http:// or https:// URL"),
		Entry("refresh interval too short", `
experiment: atlas
activity: Debug
registry: {url: "https://registry.example.org/api.json", refreshInterval: 10s}`,
			"spec.registry.refreshInterval", "at least 60s"),
		Entry("refresh interval with a ConfigMap source", `
experiment: atlas
activity: Debug
registry: {configMapRef: {name: reg}, refreshInterval: 600s}`,
			"spec.registry", "refreshInterval applies only to url"),
		Entry("invalid ConfigMap key", `
experiment: atlas
activity: Debug
registry: {configMapRef: {name: reg, key: "a/b"}}`,
			"spec.registry.configMapRef.key", "should match"),
		sharedClusterPolicyEntries,
	)
})
