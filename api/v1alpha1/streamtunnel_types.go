package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// This file is long because it is the whole StreamTunnel API: every type carries the doc
// comment that `kubectl explain` shows and the markers the API server validates with, one file
// per kind as kubebuilder lays them out. Splitting it would scatter what a reader of the schema
// wants in one place.

// TunnelRole says which end of a tunnel a StreamTunnel is.
// +kubebuilder:validation:Enum=Inbound;Outbound
type TunnelRole string

const (
	// RoleInbound runs at the producer's facility: it accepts mutual-TLS connections from peers
	// and forwards them to the producer application (SciStream's "PROD" side).
	RoleInbound TunnelRole = "Inbound"
	// RoleOutbound runs at the consumer's facility: consumers connect to its local ports and it
	// carries their connections to the Inbound end (SciStream's "CONS" side).
	RoleOutbound TunnelRole = "Outbound"
)

// Protocol is what a tunnel carries between its ends.
// +kubebuilder:validation:Enum=TLS;TCP;UDP
type Protocol string

const (
	ProtocolTLS Protocol = "TLS" // TCP streams over mutual TLS 1.3 (the default)
	ProtocolTCP Protocol = "TCP" // plain TCP relay, no encryption
	ProtocolUDP Protocol = "UDP" // datagrams; see UDPTransport
)

// UDPTransport says how UDP datagrams cross between the ends.
// +kubebuilder:validation:Enum=TLS;Plain
type UDPTransport string

const (
	UDPTransportTLS   UDPTransport = "TLS"   // length-framed on a mutual-TLS stream (the default)
	UDPTransportPlain UDPTransport = "Plain" // as datagrams, unencrypted
)

