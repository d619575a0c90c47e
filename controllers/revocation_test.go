package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
)

func identity(ns, name string) string { return child.Identity("test.scitunnel", ns, name) }

func configHash(g Gomega, t *scitunnelv1.StreamTunnel) string {
	var d appsv1.Deployment
	g.ExpectWithOffset(1, k8sClient.Get(ctx, key(t), &d)).To(Succeed())
	return d.Spec.Template.Annotations[child.AnnotationConfigHash]
}

var _ = Describe("Revoking a peer", func() {
	It("removes a refused peer's client certificate and its identity from the Inbound's allow-list, without rolling the Inbound", func() {
		producerNS, consumerNS, partnerNS := newNamespace("rv-producer"), newNamespace("rv-consumer"), newNamespace("rv-partner")
		in := inbound(producerNS, "source", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Inbound.AllowedPeerNamespaces = []string{consumerNS, partnerNS}
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Duration: &metav1.Duration{Duration: 24 * time.Hour}}
		})
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		kept := outbound(consumerNS, "kept", producerNS, "source")
		refused := outbound(partnerNS, "refused", producerNS, "source", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Duration: &metav1.Duration{Duration: 8760 * time.Hour}}
		})
		Expect(k8sClient.Create(ctx, kept)).To(Succeed())
		Expect(k8sClient.Create(ctx, refused)).To(Succeed())
		bundle := child.BundleIdentity("test.scitunnel", producerNS, "source")

		By("an operator-managed Inbound accepts exactly the identities it issued (no allowedClients set)")
		eventually(in, func(g Gomega) {
			g.Expect(proxyConfig(g, in).TLS.AllowedSANs).To(ConsistOf(bundle,
				identity(consumerNS, "kept"), identity(partnerNS, "refused")))
		})
		By("the Inbound's duration caps the peer's certificate")
		Eventually(func(g Gomega) {
			leaf := cert(g, secret(g, partnerNS, "refused-tls").Data["tls.crt"])
			g.Expect(leaf.NotAfter.Sub(leaf.NotBefore)).To(BeNumerically("<=", 24*time.Hour+10*time.Minute))
			secret(g, consumerNS, "kept-tls")
		}, timeout, interval).Should(Succeed())
		var hash string
		Eventually(func(g Gomega) { hash = configHash(g, in); g.Expect(hash).NotTo(BeEmpty()) }, timeout, interval).Should(Succeed())

		By("taking the partner's namespace off allowedPeerNamespaces")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(in), in)).To(Succeed())
			in.Spec.Inbound.AllowedPeerNamespaces = []string{consumerNS}
			g.Expect(k8sClient.Update(ctx, in)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: partnerNS, Name: "refused-tls"}, &corev1.Secret{}))
		}, timeout, interval).Should(BeTrue(), "the refused peer's client certificate Secret is removed")
		eventually(refused, func(g Gomega) {
			expectCondition(g, refused.Status.Conditions, "Ready", metav1.ConditionFalse, "RemoteNotFoundOrNotAllowed")
			g.Expect(refused.Status.Certificates).To(BeEmpty())
		})
		Eventually(func(g Gomega) { hasEvent(g, partnerNS, "ClientCertificateRemoved") }, timeout, interval).Should(Succeed())
		eventually(in, func(g Gomega) {
			g.Expect(proxyConfig(g, in).TLS.AllowedSANs).To(ConsistOf(bundle, identity(consumerNS, "kept")))
			g.Expect(in.Status.Peers).To(Equal([]string{consumerNS + "/kept"}))
		})
		Expect(configHash(Default, in)).To(Equal(hash), "the allow-list changes in place: the Inbound's pods do not roll")
		Expect(secret(Default, consumerNS, "kept-tls").Data).To(HaveKey("tls.crt"))

		By("a deleted peer leaves the allow-list too")
		Expect(k8sClient.Delete(ctx, kept)).To(Succeed())
		eventually(in, func(g Gomega) {
			g.Expect(proxyConfig(g, in).TLS.AllowedSANs).To(ConsistOf(bundle))
		})
	})
})
