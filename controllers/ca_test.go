package controllers_test

import (
	"crypto/x509"
	"encoding/pem"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/certificates"
)

// certs parses every certificate of a PEM bundle, in order.
func certs(g Gomega, data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		g.ExpectWithOffset(1, err).NotTo(HaveOccurred())
		out = append(out, c)
	}
}

func serials(cs []*x509.Certificate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.SerialNumber.String()
	}
	return out
}

func signedBy(g Gomega, ns, name string, ca *x509.Certificate) {
	leaf := cert(g, secret(g, ns, name).Data["tls.crt"])
	g.ExpectWithOffset(1, leaf.CheckSignatureFrom(ca)).To(Succeed(), "%s signed by %s", name, ca.Subject.CommonName)
}

var _ = Describe("The Inbound's CA", func() {
	It("is reported CAUnavailable, and not replaced, when its Secret is deleted or corrupt", func() {
		ns := newNamespace("ca-lost")
		in := inbound(ns, "keeper")
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		var original *corev1.Secret
		Eventually(func(g Gomega) {
			original = secret(g, ns, "keeper-ca")
			secret(g, ns, "keeper-tls")
		}, timeout, interval).Should(Succeed())
		ca := cert(Default, original.Data["ca.crt"])
		eventually(in, func(g Gomega) {
			g.Expect(in.Annotations).To(HaveKeyWithValue(certificates.AnnotationCAFingerprint, certificates.Fingerprint(ca.Raw)))
			expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
		})

		By("deleting the CA Secret")
		Expect(k8sClient.Delete(ctx, original)).To(Succeed())
		eventually(in, func(g Gomega) {
			c := expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "CAUnavailable")
			g.Expect(c.Message).To(ContainSubstring("restore the Secret from a backup"))
			expectCondition(g, in.Status.Conditions, "Degraded", metav1.ConditionTrue, "CAUnavailable")
		})
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keeper-ca"}, &corev1.Secret{}))
		}, 2*time.Second, 200*time.Millisecond).Should(BeTrue(), "no new CA is made")

		By("restoring it from a backup")
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keeper-ca"},
			Data: map[string][]byte{"ca.crt": original.Data["ca.crt"], "ca.key": original.Data["ca.key"]}})).To(Succeed())
		eventually(in, func(g Gomega) {
			expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
		})

		By("corrupting its key")
		Eventually(func(g Gomega) {
			s := secret(g, ns, "keeper-ca")
			s.Data["ca.key"] = []byte("garbage")
			g.Expect(k8sClient.Update(ctx, s)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		eventually(in, func(g Gomega) {
			c := expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "CAUnavailable")
			g.Expect(c.Message).To(ContainSubstring("unreadable"))
		})
		Consistently(func(g Gomega) {
			s := secret(g, ns, "keeper-ca")
			g.Expect(s.Data["ca.crt"]).To(Equal(original.Data["ca.crt"]))
			g.Expect(s.Data["ca.key"]).To(Equal([]byte("garbage")))
		}, 2*time.Second, 200*time.Millisecond).Should(Succeed(), "the corrupt CA is not overwritten")
	})

	It("rotates on request: both CAs trusted for the overlap, leaves re-issued, then only the new CA", func() {
		ns := newNamespace("ca-rotate")
		in := inbound(ns, "rotor", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Duration: &metav1.Duration{Duration: 3 * time.Hour}}
		})
		out := outbound(ns, "rotor-out", "", "rotor")
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		Expect(k8sClient.Create(ctx, out)).To(Succeed())
		var oldCA *x509.Certificate
		Eventually(func(g Gomega) {
			oldCA = cert(g, secret(g, ns, "rotor-ca").Data["ca.crt"])
			signedBy(g, ns, "rotor-out-tls", oldCA)
			signedBy(g, ns, "rotor-bundle", oldCA)
		}, timeout, interval).Should(Succeed())

		By("asking for a rotation")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(in), in)).To(Succeed())
			g.Expect(in.Annotations).To(HaveKey(certificates.AnnotationCAFingerprint))
			in.Annotations[certificates.AnnotationRotateCA] = "2026-12-08"
			g.Expect(k8sClient.Update(ctx, in)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		var newCA *x509.Certificate
		Eventually(func(g Gomega) {
			trusted := certs(g, secret(g, ns, "rotor-ca").Data["ca.crt"])
			g.Expect(trusted).To(HaveLen(2))
			g.Expect(trusted[1].SerialNumber).To(Equal(oldCA.SerialNumber))
			newCA = trusted[0]
			want := serials(trusted)
			for _, name := range []string{"rotor-tls", "rotor-bundle", "rotor-out-tls"} {
				g.Expect(serials(certs(g, secret(g, ns, name).Data["ca.crt"]))).To(Equal(want), name)
			}
			signedBy(g, ns, "rotor-out-tls", newCA)
			signedBy(g, ns, "rotor-bundle", newCA)
			// Sites that still hold the old bundle trust only the old CA: the server keeps it.
			signedBy(g, ns, "rotor-tls", oldCA)
		}, timeout, interval).Should(Succeed())
		eventually(in, func(g Gomega) {
			g.Expect(in.Annotations).To(HaveKeyWithValue(certificates.AnnotationCAFingerprint, certificates.Fingerprint(newCA.Raw)))
		})
		Eventually(func(g Gomega) { hasEvent(g, ns, "CARotated") }, timeout, interval).Should(Succeed())

		By("after the overlap (one leaf lifetime) only the new CA is trusted")
		fakeClock.SetTime(fakeClock.Now().Add(3*time.Hour + time.Minute))
		nudge(in)
		nudge(out)
		Eventually(func(g Gomega) {
			only := []string{newCA.SerialNumber.String()}
			for _, name := range []string{"rotor-ca", "rotor-tls", "rotor-bundle", "rotor-out-tls"} {
				g.Expect(serials(certs(g, secret(g, ns, name).Data["ca.crt"]))).To(Equal(only), name)
			}
			signedBy(g, ns, "rotor-tls", newCA)
			signedBy(g, ns, "rotor-out-tls", newCA)
			g.Expect(secret(g, ns, "rotor-ca").Data).NotTo(HaveKey("previous-ca.key"))
		}, timeout, interval).Should(Succeed())
		eventually(in, func(g Gomega) {
			expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
		})
	})
})
