package v1alpha1

// Types shared by StreamTunnel and ScitagPolicy. Every string and list is bounded so that the
// API server's CEL cost estimate stays within budget.

// Port is a TCP or UDP port number.
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=65535
type Port int32

// HostPort is "host:port": a DNS name, an IPv4 address, or an IPv6 address in brackets
// ("[2001:db8::1]:5000"), then a port 1..65535.
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=261
// +kubebuilder:validation:XValidation:rule="self.matches('^(\\\\[[0-9A-Fa-f:.]+\\\\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$')",message="must be host:port, e.g. producer.daq.svc:5000 or [2001:db8::1]:5000"
// +kubebuilder:validation:XValidation:rule="!self.matches(':[0-9]{1,5}$') || (int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535)",message="the port after the colon must be 1..65535"
// +kubebuilder:validation:XValidation:rule="!self.matches(':[0-9]{1,5}$') || (self.startsWith('[') ? isIP(self.substring(1, self.lastIndexOf(':') - 1)) : (isIP(self.substring(0, self.lastIndexOf(':'))) || !format.dns1123Subdomain().validate(self.substring(0, self.lastIndexOf(':')).lowerAscii()).hasValue()))",message="the host before the port must be a DNS name (labels of letters, digits and '-' separated by dots), an IPv4 address, or an IPv6 address in brackets"
type HostPort string

// ExperimentRef names a scitags experiment by its registry name ("atlas") or its decimal id ("2").
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9 _.\-]*$`
// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]+$') || (size(self) <= 3 && int(self) <= 511)",message="an experiment id must be 0..511: the flow label holds 9 bits for it"
type ExperimentRef string

// ActivityRef names a scitags activity by its registry name ("Production Output" or
// "Production_Output") or its decimal id ("16").
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9 _.\-]*$`
// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]+$') || (size(self) <= 2 && int(self) <= 63)",message="an activity id must be 0..63: the flow label holds 6 bits for it"
type ActivityRef string

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// name of the object: a DNS subdomain (lower case letters, digits, '-' and '.').
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="name must be an object name: a DNS subdomain of lower case letters, digits, - and . (e.g. detector-bundle)"
	Name string `json:"name"`
}

// FirefliesSpec configures scitags fireflies: UDP flow announcements (syslog-framed JSON).
type FirefliesSpec struct {
	// enabled announces each flow's start, progress and end.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// collectors receive every firefly ("host:port"; port 10514 is the scitags convention).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	Collectors []HostPort `json:"collectors,omitempty"`
	// toPeer also sends each firefly to the flow's peer on UDP port 10514, as flowd does.
	// +optional
	ToPeer *bool `json:"toPeer,omitempty"`
}

// LabelValue is a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', starting
// and ending with a letter or digit (or empty). An alias, so that maps of them stay
// map[string]string for their readers; the bound keeps the rule's CEL cost within budget.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="!format.labelValue().validate(self).hasValue()",message="must be a label value: at most 63 letters, digits, -, _ or . starting and ending with a letter or digit"
type LabelValue = string
