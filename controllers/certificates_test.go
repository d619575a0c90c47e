package controllers_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// userCert makes a CA and a leaf signed by it, valid from notBefore to notAfter (real time),
// PEM encoded, as a user or cert-manager would put in a Secret.
func userCert(notBefore, notAfter time.Time) (certPEM, keyPEM, caPEM []byte) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "user CA"},
		NotBefore: notBefore, NotAfter: notAfter.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "user"},
		NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

func serialOf(g Gomega, ns, name string) string {
	return cert(g, secret(g, ns, name).Data["tls.crt"]).SerialNumber.String()
}

func hasEvent(g Gomega, ns, reason string) {
	var evs eventsv1.EventList
	g.ExpectWithOffset(1, k8sClient.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
	reasons := []string{}
	for _, e := range evs.Items {
		reasons = append(reasons, e.Reason)
	}
	g.ExpectWithOffset(1, reasons).To(ContainElement(reason))
}

var _ = Describe("Certificates", Ordered, func() {
	var (
		ns                                   string
		in, out                              *scitunnelv1.StreamTunnel
		serverSerial, clientSerial, caSerial string
	)

	BeforeAll(func() {
		ns = newNamespace("certs")
		in = inbound(ns, "renewing", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Duration: &metav1.Duration{Duration: 3 * time.Hour}}
		})
		out = outbound(ns, "renewing-out", "", "renewing", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Duration: &metav1.Duration{Duration: 3 * time.Hour}}
		})
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		Expect(k8sClient.Create(ctx, out)).To(Succeed())
		Eventually(func(g Gomega) {
			serverSerial = serialOf(g, ns, "renewing-tls")
			clientSerial = serialOf(g, ns, "renewing-out-tls")
			caSerial = cert(g, secret(g, ns, "renewing-ca").Data["ca.crt"]).SerialNumber.String()
		}, timeout, interval).Should(Succeed())
		eventually(in, func(g Gomega) { g.Expect(in.Status.Certificates).To(HaveLen(3)) })
	})

	It("keeps a leaf certificate during the first two thirds of its lifetime", func() {
		fakeClock.SetTime(fakeClock.Now().Add(time.Hour))
		nudge(in)
		nudge(out)
		Consistently(func(g Gomega) {
			g.Expect(serialOf(g, ns, "renewing-tls")).To(Equal(serverSerial))
			g.Expect(serialOf(g, ns, "renewing-out-tls")).To(Equal(clientSerial))
		}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	})

	It("renews server, client and bundle certificates past two thirds of their lifetime, keeping the CA", func() {
		before := in.Status.Certificates
		fakeClock.SetTime(fakeClock.Now().Add(70 * time.Minute)) // 2h10m in: past 2/3 of 3h
		nudge(in)
		nudge(out)
		Eventually(func(g Gomega) {
			g.Expect(serialOf(g, ns, "renewing-tls")).NotTo(Equal(serverSerial))
			g.Expect(serialOf(g, ns, "renewing-out-tls")).NotTo(Equal(clientSerial))
			caCert := cert(g, secret(g, ns, "renewing-ca").Data["ca.crt"])
			g.Expect(caCert.SerialNumber.String()).To(Equal(caSerial))
			leaf := cert(g, secret(g, ns, "renewing-out-tls").Data["tls.crt"])
			g.Expect(leaf.CheckSignatureFrom(caCert)).To(Succeed())
			g.Expect(leaf.NotAfter.Sub(fakeClock.Now())).To(BeNumerically("~", 3*time.Hour, time.Minute))
		}, timeout, interval).Should(Succeed())
		eventually(in, func(g Gomega) {
			g.Expect(in.Status.Certificates).To(HaveLen(3))
			for i, c := range in.Status.Certificates {
				if c.Name == "ca" {
					g.Expect(c.NotAfter.Equal(before[i].NotAfter)).To(BeTrue())
					continue
				}
				g.Expect(c.NotAfter.After(before[i].NotAfter.Time)).To(BeTrue(), c.Name)
				g.Expect(c.RenewAfter.Before(c.NotAfter)).To(BeTrue())
			}
			expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
		})
		Eventually(func(g Gomega) { hasEvent(g, ns, "CertificateRenewed") }, timeout, interval).Should(Succeed())
	})

	It("creates no duplicates and re-issues nothing when the manager restarts", func() {
		kinds := func(g Gomega) map[string]int {
			counts := map[string]int{}
			var ds appsv1.DeploymentList
			g.Expect(k8sClient.List(ctx, &ds, client.InNamespace(ns))).To(Succeed())
			counts["deployments"] = len(ds.Items)
			var ss corev1.SecretList
			g.Expect(k8sClient.List(ctx, &ss, client.InNamespace(ns))).To(Succeed())
			counts["secrets"] = len(ss.Items)
			var svcs corev1.ServiceList
			g.Expect(k8sClient.List(ctx, &svcs, client.InNamespace(ns))).To(Succeed())
			counts["services"] = len(svcs.Items)
			var cms corev1.ConfigMapList
			g.Expect(k8sClient.List(ctx, &cms, client.InNamespace(ns), client.HasLabels{"scitunnel.io/tunnel"})).To(Succeed())
			counts["configmaps"] = len(cms.Items)
			return counts
		}
		var server, client string
		Eventually(func(g Gomega) {
			server, client = serialOf(g, ns, "renewing-tls"), serialOf(g, ns, "renewing-out-tls")
		}, timeout, interval).Should(Succeed())
		before := kinds(Default)
		Expect(before).To(Equal(map[string]int{"deployments": 2, "secrets": 4, "services": 2, "configmaps": 2}))

		stopManager()
		startManager()
		nudge(in)
		nudge(out)
		Consistently(func(g Gomega) {
			g.Expect(kinds(g)).To(Equal(before))
			g.Expect(serialOf(g, ns, "renewing-tls")).To(Equal(server))
			g.Expect(serialOf(g, ns, "renewing-out-tls")).To(Equal(client))
		}, 3*time.Second, 250*time.Millisecond).Should(Succeed())
		eventually(in, func(g Gomega) {
			expectCondition(g, in.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
		})
	})

	It("mounts a user's Secret and says when it is missing, invalid or expiring", func() {
		t := inbound(ns, "bring-your-own", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Source: scitunnelv1.CertificatesSecret,
				SecretRef: &scitunnelv1.LocalObjectReference{Name: "my-tls"}}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "SecretNotFound")
			g.Expect(c.Message).To(ContainSubstring("tls.crt, tls.key and ca.crt"))
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "SecretNotFound")
		})
		certPEM, keyPEM, caPEM := userCert(fakeClock.Now().Add(-time.Hour), fakeClock.Now().Add(30*24*time.Hour))
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-tls"},
			Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}}
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "SecretInvalid")
			g.Expect(c.Message).To(ContainSubstring("ca.crt"))
		})
		s.Data["ca.crt"] = caPEM
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Valid")
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "")
		})
		var d appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key(t), &d) }, timeout, interval).Should(Succeed())
		Expect(d.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.SecretName", "my-tls")))

		By("close to expiry, Degraded asks for a replacement")
		certPEM, keyPEM, caPEM = userCert(fakeClock.Now().Add(-20*24*time.Hour), fakeClock.Now().Add(24*time.Hour))
		s.Data = map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM}
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "CertificateExpiring")
			g.Expect(c.Message).To(ContainSubstring("replace it before then"))
		})

		By("expired, it is not Ready")
		certPEM, keyPEM, caPEM = userCert(fakeClock.Now().Add(-20*24*time.Hour), fakeClock.Now().Add(-time.Hour))
		s.Data = map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM}
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "CertificateExpired")
			expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionFalse, "CertificateNotReady")
		})

		By("a spec change still reaches the Deployment while the certificate is expired")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			t.Spec.Replicas = ptr(int32(2))
			g.Expect(k8sClient.Update(ctx, t)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			var d appsv1.Deployment
			g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
			g.Expect(*d.Spec.Replicas).To(BeEquivalentTo(2))
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			g.Expect(t.Status.ObservedGeneration).To(Equal(t.Generation))
		}, timeout, interval).Should(Succeed())
	})

	It("asks cert-manager for a Certificate (unstructured, so cert-manager stays optional)", func() {
		t := inbound(ns, "managed", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Certificates = &scitunnelv1.CertificatesSpec{Source: scitunnelv1.CertificatesCertManager,
				IssuerRef: &scitunnelv1.IssuerReference{Name: "site-ca", Kind: "ClusterIssuer"}}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "CertManagerNotInstalled")
			g.Expect(c.Message).To(ContainSubstring("install cert-manager, or use source Operator"))
		})

		By("installing cert-manager's Certificate API")
		dir := GinkgoT().TempDir()
		Expect(os.WriteFile(filepath.Join(dir, "certificates.yaml"), []byte(certManagerCRD), 0o644)).To(Succeed())
		_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{dir}})
		Expect(err).NotTo(HaveOccurred())
		nudge(t)
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("cert-manager.io/v1")
		u.SetKind("Certificate")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "managed"}, u)).To(Succeed())
			spec := u.Object["spec"].(map[string]any)
			g.Expect(spec["secretName"]).To(Equal("managed-tls"))
			g.Expect(spec["issuerRef"]).To(Equal(map[string]any{"name": "site-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}))
			g.Expect(spec["dnsNames"]).To(ContainElement("managed." + ns + ".svc"))
			g.Expect(spec["uris"]).To(Equal([]any{"spiffe://test.scitunnel/ns/" + ns + "/streamtunnel/managed"}))
			g.Expect(spec["duration"]).To(Equal("2160h0m0s"))
			g.Expect(spec["renewBefore"]).To(Equal("720h0m0s"))
			g.Expect(u.GetOwnerReferences()).To(HaveLen(1))
		}, timeout, interval).Should(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionFalse, "Issuing")
		})

		By("cert-manager writing the Secret makes the certificate ready")
		// cert-manager labels the Secret as the Certificate's secretTemplate says: that is what
		// puts it in the manager's cache.
		labels, _, err := unstructured.NestedStringMap(u.Object, "spec", "secretTemplate", "labels")
		Expect(err).NotTo(HaveOccurred())
		Expect(labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "scitunnel-operator"))
		certPEM, keyPEM, caPEM := userCert(fakeClock.Now().Add(-time.Hour), fakeClock.Now().Add(90*24*time.Hour))
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "managed-tls", Labels: labels},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM},
		})).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Valid")
		})
	})

	It("leaves a cert-manager Certificate of the tunnel's name that is not its own untouched", func() {
		certificateNameConflict(ns) // after the test above: cert-manager's API is installed
	})
})

// certManagerCRD stands in for cert-manager's Certificate CRD: the group, version and kind the
// operator writes, with the schema left open.
const certManagerCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`
