package v1alpha1

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// fullProxyPodSpec sets every field, so that the test notices a field the hand-written
// DeepCopyInto does not know.
func fullProxyPodSpec() *ProxyPodSpec {
	return &ProxyPodSpec{
		NodeSelector:              map[string]LabelValue{"site": "a"},
		Tolerations:               []corev1.Toleration{{Key: "dtn", Operator: corev1.TolerationOpExists}},
		Affinity:                  &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone"}},
		PriorityClassName:         "dtn",
		Resources:                 &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}},
		SidecarResources:          &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}},
		Annotations:               map[string]string{"a": "b"},
		Labels:                    map[string]LabelValue{"team": "daq"},
	}
}

func TestProxyPodSpecDeepCopy(t *testing.T) {
	in := fullProxyPodSpec()
	v := reflect.ValueOf(in).Elem()
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("fullProxyPodSpec leaves %s unset: set it, and copy it in DeepCopyInto", v.Type().Field(i).Name)
		}
	}

	out := in.DeepCopy()
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("DeepCopy differs from the original:\n%+v\n%+v", in, out)
	}

	// Every reference must be fresh: change the copy's and the original must not move.
	out.NodeSelector["site"] = "b"
	out.Labels["team"] = "x"
	out.Annotations["a"] = "c"
	out.Tolerations[0].Key = "x"
	out.TopologySpreadConstraints[0].TopologyKey = "x"
	out.Affinity.NodeAffinity = nil
	out.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("2")
	out.SidecarResources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
	if !reflect.DeepEqual(in, fullProxyPodSpec()) {
		t.Fatalf("changing the copy changed the original: %+v", in)
	}

	if (*ProxyPodSpec)(nil).DeepCopy() != nil {
		t.Fatal("DeepCopy of nil must be nil")
	}
}
