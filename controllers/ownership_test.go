package controllers_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// A shared cluster: the operator never touches an object of a child's name that its tunnel
// does not control, and says why a child cannot be written.

// recoverTimeout covers a tunnel's steady recheck of a name conflict (the user's object may
// be outside the cache, so its removal sends no event) and the passes that follow it.
const recoverTimeout = 90 * time.Second

// userObjects are objects a user made before a StreamTunnel "web" arrived, each with a name
// one of its children would take.
var userObjects = map[string]func(ns string) client.Object{
	"Service": func(ns string) client.Object {
		return &corev1.Service{ObjectMeta: userMeta(ns, "web"), Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "user-web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		}}
	},
	"Deployment": func(ns string) client.Object {
		labels := map[string]string{"app": "user-web"}
		return &appsv1.Deployment{ObjectMeta: userMeta(ns, "web"), Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		}}
	},
	"ConfigMap": func(ns string) client.Object {
		return &corev1.ConfigMap{ObjectMeta: userMeta(ns, "web-config"), Data: map[string]string{"index.html": "hello"}}
	},
	"Secret web-tls": func(ns string) client.Object { return userSecret(ns, "web-tls") },
	"Secret web-ca":  func(ns string) client.Object { return userSecret(ns, "web-ca") },
	"Secret web-bundle": func(ns string) client.Object {
		return userSecret(ns, "web-bundle")
	},
}

func userMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"owner": "user"}}
}

func userSecret(ns, name string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: userMeta(ns, name), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"password": []byte("user's own")}}
}

// expectUntouched: the user's object is as the user left it: same resourceVersion (nothing
// was written to it) and no owner reference (the tunnel's deletion cannot collect it).
func expectUntouched(g Gomega, obj client.Object, resourceVersion string) {
	got := obj.DeepCopyObject().(client.Object)
	g.ExpectWithOffset(1, k8sClient.Get(ctx, key(obj), got)).To(Succeed())
	g.ExpectWithOffset(1, got.GetResourceVersion()).To(Equal(resourceVersion), "%s was written to", obj.GetName())
	g.ExpectWithOffset(1, got.GetOwnerReferences()).To(BeEmpty(), "%s got an owner", obj.GetName())
}

// collectGarbage does what the garbage collector (which envtest does not run) does once a
// tunnel is gone: it deletes the objects that name it as their owner.
func collectGarbage(ns string, owner types.UID) {
	lists := []client.ObjectList{&corev1.ServiceList{}, &appsv1.DeploymentList{}, &corev1.ConfigMapList{}, &corev1.SecretList{}, &networkingv1.NetworkPolicyList{}}
	for _, l := range lists {
		ExpectWithOffset(1, k8sClient.List(ctx, l, client.InNamespace(ns))).To(Succeed())
		ExpectWithOffset(1, meta.EachListItem(l, func(o runtime.Object) error {
			obj := o.(client.Object)
			for _, ref := range obj.GetOwnerReferences() {
				if ref.UID == owner {
					return client.IgnoreNotFound(k8sClient.Delete(ctx, obj))
				}
			}
			return nil
		})).To(Succeed())
	}
}

func nameConflict(g Gomega, t *scitunnelv1.StreamTunnel, names string) {
	c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "NameConflict")
	g.ExpectWithOffset(1, c.Message).To(ContainSubstring(names))
	g.ExpectWithOffset(1, c.Message).To(ContainSubstring("rename the tunnel"))
}

var _ = Describe("A child's name taken by a user's object", func() {
	DescribeTable("leaves the object untouched, says so, and recovers once it is gone",
		func(kind, names string) {
			ns := newNamespace("taken")
			user := userObjects[kind](ns)
			Expect(k8sClient.Create(ctx, user)).To(Succeed())
			rv := user.GetResourceVersion()

			By("the tunnel reports the conflict and writes nothing to the user's object")
			t := inbound(ns, "web")
			Expect(k8sClient.Create(ctx, t)).To(Succeed())
			eventually(t, func(g Gomega) { nameConflict(g, t, names) })
			expectUntouched(Default, user, rv)

			By("deleting the tunnel leaves the user's object")
			Expect(k8sClient.Delete(ctx, t)).To(Succeed())
			Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, key(t), &scitunnelv1.StreamTunnel{}))
			}, timeout, interval).Should(BeTrue())
			collectGarbage(ns, t.UID)
			expectUntouched(Default, user, rv)

			By("once the user removes the object, a tunnel of that name gets its child and becomes Ready")
			t = inbound(ns, "web")
			Expect(k8sClient.Create(ctx, t)).To(Succeed())
			eventually(t, func(g Gomega) { nameConflict(g, t, names) })
			expectUntouched(Default, user, rv)
			Expect(k8sClient.Delete(ctx, user)).To(Succeed())
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(user), user)).To(Succeed())
				ownedBy(g, user, t)
			}, recoverTimeout, interval).Should(Succeed())
			setDeploymentAvailable(t, 1)
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
				expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "")
				expectCondition(g, t.Status.Conditions, "ProxyAvailable", metav1.ConditionTrue, "")
				expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionTrue, "")
			}, recoverTimeout, interval).Should(Succeed())
		},
		Entry("the Service", "Service", "Service web"),
		Entry("the proxy Deployment", "Deployment", "Deployment web"),
		Entry("the ConfigMap", "ConfigMap", "ConfigMap web-config"),
		Entry("the certificate Secret", "Secret web-tls", "Secret web-tls"),
		Entry("the CA Secret", "Secret web-ca", "Secret web-ca"),
		Entry("the connection-bundle Secret", "Secret web-bundle", "Secret web-bundle"),
	)
})

