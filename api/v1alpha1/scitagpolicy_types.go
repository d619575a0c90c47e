package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScitagPolicySpec maps a scitags experiment/activity to the flow label of the tunnels it
// selects.
type ScitagPolicySpec struct {
	// experiment name or id in the registry (e.g. "atlas" or "2").
	// +required
	Experiment ExperimentRef `json:"experiment"`
	// activity name or id in the registry (e.g. "Production Output" or "16").
	// +required
	Activity ActivityRef `json:"activity"`

	// registry is where names are resolved. Default: the snapshot of scitags.org/api.json
	// compiled into the operator (air-gapped sites need nothing else).
	// +optional
	Registry *RegistrySource `json:"registry,omitempty"`

	// tunnelSelector chooses the StreamTunnels of this namespace that this policy tags (besides
	// those naming it in spec.scitag.policyRef). Empty selects none.
	// +optional
	TunnelSelector *metav1.LabelSelector `json:"tunnelSelector,omitempty"`

	// entropy fills the five entropy bits of the label with fresh random bits per connection, so
	// parallel streams spread over ECMP paths (the tag bits never change). Default on; set false
	// where a network's analysis expects the bare tag label.
	// +optional
	Entropy *bool `json:"entropy,omitempty"`

	// fireflies announce the selected tunnels' flows over UDP.
	// +optional
	Fireflies *FirefliesSpec `json:"fireflies,omitempty"`
}

// RegistrySource is a scitags registry document (api.json format).
//
// +kubebuilder:validation:XValidation:rule="!(has(self.url) && has(self.configMapRef))",message="spec.registry: set only one of url or configMapRef"
// +kubebuilder:validation:XValidation:rule="has(self.url) || has(self.configMapRef)",message="spec.registry needs url or configMapRef (omit spec.registry to use the compiled-in snapshot)"
// +kubebuilder:validation:XValidation:rule="!has(self.refreshInterval) || has(self.url)",message="spec.registry.refreshInterval applies only to url"
type RegistrySource struct {
	// url of the registry, e.g. https://www.scitags.org/api.json.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	URL string `json:"url,omitempty"`
	// refreshInterval between fetches of url. Default 600s (as sFlow-RT does); at least 60s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('60s')",message="spec.registry.refreshInterval must be at least 60s"
	RefreshInterval *metav1.Duration `json:"refreshInterval,omitempty"`
	// configMapRef names a ConfigMap in this namespace holding the registry.
	// +optional
	ConfigMapRef *ConfigMapKeyReference `json:"configMapRef,omitempty"`
}

// ConfigMapKeyReference names a key of a ConfigMap in the same namespace.
type ConfigMapKeyReference struct {
	// name of the ConfigMap.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// key holding the registry JSON; default "api.json".
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// Condition types of a ScitagPolicy.
const (
	// ConditionResolved: experiment and activity were found and encode into a flow label.
	ConditionResolved = "Resolved"
	// ConditionRegistrySynced: the registry source was read successfully.
	ConditionRegistrySynced = "RegistrySynced"
	// ConditionConflict: another policy selects one of this policy's tunnels.
	ConditionConflict = "Conflict"
)

// ScitagPolicyStatus is the resolved tag and what it applies to.
type ScitagPolicyStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// conditions: Resolved, RegistrySynced, Conflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// tag is "expName.activityName".
	// +optional
	// +kubebuilder:validation:MaxLength=160
	Tag string `json:"tag,omitempty"`
	// experimentId 0..511.
	// +optional
	ExperimentID *int32 `json:"experimentId,omitempty"`
	// experimentName from the registry.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	ExperimentName string `json:"experimentName,omitempty"`
	// activityId 0..63.
	// +optional
	ActivityID *int32 `json:"activityId,omitempty"`
	// activityName from the registry.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	ActivityName string `json:"activityName,omitempty"`
	// flowLabel is the 20-bit label without entropy.
	// +optional
	FlowLabel *int32 `json:"flowLabel,omitempty"`
	// flowLabelHex, e.g. "0x10040".
	// +optional
	// +kubebuilder:validation:MaxLength=16
	FlowLabelHex string `json:"flowLabelHex,omitempty"`
	// mask of the label's meaningful bits (261884 = 0x3FEFC): label & mask identifies the tag.
	// +optional
	Mask int32 `json:"mask,omitempty"`

	// registry that resolved the names.
	// +optional
	Registry *RegistryStatus `json:"registry,omitempty"`

	// matchedTunnels is how many StreamTunnels this policy tags.
	// +optional
	MatchedTunnels int32 `json:"matchedTunnels,omitempty"`
	// tunnels lists them (the first 64 names).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Tunnels []string `json:"tunnels,omitempty"`
}

// RegistryStatus describes the registry a policy was resolved against.
type RegistryStatus struct {
	// source: "embedded:...", "configmap:<name>/<key>" or the URL.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Source string `json:"source,omitempty"`
	// version field of the registry document.
	// +optional
	Version int32 `json:"version,omitempty"`
	// modified field of the registry document.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Modified string `json:"modified,omitempty"`
	// lastSync is when the source was last read successfully.
	// +optional
	LastSync *metav1.Time `json:"lastSync,omitempty"`
	// pairs is the number of registered (experiment, activity) pairs.
	// +optional
	Pairs int32 `json:"pairs,omitempty"`
}

// ScitagPolicy maps a scitags experiment/activity (by name or id, resolved against the
// registry) to the IPv6 flow label stamped by the tunnels it selects.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=scitagpolicies,singular=scitagpolicy,shortName=scitag;stp,categories=scitunnel
// +kubebuilder:printcolumn:name="Tag",type=string,JSONPath=`.status.tag`
// +kubebuilder:printcolumn:name="FlowLabel",type=string,JSONPath=`.status.flowLabelHex`
// +kubebuilder:printcolumn:name="Tunnels",type=integer,JSONPath=`.status.matchedTunnels`
// +kubebuilder:printcolumn:name="Resolved",type=string,JSONPath=`.status.conditions[?(@.type=="Resolved")].status`
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.status.conditions[?(@.type=="Conflict")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Registry",type=string,JSONPath=`.status.registry.source`,priority=1
type ScitagPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the tag and what it applies to.
	// +required
	Spec ScitagPolicySpec `json:"spec"`

	// status is the resolved tag.
	// +optional
	Status ScitagPolicyStatus `json:"status,omitempty"`
}

// ScitagPolicyList is a list of ScitagPolicies.
//
// +kubebuilder:object:root=true
type ScitagPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ScitagPolicy `json:"items"`
}

func init() {
	register(&ScitagPolicy{}, &ScitagPolicyList{})
}
