package controllers_test

import (
	"crypto/x509"
	"encoding/pem"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

const (
	timeout  = 20 * time.Second
	interval = 100 * time.Millisecond
)

func ports(ps ...int32) []scitunnelv1.Port {
	out := make([]scitunnelv1.Port, len(ps))
	for i, p := range ps {
		out[i] = scitunnelv1.Port(p)
	}
	return out
}

func inbound(ns, name string, mutate ...func(*scitunnelv1.StreamTunnel)) *scitunnelv1.StreamTunnel {
	t := &scitunnelv1.StreamTunnel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: scitunnelv1.StreamTunnelSpec{
			Role: scitunnelv1.RoleInbound,
			Inbound: &scitunnelv1.InboundSpec{
				Producers:   []scitunnelv1.HostPort{"producer.daq.svc:5074"},
				ListenPorts: ports(5100),
			},
		},
	}
	for _, m := range mutate {
		m(t)
	}
	return t
}

func outbound(ns, name, inboundNS, inboundName string, mutate ...func(*scitunnelv1.StreamTunnel)) *scitunnelv1.StreamTunnel {
	t := &scitunnelv1.StreamTunnel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: scitunnelv1.StreamTunnelSpec{
			Role: scitunnelv1.RoleOutbound,
			Outbound: &scitunnelv1.OutboundSpec{
				TunnelRef: &scitunnelv1.TunnelReference{Name: inboundName, Namespace: inboundNS},
			},
		},
	}
	for _, m := range mutate {
		m(t)
	}
	return t
}

func key(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }

// eventually re-reads obj until check passes.
func eventually(obj client.Object, check func(g Gomega)) {
	EventuallyWithOffset(1, func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, key(obj), obj)).To(Succeed())
		check(g)
	}, timeout, interval).Should(Succeed())
}

func condition(conds []metav1.Condition, typ string) metav1.Condition {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return metav1.Condition{Type: typ, Status: "Missing"}
	}
	return *c
}

// haveCondition matches a condition's status and reason.
func expectCondition(g Gomega, conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	c := condition(conds, typ)
	g.ExpectWithOffset(1, c.Status).To(Equal(status), "%s: %s %s", typ, c.Reason, c.Message)
	if reason != "" {
		g.ExpectWithOffset(1, c.Reason).To(Equal(reason), "%s: %s", typ, c.Message)
	}
	return c
}

// proxyConfig reads and parses the tunnel's data-plane configuration from its ConfigMap.
func proxyConfig(g Gomega, t *scitunnelv1.StreamTunnel) *config.Config {
	var cm corev1.ConfigMap
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Name + "-config"}, &cm)).To(Succeed())
	c, err := config.Parse([]byte(cm.Data["config.json"]))
	g.Expect(err).NotTo(HaveOccurred())
	return c
}

func secret(g Gomega, ns, name string) *corev1.Secret {
	var s corev1.Secret
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)).To(Succeed())
	return &s
}

func cert(g Gomega, pemData []byte) *x509.Certificate {
	block, _ := pem.Decode(pemData)
	g.Expect(block).NotTo(BeNil())
	c, err := x509.ParseCertificate(block.Bytes)
	g.Expect(err).NotTo(HaveOccurred())
	return c
}

// setDeploymentAvailable drives the Deployment's status as the deployment controller would
// (envtest runs no controllers).
func setDeploymentAvailable(t *scitunnelv1.StreamTunnel, available int32) {
	var d appsv1.Deployment
	EventuallyWithOffset(1, func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
		d.Status.Replicas = *d.Spec.Replicas
		d.Status.ReadyReplicas = available
		d.Status.AvailableReplicas = available
		d.Status.UpdatedReplicas = *d.Spec.Replicas
		d.Status.ObservedGeneration = d.Generation
		g.Expect(k8sClient.Status().Update(ctx, &d)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

// readyPod creates a proxy pod of t whose IP is loopback, so the controller's HTTP report
// reader reaches the fake data plane.
func readyPod(t *scitunnelv1.StreamTunnel, name string) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: name, Labels: map[string]string{
			"app.kubernetes.io/name":       "scitunnel-proxy",
			"app.kubernetes.io/managed-by": "scitunnel-operator",
			"scitunnel.io/tunnel":          t.Name,
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "proxy", Image: "scitunnel-dataplane:test"}}},
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, p)).To(Succeed())
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning,
		PodIP: "127.0.0.1",
		Conditions: []corev1.PodCondition{{
			Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(),
		}},
	}
	ExpectWithOffset(1, k8sClient.Status().Update(ctx, p)).To(Succeed())
}

// nudge changes an annotation: the way to make the controller look again at once.
func nudge(obj client.Object) {
	EventuallyWithOffset(1, func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, key(obj), obj)).To(Succeed())
		a := obj.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		a["test/nudge"] = time.Now().Format(time.RFC3339Nano)
		obj.SetAnnotations(a)
		g.Expect(k8sClient.Update(ctx, obj)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}