// StreamTunnelSpec is one end of a tunnel.
//
// +kubebuilder:validation:XValidation:rule="self.role != 'Inbound' || has(self.inbound)",fieldPath=".inbound",reason="FieldValueRequired",message="spec.inbound is required when role is Inbound: list the producer targets and the listener ports"
// +kubebuilder:validation:XValidation:rule="self.role != 'Inbound' || !has(self.outbound)",fieldPath=".outbound",reason="FieldValueForbidden",message="spec.outbound must not be set when role is Inbound"
// +kubebuilder:validation:XValidation:rule="self.role != 'Outbound' || has(self.outbound)",fieldPath=".outbound",reason="FieldValueRequired",message="spec.outbound is required when role is Outbound: name the remote (tunnelRef or endpoint)"
// +kubebuilder:validation:XValidation:rule="self.role != 'Outbound' || !has(self.inbound)",fieldPath=".inbound",reason="FieldValueForbidden",message="spec.inbound must not be set when role is Outbound"
// +kubebuilder:validation:XValidation:rule="!has(self.udpTransport) || self.protocol == 'UDP'",fieldPath=".udpTransport",reason="FieldValueForbidden",message="spec.udpTransport applies only to protocol UDP"
// +kubebuilder:validation:XValidation:rule="!has(self.parallelStreams) || self.role == 'Inbound'",fieldPath=".parallelStreams",reason="FieldValueForbidden",message="spec.parallelStreams is set on the Inbound end; an Outbound end mirrors the ports of its remote"
// +kubebuilder:validation:XValidation:rule="!has(self.parallelStreams) || !has(self.inbound) || !has(self.inbound.listenPorts) || size(self.inbound.listenPorts) == self.parallelStreams",fieldPath=".inbound.listenPorts",reason="FieldValueInvalid",message="spec.inbound.listenPorts must hold exactly spec.parallelStreams ports (one listener per stream)"
// +kubebuilder:validation:XValidation:rule="!has(self.parallelStreams) || !has(self.inbound) || !has(self.inbound.listenPortRange) || self.inbound.listenPortRange.last - self.inbound.listenPortRange.first + 1 == self.parallelStreams",fieldPath=".inbound.listenPortRange",reason="FieldValueInvalid",message="spec.inbound.listenPortRange must hold exactly spec.parallelStreams ports (one listener per stream)"
// +kubebuilder:validation:XValidation:rule="!has(self.inbound) || !has(self.inbound.allowedClients) || size(self.inbound.allowedClients) == 0 || self.protocol == 'TLS' || (self.protocol == 'UDP' && (!has(self.udpTransport) || self.udpTransport == 'TLS'))",fieldPath=".inbound.allowedClients",reason="FieldValueForbidden",message="spec.inbound.allowedClients needs mutual TLS: protocol TLS, or UDP with udpTransport TLS"
// +kubebuilder:validation:XValidation:rule="!has(self.outbound) || !has(self.outbound.endpoint) || has(self.outbound.endpoint.bundleSecretRef) || self.protocol == 'TCP' || (self.protocol == 'UDP' && has(self.udpTransport) && self.udpTransport == 'Plain') || (has(self.certificates) && self.certificates.source != 'Operator')",fieldPath=".outbound.endpoint.bundleSecretRef",reason="FieldValueRequired",message="spec.outbound.endpoint.bundleSecretRef is required for mutual TLS: copy the inbound end's connection-bundle Secret into this namespace and name it here (or use certificates.source Secret or CertManager)"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.inbound) || !has(self.inbound.listenPorts) || !(6343 in self.inbound.listenPorts)",fieldPath=".inbound.listenPorts",reason="FieldValueForbidden",message="spec.inbound.listenPorts must not include 6343 with protocol UDP: the pod's sFlow sidecar receives samples on UDP 6343 (and Outbound ends mirror these ports as UDP listeners); pick another port"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.inbound) || !has(self.inbound.listenPortRange) || self.inbound.listenPortRange.first > 6343 || self.inbound.listenPortRange.last < 6343",fieldPath=".inbound.listenPortRange",reason="FieldValueForbidden",message="spec.inbound.listenPortRange must not cover 6343 with protocol UDP: the pod's sFlow sidecar receives samples on UDP 6343 (and Outbound ends mirror these ports as UDP listeners); pick another range"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.outbound) || !has(self.outbound.listenPorts) || !(6343 in self.outbound.listenPorts)",fieldPath=".outbound.listenPorts",reason="FieldValueForbidden",message="spec.outbound.listenPorts must not include 6343 with protocol UDP: the pod's sFlow sidecar receives samples on UDP 6343; pick another port"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.outbound) || !has(self.outbound.listenPortRange) || self.outbound.listenPortRange.first > 6343 || self.outbound.listenPortRange.last < 6343",fieldPath=".outbound.listenPortRange",reason="FieldValueForbidden",message="spec.outbound.listenPortRange must not cover 6343 with protocol UDP: the pod's sFlow sidecar receives samples on UDP 6343; pick another range"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.outbound) || !has(self.outbound.endpoint) || has(self.outbound.listenPorts) || has(self.outbound.listenPortRange) || !(6343 in self.outbound.endpoint.ports)",fieldPath=".outbound.endpoint.ports",reason="FieldValueForbidden",message="spec.outbound.endpoint.ports includes 6343, which this end would mirror as a local UDP listener where the pod's sFlow sidecar receives samples: set spec.outbound.listenPorts or listenPortRange to other local ports"
// +kubebuilder:validation:XValidation:rule="self.role != 'Outbound' || !has(self.certificates) || !has(self.certificates.extraSANs) || size(self.certificates.extraSANs) == 0",fieldPath=".certificates.extraSANs",reason="FieldValueForbidden",message="spec.certificates.extraSANs applies only to the Inbound end (its server certificate); remove it from this Outbound end"
type StreamTunnelSpec struct {
	// role is Inbound (producer's site) or Outbound (consumer's site). It cannot change.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.role is immutable: delete the tunnel and create it again with the other role"
	Role TunnelRole `json:"role"`

	// protocol between the two ends: TLS (mutual TLS 1.3, the default), TCP (plain) or UDP.
	// +optional
	// +kubebuilder:default=TLS
	Protocol Protocol `json:"protocol,omitempty"`

	// udpTransport (protocol UDP only): TLS frames datagrams on a mutual-TLS stream (default),
	// Plain relays them unencrypted.
	// +optional
	UDPTransport UDPTransport `json:"udpTransport,omitempty"`

	// inbound configures an Inbound end; required when role is Inbound.
	// +optional
	Inbound *InboundSpec `json:"inbound,omitempty"`

	// outbound configures an Outbound end; required when role is Outbound.
	// +optional
	Outbound *OutboundSpec `json:"outbound,omitempty"`

	// parallelStreams (Inbound only) is SciStream's num_conn: the number of listener ports,
	// mapped round-robin onto the producers (port i carries producer i mod len(producers)).
	// Unset means one stream per listener port given.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	ParallelStreams *int32 `json:"parallelStreams,omitempty"`

	// replicas of the proxy pod (the scale subresource drives it). Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	Replicas *int32 `json:"replicas,omitempty"`

	// exposure is the Service in front of the proxy: how peers reach an Inbound end, or how
	// consumers reach an Outbound end's local ports. Default ClusterIP.
	// +optional
	Exposure *ExposureSpec `json:"exposure,omitempty"`

	// certificates for mutual TLS. Default: operator-managed (a CA per Inbound end, shared with
	// its Outbound ends; leaf certificates renewed at two thirds of their lifetime).
	// +optional
	Certificates *CertificatesSpec `json:"certificates,omitempty"`

	// scitag is the scitags experiment/activity this tunnel's flows carry in their IPv6 flow
	// label: a ScitagPolicy reference or inline names/ids. A ScitagPolicy whose tunnelSelector
	// matches this tunnel's labels also tags it.
	// +optional
	Scitag *TunnelScitag `json:"scitag,omitempty"`

	// telemetry configures the sFlow sidecar and fireflies.
	// +optional
	Telemetry *TelemetrySpec `json:"telemetry,omitempty"`

	// idleTimeout closes a connection idle in both directions this long: 1s to 168h. Unset:
	// never (science streams may pause for long stretches).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('168h')",message="spec.idleTimeout must be between 1s and 168h (unset it to never close idle connections)"
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`

	// pod passes placement and resources through to the proxy pods.
	// +optional
	Pod *ProxyPodSpec `json:"pod,omitempty"`
}

// InboundSpec is the producer side of a tunnel.
//
// +kubebuilder:validation:XValidation:rule="has(self.listenPorts) != has(self.listenPortRange)",message="set exactly one of spec.inbound.listenPorts or spec.inbound.listenPortRange"
// +kubebuilder:validation:XValidation:rule="(has(self.listenPorts) ? size(self.listenPorts) : (has(self.listenPortRange) ? self.listenPortRange.last - self.listenPortRange.first + 1 : size(self.producers))) >= size(self.producers)",message="spec.inbound needs at least one listener port per producer (listenPorts or listenPortRange)"
type InboundSpec struct {
	// producers are the producer application's "host:port" targets (SciStream's
	// prod_listeners), reached from the proxy pod.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Producers []HostPort `json:"producers"`

	// listenPorts are the ports peers connect to, one per stream. Set this or listenPortRange.
	// 9090 and 9091 are the pod's own (admin and analyzer endpoints), and 6343 too with
	// protocol UDP (sFlow).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="!self.exists(p, p == 9090 || p == 9091)",message="spec.inbound.listenPorts must not include 9090 or 9091: the proxy pod's admin (9090) and analyzer (9091) endpoints use them; pick other ports"
	ListenPorts []Port `json:"listenPorts,omitempty"`

	// listenPortRange is a consecutive range of listener ports, one per stream.
	// +optional
	ListenPortRange *PortRange `json:"listenPortRange,omitempty"`

	// allowedClients is an allow-list of client identities: the client certificate must carry
	// one of these DNS, URI (e.g. spiffe://...), email or IP SANs, matched exactly, or be one
	// the operator issued to an Outbound end wired to this tunnel now. Empty accepts any
	// certificate signed by the CA, except with operator-managed certificates: then only the
	// wired ends' (a refused peer is shut out).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || !format.dns1123Subdomain().validate(self).hasValue() || (self.contains('://') && isURL(self)) || self.matches('^[^@[:space:]]+@[^@[:space:]]+$')",message="each spec.inbound.allowedClients entry must be a certificate identity: a lower-case DNS name, an IP address, a URI with a scheme (spiffe://trust.domain/ns/a/streamtunnel/b) or an email address"
	AllowedClients []string `json:"allowedClients,omitempty"`

	// allowedPeerNamespaces are the namespaces whose Outbound StreamTunnels may reference this
	// one and be wired (issued a client certificate from this tunnel's CA) automatically.
	// Default: this tunnel's own namespace only. "*" allows every namespace.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
	AllowedPeerNamespaces []string `json:"allowedPeerNamespaces,omitempty"`

	// flowLabelReflection sets the pod sysctl net.ipv6.flowlabel_reflect=1 so the replies on
	// accepted connections (the bulk data, producer to consumer) carry the peer's flow label.
	// Default: on when the tunnel is tagged. The kubelet must allow this unsafe sysctl
	// (--allowed-unsafe-sysctls=net.ipv6.flowlabel_reflect); set false where it cannot.
	// +optional
	FlowLabelReflection *bool `json:"flowLabelReflection,omitempty"`
}

// PortRange is a consecutive range of ports, first to last inclusive.
//
// +kubebuilder:validation:XValidation:rule="self.last >= self.first",message="listenPortRange.last must not be below listenPortRange.first"
// +kubebuilder:validation:XValidation:rule="self.last - self.first < 64",message="listenPortRange holds at most 64 ports"
// +kubebuilder:validation:XValidation:rule="self.last < 9090 || self.first > 9091",message="listenPortRange must not cover 9090 or 9091: the proxy pod's admin (9090) and analyzer (9091) endpoints use them; pick another range"
type PortRange struct {
	// first port of the range.
	// +required
	First Port `json:"first"`
	// last port of the range (inclusive).
	// +required
	Last Port `json:"last"`
}

// OutboundSpec is the consumer side of a tunnel.
//
// +kubebuilder:validation:XValidation:rule="has(self.tunnelRef) || has(self.endpoint)",message="spec.outbound needs a remote: tunnelRef (an Inbound StreamTunnel in this cluster) or endpoint (address, ports and the bundle Secret of an Inbound end in another cluster)"
// +kubebuilder:validation:XValidation:rule="!(has(self.tunnelRef) && has(self.endpoint))",message="set only one of spec.outbound.tunnelRef or spec.outbound.endpoint"
// +kubebuilder:validation:XValidation:rule="!(has(self.listenPorts) && has(self.listenPortRange))",message="set at most one of spec.outbound.listenPorts or spec.outbound.listenPortRange"
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || !has(self.listenPorts) || size(self.listenPorts) == size(self.endpoint.ports)",message="spec.outbound.listenPorts must hold one local port per spec.outbound.endpoint.ports entry"
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || !has(self.listenPortRange) || self.listenPortRange.last - self.listenPortRange.first + 1 == size(self.endpoint.ports)",message="spec.outbound.listenPortRange must hold one local port per spec.outbound.endpoint.ports entry"
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || has(self.listenPorts) || has(self.listenPortRange) || !self.endpoint.ports.exists(p, p == 9090 || p == 9091)",fieldPath=".endpoint.ports",reason="FieldValueForbidden",message="spec.outbound.endpoint.ports includes 9090 or 9091, which this end would mirror as local listeners where the proxy pod's admin and analyzer endpoints are: set spec.outbound.listenPorts or listenPortRange to other local ports"
type OutboundSpec struct {
	// tunnelRef names an Inbound StreamTunnel in this cluster; the operator wires the two ends
	// (addresses, ports, certificates from the inbound's CA). The inbound must list this
	// namespace in allowedPeerNamespaces unless both are in the same namespace.
	// +optional
	TunnelRef *TunnelReference `json:"tunnelRef,omitempty"`

	// endpoint is an Inbound end in another cluster.
	// +optional
	Endpoint *RemoteEndpoint `json:"endpoint,omitempty"`

	// listenPorts are the local ports consumers connect to, one per remote port, in order.
	// Default: the same port numbers as the remote's. 9090 and 9091 are the pod's own (admin
	// and analyzer endpoints), and 6343 too with protocol UDP (sFlow).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="!self.exists(p, p == 9090 || p == 9091)",message="spec.outbound.listenPorts must not include 9090 or 9091: the proxy pod's admin (9090) and analyzer (9091) endpoints use them; pick other ports"
	ListenPorts []Port `json:"listenPorts,omitempty"`

	// listenPortRange is a consecutive range of local ports, one per remote port.
	// +optional
	ListenPortRange *PortRange `json:"listenPortRange,omitempty"`
}

// TunnelReference names a StreamTunnel, in this namespace unless namespace is set.
type TunnelReference struct {
	// name of the Inbound StreamTunnel.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="size(self) <= 48 && !format.dns1035Label().validate(self).hasValue()",message="spec.outbound.tunnelRef.name must be a StreamTunnel name: lower case letters, digits and -, starting with a letter, at most 48 characters"
	Name string `json:"name"`
	// namespace of the Inbound StreamTunnel; default this tunnel's namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Label().validate(self).hasValue()",message="spec.outbound.tunnelRef.namespace must be a namespace name: lower case letters, digits and -, starting and ending with a letter or digit"
	Namespace string `json:"namespace,omitempty"`
}

// RemoteEndpoint is an Inbound end outside this cluster.
type RemoteEndpoint struct {
	// address of the Inbound end: a DNS name or an IP address.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="isIP(self) || !format.dns1123Subdomain().validate(self.lowerAscii()).hasValue()",message="spec.outbound.endpoint.address must be a DNS name or an IP address without port or brackets"
	Address string `json:"address"`
	// ports of the Inbound end's listeners, one per stream.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Ports []Port `json:"ports"`
	// bundleSecretRef names the connection-bundle Secret exported by the Inbound end (its
	// "<name>-bundle" Secret, copied into this namespace): ca.crt, tls.crt, tls.key.
	// +optional
	BundleSecretRef *LocalObjectReference `json:"bundleSecretRef,omitempty"`
	// serverName the Inbound end's certificate must carry (a DNS name or an IP address);
	// default: address.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="isIP(self) || !format.dns1123Subdomain().validate(self.lowerAscii()).hasValue()",message="spec.outbound.endpoint.serverName must be a DNS name or an IP address, as in the Inbound end's certificate"
	ServerName string `json:"serverName,omitempty"`
}

// ExposureSpec shapes the Service in front of the proxy pods.
//
// +kubebuilder:validation:XValidation:rule="!has(self.loadBalancerClass) || (has(self.type) && self.type == 'LoadBalancer')",fieldPath=".loadBalancerClass",reason="FieldValueForbidden",message="spec.exposure.loadBalancerClass applies only to type LoadBalancer: set spec.exposure.type: LoadBalancer or remove it"
type ExposureSpec struct {
	// type of the Service: ClusterIP (default), NodePort or LoadBalancer.
	// +optional
	// +kubebuilder:default=ClusterIP
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	Type corev1.ServiceType `json:"type,omitempty"`
	// annotations added to the Service (load-balancer settings, external-dns, ...). Keys are
	// qualified names ([prefix/]name).
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",messageExpression="'spec.exposure.annotations: key ' + self.filter(k, format.qualifiedName().validate(k).hasValue())[0] + ' is not a qualified name: an optional DNS prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit'"
	Annotations map[string]string `json:"annotations,omitempty"`
	// loadBalancerClass of a LoadBalancer Service (type LoadBalancer only), a qualified name
	// such as example.org/dtn-lb.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.qualifiedName().validate(self).hasValue()",message="spec.exposure.loadBalancerClass must be a qualified name such as example.org/dtn-lb"
	LoadBalancerClass *string `json:"loadBalancerClass,omitempty"`
	// advertisedAddress is the DNS name or IP peers in other clusters use. It is put in the
	// server certificate and the connection bundle. Default: the LoadBalancer's ingress, else
	// the Service's cluster DNS name.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="isIP(self) || !format.dns1123Subdomain().validate(self.lowerAscii()).hasValue()",message="spec.exposure.advertisedAddress must be a DNS name or an IP address, without port or brackets"
	AdvertisedAddress string `json:"advertisedAddress,omitempty"`
}

// CertificateSource says where a tunnel's TLS certificates come from.
// +kubebuilder:validation:Enum=Operator;Secret;CertManager
type CertificateSource string

const (
	// CertificatesOperator: the operator runs a CA per Inbound end and issues and renews leaf
	// certificates (Outbound ends in other clusters use the Inbound's connection bundle).
	CertificatesOperator CertificateSource = "Operator"
	// CertificatesSecret: a Secret you manage with tls.crt, tls.key and ca.crt.
	CertificatesSecret CertificateSource = "Secret"
	// CertificatesCertManager: cert-manager issues the certificate from the issuer you name.
	CertificatesCertManager CertificateSource = "CertManager"
)

// CertificatesSpec chooses and shapes the tunnel's certificates.
//
// +kubebuilder:validation:XValidation:rule="self.source != 'Secret' || has(self.secretRef)",message="spec.certificates.secretRef is required when source is Secret"
// +kubebuilder:validation:XValidation:rule="self.source != 'CertManager' || has(self.issuerRef)",message="spec.certificates.issuerRef is required when source is CertManager"
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || self.source == 'Secret'",message="spec.certificates.secretRef applies only to source Secret"
// +kubebuilder:validation:XValidation:rule="!has(self.issuerRef) || self.source == 'CertManager'",message="spec.certificates.issuerRef applies only to source CertManager"
type CertificatesSpec struct {
	// source: Operator (default), Secret, or CertManager.
	// +optional
	// +kubebuilder:default=Operator
	Source CertificateSource `json:"source,omitempty"`
	// secretRef (source Secret) names a kubernetes.io/tls-style Secret with tls.crt, tls.key and
	// ca.crt (the CA that signs the peer's certificate).
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// issuerRef (source CertManager) names the cert-manager Issuer or ClusterIssuer.
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`
	// duration of the leaf certificates the operator or cert-manager issues; renewed at two
	// thirds of it. Default 2160h (90 days); 1h to 8760h on either end. An Inbound's duration
	// also caps the client certificates its CA issues to Outbound ends.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('8760h')",message="spec.certificates.duration must be between 1h and 8760h"
	Duration *metav1.Duration `json:"duration,omitempty"`
	// trustDomain of the SPIFFE-style client identity
	// spiffe://<trustDomain>/ns/<namespace>/streamtunnel/<name>. Default: the manager's
	// --trust-domain.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`
	TrustDomain string `json:"trustDomain,omitempty"`
	// extraSANs are added to the server certificate (Inbound only): DNS names (a leading
	// "*." for a wildcard) or IP addresses peers use besides the Service's names.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || !format.dns1123Subdomain().validate((self.startsWith('*.') ? self.substring(2) : self).lowerAscii()).hasValue()",message="each spec.certificates.extraSANs entry must be a DNS name (optionally *.domain) or an IP address"
	ExtraSANs []string `json:"extraSANs,omitempty"`
}