// certificateNameConflict: a cert-manager Certificate of the tunnel's name that is not the
// tunnel's stays as it is. It runs in the Certificates suite, once cert-manager's API is in.
func certificateNameConflict(ns string) {
	user := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
		"metadata": map[string]any{"namespace": ns, "name": "portal"},
		"spec":     map[string]any{"secretName": "portal-www", "issuerRef": map[string]any{"name": "letsencrypt"}},
	}}
	Expect(k8sClient.Create(ctx, user)).To(Succeed())
	rv := user.GetResourceVersion()
	t := inbound(ns, "portal", func(t *scitunnelv1.StreamTunnel) {
		t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Source: scitunnelv1.CertificatesCertManager,
			IssuerRef: &scitunnelv1.IssuerReference{Name: "site-ca", Kind: "ClusterIssuer"}}
	})
	Expect(k8sClient.Create(ctx, t)).To(Succeed())
	eventually(t, func(g Gomega) {
		c := expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "NameConflict")
		g.Expect(c.Message).To(ContainSubstring("Certificate portal"))
		nameConflict(g, t, "Certificate portal")
	})
	expectUntouched(Default, user, rv)
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(user.GroupVersionKind())
	Expect(k8sClient.Get(ctx, key(user), got)).To(Succeed())
	Expect(got.Object["spec"]).To(Equal(user.Object["spec"]))

	By("once the user removes it, the tunnel's Certificate takes the name")
	Expect(k8sClient.Delete(ctx, user)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, key(user), got)).To(Succeed())
		ownedBy(g, got, t)
	}, recoverTimeout, interval).Should(Succeed())
	eventually(t, func(g Gomega) {
		expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "Issuing")
	})

	By("a user's Secret of the name cert-manager would write: no Certificate asks it to")
	sec := userSecret(ns, "vault-tls")
	Expect(k8sClient.Create(ctx, sec)).To(Succeed())
	vault := inbound(ns, "vault", func(t *scitunnelv1.StreamTunnel) {
		t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Source: scitunnelv1.CertificatesCertManager,
			IssuerRef: &scitunnelv1.IssuerReference{Name: "site-ca", Kind: "ClusterIssuer"}}
	})
	Expect(k8sClient.Create(ctx, vault)).To(Succeed())
	eventually(vault, func(g Gomega) { nameConflict(g, vault, "Secret vault-tls") })
	expectUntouched(Default, sec, sec.GetResourceVersion())
	Expect(apierrors.IsNotFound(k8sClient.Get(ctx, key(vault), got))).To(BeTrue(), "a Certificate would have cert-manager overwrite the Secret")
}

var _ = Describe("A child the API server refuses", func() {
	It("puts the API server's answer in Degraded, and clears it once the apply succeeds", func() {
		ns := newNamespace("refused")
		t := inbound(ns, "greedy", func(t *scitunnelv1.StreamTunnel) {
			// Tolerations are Kubernetes' own type, passed through unchecked by the CRD: the
			// Deployment's validation is the first to refuse a bad key.
			t.Spec.Pod = &scitunnelv1.ProxyPodSpec{Tolerations: []corev1.Toleration{
				{Key: "not a key!", Operator: corev1.TolerationOpExists},
			}}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "ApplyFailed")
			g.Expect(c.Message).To(ContainSubstring("Deployment greedy"))
			g.Expect(c.Message).To(ContainSubstring("tolerations"))
		})

		By("fixing the spec clears it")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			t.Spec.Pod.Tolerations[0].Key = "dedicated"
			g.Expect(k8sClient.Update(ctx, t)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func() error { return k8sClient.Get(ctx, key(t), &appsv1.Deployment{}) }, timeout, interval).Should(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "AsExpected")
		})
	})
})

var _ = Describe("A tunnelRef into a namespace that does not allow yours", func() {
	It("answers the same whether the tunnel there exists, is an Outbound end, or not", func() {
		producerNS := newNamespace("private")
		consumerNS := newNamespace("curious")
		Expect(k8sClient.Create(ctx, inbound(producerNS, "detector"))).To(Succeed())
		Expect(k8sClient.Create(ctx, outbound(producerNS, "local-out", producerNS, "detector"))).To(Succeed())

		probes := map[string]*scitunnelv1.StreamTunnel{
			"detector":  outbound(consumerNS, "to-existing", producerNS, "detector"),
			"local-out": outbound(consumerNS, "to-outbound", producerNS, "local-out"),
			"ghost":     outbound(consumerNS, "to-missing", producerNS, "ghost"),
		}
		for _, p := range probes {
			Expect(k8sClient.Create(ctx, p)).To(Succeed())
		}
		// The answer to each, with the name the user wrote taken out: it must not differ.
		answer := func(g Gomega, target string, p *scitunnelv1.StreamTunnel) []string {
			g.Expect(k8sClient.Get(ctx, key(p), p)).To(Succeed())
			var out []string
			for _, typ := range []string{"Ready", "Degraded", "CertificateReady"} {
				c := condition(p.Status.Conditions, typ)
				out = append(out, strings.Join([]string{typ, string(c.Status), c.Reason,
					strings.ReplaceAll(c.Message, producerNS+"/"+target, "<ref>")}, " "))
			}
			return out
		}
		Eventually(func(g Gomega) {
			want := answer(g, "ghost", probes["ghost"])
			g.Expect(want[1]).To(ContainSubstring("Degraded True RemoteNotFoundOrNotAllowed"))
			g.Expect(answer(g, "detector", probes["detector"])).To(Equal(want))
			g.Expect(answer(g, "local-out", probes["local-out"])).To(Equal(want))
		}, timeout, interval).Should(Succeed())
	})
})
