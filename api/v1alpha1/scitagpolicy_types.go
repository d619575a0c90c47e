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
	// those naming it in spec.scitag.policyRef). Empty selects none. Operators are In, NotIn
	// (with values), Exists and DoesNotExist (without); matchLabels holds label keys and
	// values of at most 63 characters.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",fieldPath=".matchExpressions",message="spec.tunnelSelector.matchExpressions: each operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",fieldPath=".matchExpressions",message="spec.tunnelSelector.matchExpressions: operators In and NotIn need at least one value"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",fieldPath=".matchExpressions",message="spec.tunnelSelector.matchExpressions: operators Exists and DoesNotExist take no values"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchLabels) || self.matchLabels.all(k, !format.qualifiedName().validate(k).hasValue())",fieldPath=".matchLabels",message="spec.tunnelSelector.matchLabels: each key must be a label key: an optional DNS prefix and /, then at most 63 letters, digits, -, _ or . starting and ending with a letter or digit"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchLabels) || self.matchLabels.all(k, size(self.matchLabels[k]) <= 63)",fieldPath=".matchLabels",message="spec.tunnelSelector.matchLabels: each value must be a label value of at most 63 characters"
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
	// url of the registry, e.g. https://www.scitags.org/api.json: scheme http or https, a
	// host, no user:password@ and no #fragment. (Whether the operator fetches plain http or
	// in-cluster hosts is its own setting, checked when it fetches.)
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="!self.matches('[[:space:]]') && isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="spec.registry.url must be an http:// or https:// URL with a host and no spaces, e.g. https://www.scitags.org/api.json"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')",message="spec.registry.url must not carry user:password@: the registry is read anonymously"
	// +kubebuilder:validation:XValidation:rule="!self.contains('#')",message="spec.registry.url must not carry a #fragment: it is never sent to the server"
	URL string `json:"url,omitempty"`
	// refreshInterval between fetches of url. Default 600s (as sFlow-RT does); 60s to 168h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('60s') && duration(self) <= duration('168h')",message="spec.registry.refreshInterval must be at least 60s and at most 168h"
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
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="spec.registry.configMapRef.name must be a ConfigMap name: a DNS subdomain of lower case letters, digits, - and ."
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
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name of a ScitagPolicy must be at most 63 characters: the operator labels the objects it tags with it, and a label value holds 63"
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