// IssuerReference names a cert-manager issuer.
type IssuerReference struct {
	// name of the issuer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="spec.certificates.issuerRef.name must be an issuer name: a DNS subdomain of lower case letters, digits, - and ."
	Name string `json:"name"`
	// kind: Issuer (default, same namespace) or ClusterIssuer.
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	Kind string `json:"kind,omitempty"`
	// group of the issuer; default cert-manager.io.
	// +optional
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="spec.certificates.issuerRef.group must be an API group such as cert-manager.io"
	Group string `json:"group,omitempty"`
}

// TunnelScitag tags a tunnel's flows: a ScitagPolicy reference, or an inline pair. Inline
// names resolve against the registry snapshot compiled into the operator (numeric ids need no
// registry); to resolve against another registry, use a ScitagPolicy.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.policyRef) && (has(self.experiment) || has(self.activity)))",message="spec.scitag: use either policyRef or inline experiment/activity, not both"
// +kubebuilder:validation:XValidation:rule="has(self.policyRef) || (has(self.experiment) && has(self.activity))",message="spec.scitag needs policyRef, or both experiment and activity"
type TunnelScitag struct {
	// policyRef names a ScitagPolicy in this namespace.
	// +optional
	PolicyRef *LocalObjectReference `json:"policyRef,omitempty"`
	// experiment name or id (e.g. "atlas" or "2").
	// +optional
	Experiment ExperimentRef `json:"experiment,omitempty"`
	// activity name or id (e.g. "Production Output" or "16").
	// +optional
	Activity ActivityRef `json:"activity,omitempty"`
	// entropy fills the label's five entropy bits with fresh random bits per connection (ECMP
	// spreading). Overrides the ScitagPolicy's setting. Default on.
	// +optional
	Entropy *bool `json:"entropy,omitempty"`
}

