package ssa

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
)

const ownerUID = types.UID("tunnel-uid")

func childConfig() *corev1ac.ConfigMapApplyConfiguration {
	return corev1ac.ConfigMap("web-config", "ns").
		WithOwnerReferences(metav1ac.OwnerReference().WithAPIVersion("scitunnel.io/v1alpha1").
			WithKind("StreamTunnel").WithName("web").WithUID(ownerUID).WithController(true)).
		WithData(map[string]string{"k": "v"})
}

func configMap(controller types.UID) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-config"}, Data: map[string]string{"user": "data"}}
	if controller != "" {
		yes := true
		cm.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Thing", Name: "other", UID: controller, Controller: &yes}}
	}
	return cm
}

// An object of the child's name that the owner does not control is neither applied nor
// changed, whether the cache shows it (current) or only the API server does (Live).
func TestApplyLeavesAnObjectItsOwnerDoesNotControl(t *testing.T) {
	for name, controller := range map[string]types.UID{"no controller": "", "another controller": "other-uid"} {
		for _, cached := range []bool{true, false} {
			user := configMap(controller)
			c := fake.NewClientBuilder().WithObjects(user.DeepCopy()).Build()
			a := &Applier{Client: c, Live: c, Owner: "test"}
			var current client.Object
			if cached {
				current = user
			}
			_, err := a.Apply(context.Background(), current, childConfig(), nil)
			var conflict *NameConflictError
			if !errors.As(err, &conflict) || conflict.Kind != "ConfigMap" || conflict.Name != "web-config" {
				t.Fatalf("%s, cached=%v: want a NameConflictError for ConfigMap web-config, got %v", name, cached, err)
			}
			got := &corev1.ConfigMap{}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(user), got); err != nil {
				t.Fatal(err)
			}
			if got.Data["user"] != "data" || got.Data["k"] != "" || len(got.OwnerReferences) != len(user.OwnerReferences) {
				t.Errorf("%s, cached=%v: the user's object changed: %+v", name, cached, got)
			}
			reason, msg, ok := Problem(err)
			if !ok || reason != conditions.ReasonNameConflict || !strings.Contains(msg, "ConfigMap web-config") {
				t.Errorf("Problem = %q, %q, %v", reason, msg, ok)
			}
		}
	}
}

func TestProblemReportsRefusalsNotTransientErrors(t *testing.T) {
	gk := schema.GroupKind{Group: "apps", Kind: "Deployment"}
	invalid := apierrors.NewInvalid(gk, "web", field.ErrorList{field.Invalid(field.NewPath("spec"), "x", "must be less than or equal to cpu limit")})
	reason, msg, ok := Problem(&ApplyError{Kind: "Deployment", Name: "web", Err: invalid})
	if !ok || reason != conditions.ReasonApplyFailed || !strings.Contains(msg, "Deployment web") || !strings.Contains(msg, "cpu limit") {
		t.Errorf("invalid: Problem = %q, %q, %v", reason, msg, ok)
	}
	long := apierrors.NewForbidden(schema.GroupResource{Resource: "deployments"}, "web", errors.New(strings.Repeat("x", 5000)))
	if _, msg, _ := Problem(&ApplyError{Kind: "Deployment", Name: "web", Err: long}); len(msg) > maxRefusal+100 {
		t.Errorf("the API server's message is not bounded: %d bytes", len(msg))
	}
	for _, err := range []error{
		apierrors.NewConflict(schema.GroupResource{Resource: "deployments"}, "web", errors.New("stale")),
		apierrors.NewTimeoutError("slow", 1),
		errors.New("connection refused"),
	} {
		if _, _, ok := Problem(&ApplyError{Kind: "Deployment", Name: "web", Err: err}); ok {
			t.Errorf("%v: a transient error is no problem for the user", err)
		}
	}
}
