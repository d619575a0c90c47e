package v1alpha1

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
)

// DeepCopyInto copies the receiver into out; in must be non-nil. Written by hand because
// controller-gen cannot copy map[string]LabelValue (an alias); TestProxyPodSpecDeepCopy fails
// when a field is added here without being copied.
func (in *ProxyPodSpec) DeepCopyInto(out *ProxyPodSpec) {
	*out = *in
	out.NodeSelector = maps.Clone(in.NodeSelector)
	out.Annotations = maps.Clone(in.Annotations)
	out.Labels = maps.Clone(in.Labels)
	if in.Tolerations != nil {
		out.Tolerations = make([]corev1.Toleration, len(in.Tolerations))
		for i := range in.Tolerations {
			in.Tolerations[i].DeepCopyInto(&out.Tolerations[i])
		}
	}
	if in.TopologySpreadConstraints != nil {
		out.TopologySpreadConstraints = make([]corev1.TopologySpreadConstraint, len(in.TopologySpreadConstraints))
		for i := range in.TopologySpreadConstraints {
			in.TopologySpreadConstraints[i].DeepCopyInto(&out.TopologySpreadConstraints[i])
		}
	}
	out.Affinity = in.Affinity.DeepCopy()
	out.Resources = in.Resources.DeepCopy()
	out.SidecarResources = in.SidecarResources.DeepCopy()
}

// DeepCopy copies the receiver into a new ProxyPodSpec.
func (in *ProxyPodSpec) DeepCopy() *ProxyPodSpec {
	if in == nil {
		return nil
	}
	out := new(ProxyPodSpec)
	in.DeepCopyInto(out)
	return out
}