// TelemetrySpec configures the sFlow sidecar and fireflies.
type TelemetrySpec struct {
	// samplingRate N samples 1 in N packets in the pod; 0 turns the in-pod sampler off (the
	// sidecar then needs no capability). Default 1000.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16777215
	SamplingRate *int32 `json:"samplingRate,omitempty"`
	// collectors are external sFlow collectors ("host:port", e.g. sFlow-RT on 6343) that also
	// receive the samples.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	Collectors []HostPort `json:"collectors,omitempty"`
	// fireflies announce flows over UDP (scitags fireflies).
	// +optional
	Fireflies *FirefliesSpec `json:"fireflies,omitempty"`
}

// ProxyPodSpec is passed through to the proxy pods.
//
// Its DeepCopy is written by hand (proxypodspec_deepcopy.go): controller-gen's object generator
// cannot copy maps whose values are the LabelValue alias.
// +kubebuilder:object:generate=false
type ProxyPodSpec struct {
	// nodeSelector of the proxy pods: label keys and values.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",messageExpression="'spec.pod.nodeSelector: key ' + self.filter(k, format.qualifiedName().validate(k).hasValue())[0] + ' is not a label key: an optional DNS prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit'"
	NodeSelector map[string]LabelValue `json:"nodeSelector,omitempty"`
	// tolerations of the proxy pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// affinity of the proxy pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// topologySpreadConstraints of the proxy pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
	// priorityClassName of the proxy pods.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="spec.pod.priorityClassName must be a PriorityClass name: a DNS subdomain of lower case letters, digits, - and ."
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// resources of the proxy container. Limits must not be below requests.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.limits) || !has(self.requests) || ['cpu', 'memory', 'ephemeral-storage'].all(r, !(r in self.limits) || !(r in self.requests) || !isQuantity(string(self.limits[r])) || !isQuantity(string(self.requests[r])) || quantity(string(self.limits[r])).compareTo(quantity(string(self.requests[r]))) >= 0)",fieldPath=".limits",messageExpression="'spec.pod.resources.limits.' + ['cpu', 'memory', 'ephemeral-storage'].filter(r, r in self.limits && r in self.requests && isQuantity(string(self.limits[r])) && isQuantity(string(self.requests[r])) && quantity(string(self.limits[r])).compareTo(quantity(string(self.requests[r]))) < 0)[0] + ' must not be below its request: raise the limit or lower the request'"
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// sidecarResources of the sFlow sidecar container. Limits must not be below requests.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.limits) || !has(self.requests) || ['cpu', 'memory', 'ephemeral-storage'].all(r, !(r in self.limits) || !(r in self.requests) || !isQuantity(string(self.limits[r])) || !isQuantity(string(self.requests[r])) || quantity(string(self.limits[r])).compareTo(quantity(string(self.requests[r]))) >= 0)",fieldPath=".limits",messageExpression="'spec.pod.sidecarResources.limits.' + ['cpu', 'memory', 'ephemeral-storage'].filter(r, r in self.limits && r in self.requests && isQuantity(string(self.limits[r])) && isQuantity(string(self.requests[r])) && quantity(string(self.limits[r])).compareTo(quantity(string(self.requests[r]))) < 0)[0] + ' must not be below its request: raise the limit or lower the request'"
	SidecarResources *corev1.ResourceRequirements `json:"sidecarResources,omitempty"`
	// annotations added to the proxy pods. Keys are qualified names ([prefix/]name).
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",messageExpression="'spec.pod.annotations: key ' + self.filter(k, format.qualifiedName().validate(k).hasValue())[0] + ' is not a qualified name: an optional DNS prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit'"
	Annotations map[string]string `json:"annotations,omitempty"`
	// labels added to the proxy pods: label keys and values (the operator's own labels win).
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",messageExpression="'spec.pod.labels: key ' + self.filter(k, format.qualifiedName().validate(k).hasValue())[0] + ' is not a label key: an optional DNS prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit'"
	Labels map[string]LabelValue `json:"labels,omitempty"`
}

