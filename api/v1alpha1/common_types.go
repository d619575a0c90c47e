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
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
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
