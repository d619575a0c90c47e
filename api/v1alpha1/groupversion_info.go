// Package v1alpha1 holds the scitunnel.io/v1alpha1 API: StreamTunnel (one end of a tunnel that
// carries instrument data from a producer's facility to a consumer's) and ScitagPolicy (which
// scitags experiment/activity a tunnel's flows carry in their IPv6 flow label).
//
// +kubebuilder:object:generate=true
// +groupName=scitunnel.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "scitunnel.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme. It is apimachinery's, not
	// controller-runtime's scheme.Builder (deprecated): an API package should depend on little
	// more than k8s.io/apimachinery, so that clients can import it cheaply.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// register adds objects (a kind and its list) to GroupVersion when AddToScheme runs; each
// *_types.go file registers its own kinds from init.
func register(objects ...runtime.Object) {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, objects...)
		return nil
	})
}