// Condition types of a StreamTunnel.
const (
	// ConditionReady: the proxy pods are available and the certificates valid.
	ConditionReady = "Ready"
	// ConditionCertificateReady: the certificates exist, are valid now and not about to expire.
	ConditionCertificateReady = "CertificateReady"
	// ConditionProxyAvailable: at least one proxy pod is available.
	ConditionProxyAvailable = "ProxyAvailable"
	// ConditionFlowLabelApplied: the proxies stamp the tag's flow label (per their reports).
	ConditionFlowLabelApplied = "FlowLabelApplied"
	// ConditionDegraded: something needs the user's action; the message says what.
	ConditionDegraded = "Degraded"
)

// StreamTunnelStatus is what the operator observed.
type StreamTunnelStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, CertificateReady, ProxyAvailable, FlowLabelApplied, Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// endpoint is the main address to connect to, for kubectl: "host:port" or
	// "host:first-last".
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Endpoint string `json:"endpoint,omitempty"`

	// endpoints are where consumers (Outbound) or peers (Inbound) connect.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Endpoints []TunnelEndpoint `json:"endpoints,omitempty"`

	// remote (Outbound) is the Inbound end the proxies dial, e.g. "inbound.ns.svc:5100-5104".
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Remote string `json:"remote,omitempty"`

	// peers (Inbound) are the Outbound StreamTunnels of this cluster wired to this one
	// ("namespace/name").
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Peers []string `json:"peers,omitempty"`

	// scitag is the resolved tag of the tunnel's flows.
	// +optional
	Scitag *ResolvedScitag `json:"scitag,omitempty"`

	// throughput per tag, measured by the sFlow sidecars, summed over the proxy pods.
	// +optional
	// +listType=map
	// +listMapKey=tag
	// +kubebuilder:validation:MaxItems=32
	Throughput []TagThroughput `json:"throughput,omitempty"`

	// throughputSummary is the tunnel's total rate as a human string ("1.2 Gbit/s").
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ThroughputSummary string `json:"throughputSummary,omitempty"`

	// activeConnections across the proxy pods, as the proxies report them.
	// +optional
	ActiveConnections int64 `json:"activeConnections,omitempty"`

	// certificates the tunnel uses and when they expire.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	Certificates []CertificateStatus `json:"certificates,omitempty"`

	// replicas is the number of proxy pods (scale subresource).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// readyReplicas is the number of available proxy pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// selector of the proxy pods, for the scale subresource (HPA).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Selector string `json:"selector,omitempty"`

	// message summarises why the tunnel is not Ready or is Degraded ("" when all is well).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// TunnelEndpoint is one way to reach the tunnel.
