// Package v1alpha1 holds the scitunnel.io/v1alpha1 API: StreamTunnel (one end of a tunnel that
// carries instrument data from a producer's facility to a consumer's) and ScitagPolicy (which
// scitags experiment/activity a tunnel's flows carry in their IPv6 flow label).
//
// +kubebuilder:object:generate=true
// +groupName=scitunnel.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "scitunnel.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