type TunnelEndpoint struct {
	// type: ClusterIP, ClusterDNS, NodePort, LoadBalancer or Advertised.
	// +required
	// +kubebuilder:validation:MaxLength=32
	Type string `json:"type"`
	// address (DNS name or IP).
	// +required
	// +kubebuilder:validation:MaxLength=253
	Address string `json:"address"`
	// ports at that address, one per stream.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Ports []int32 `json:"ports,omitempty"`
}

// ResolvedScitag is a tag resolved against the scitags registry.
type ResolvedScitag struct {
	// name is "expName.activityName" (or "exp.act" ids when the registry lacks the pair).
	// +optional
	// +kubebuilder:validation:MaxLength=160
	Name string `json:"name,omitempty"`
	// experimentId 0..511.
	ExperimentID int32 `json:"experimentId"`
	// activityId 0..63.
	ActivityID int32 `json:"activityId"`
	// flowLabel is the 20-bit label without entropy, e.g. 65600.
	FlowLabel int32 `json:"flowLabel"`
	// flowLabelHex is the label as tcpdump shows it, e.g. "0x10040".
	// +optional
	// +kubebuilder:validation:MaxLength=16
	FlowLabelHex string `json:"flowLabelHex,omitempty"`
	// entropy says whether the five entropy bits are randomised per connection.
	// +optional
	Entropy bool `json:"entropy,omitempty"`
	// source of the tag: "inline" or "ScitagPolicy/<name>".
	// +optional
	// +kubebuilder:validation:MaxLength=300
	Source string `json:"source,omitempty"`
}

// TagThroughput is one tag's measured traffic.
type TagThroughput struct {
	// tag is "expName.activityName", "exp.act", or "unknown".
	// +required
	// +kubebuilder:validation:MaxLength=160
	Tag string `json:"tag"`
	// bitsPerSecond estimated over the analyzer's window.
	BitsPerSecond int64 `json:"bitsPerSecond"`
	// errorPercent is the 95% error bound of bitsPerSecond in percent, rounded up: the analyzers'
	// own bounds (196*sqrt(1/samples) for equal frame sizes, wider when sizes spread) combined
	// over the pods; 100 when nothing was sampled.
	ErrorPercent int32 `json:"errorPercent"`
	// bytes estimated since the analyzers started.
	Bytes int64 `json:"bytes"`
	// samples behind the estimate.
	Samples int64 `json:"samples"`
	// lastUpdate is when an analyzer last folded a sample into these figures.
	// +optional
	LastUpdate *metav1.Time `json:"lastUpdate,omitempty"`
}

// CertificateStatus reports one certificate.
type CertificateStatus struct {
	// name: "ca", "server", "client" or "bundle".
	// +required
	// +kubebuilder:validation:MaxLength=32
	Name string `json:"name"`
	// secretName holds the certificate.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName,omitempty"`
	// notAfter is when it expires.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
	// renewAfter is when the operator renews it (two thirds of its lifetime).
	// +optional
	RenewAfter *metav1.Time `json:"renewAfter,omitempty"`
}

// StreamTunnel is one end of a tunnel that carries instrument data between facilities.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:path=streamtunnels,singular=streamtunnel,shortName=tunnel;tunnels;stun,categories=scitunnel
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.role`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Scitag",type=string,JSONPath=`.status.scitag.name`
// +kubebuilder:printcolumn:name="Throughput",type=string,JSONPath=`.status.throughputSummary`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="FlowLabel",type=string,JSONPath=`.status.scitag.flowLabelHex`,priority=1
// +kubebuilder:printcolumn:name="Connections",type=integer,JSONPath=`.status.activeConnections`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 48 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (lower case letters, digits, '-', starting with a letter) of at most 48 characters: it names the tunnel's Service, Deployment and Secrets"
type StreamTunnel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired tunnel end.
	// +required
	Spec StreamTunnelSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status StreamTunnelStatus `json:"status,omitempty"`
}

// StreamTunnelList is a list of StreamTunnels.
//
// +kubebuilder:object:root=true
type StreamTunnelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []StreamTunnel `json:"items"`
}

func init() {
	register(&StreamTunnel{}, &StreamTunnelList{})
}
