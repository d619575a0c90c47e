package controllers_test

import (
	"crypto/x509"
	"encoding/json"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/certificates"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

func ownedBy(g Gomega, obj metav1.Object, t *scitunnelv1.StreamTunnel) {
	refs := obj.GetOwnerReferences()
	g.ExpectWithOffset(1, refs).To(HaveLen(1), "owner references of %s", obj.GetName())
	g.ExpectWithOffset(1, refs[0].UID).To(Equal(t.UID))
	g.ExpectWithOffset(1, refs[0].Kind).To(Equal("StreamTunnel"))
	g.ExpectWithOffset(1, *refs[0].Controller).To(BeTrue())
	g.ExpectWithOffset(1, *refs[0].BlockOwnerDeletion).To(BeTrue())
}

var _ = Describe("StreamTunnel children", func() {
	It("creates the Deployment, Service, ConfigMap and certificate Secrets of an Inbound end", func() {
		ns := newNamespace("children")
		t := inbound(ns, "detector", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.ParallelStreams = ptr(int32(3))
			t.Spec.Inbound.Producers = []scitunnelv1.HostPort{"daq-a.daq.svc:5074", "daq-b.daq.svc:5075"}
			t.Spec.Inbound.ListenPorts = nil
			t.Spec.Inbound.ListenPortRange = &scitunnelv1.PortRange{First: 5100, Last: 5102}
			t.Spec.Inbound.AllowedClients = []string{"spiffe://partner/consumer"}
			t.Spec.Scitag = &scitunnelv1.TunnelScitag{Experiment: "atlas", Activity: "Production Output"}
			t.Spec.Telemetry = &scitunnelv1.TelemetrySpec{SamplingRate: ptr(int32(512)), Collectors: []scitunnelv1.HostPort{"sflow-rt.monitoring:6343"}}
			t.Spec.Pod = &scitunnelv1.ProxyPodSpec{
				NodeSelector: map[string]string{"dtn": "true"},
				Tolerations:  []corev1.Toleration{{Key: "dtn", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
				Labels:       map[string]string{"team": "daq"},
			}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())

		By("the ConfigMap holding dataplane/config.Config, routes mapped round-robin")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			c := proxyConfig(g, t)
			g.Expect(c.Tunnel).To(Equal(ns + "/detector"))
			g.Expect(c.Role).To(Equal(config.Inbound))
			g.Expect(c.Protocol).To(Equal(config.TLS))
			g.Expect(c.Routes).To(Equal([]config.Route{
				{ListenPort: 5100, Target: "daq-a.daq.svc:5074"},
				{ListenPort: 5101, Target: "daq-b.daq.svc:5075"},
				{ListenPort: 5102, Target: "daq-a.daq.svc:5074"},
			}))
			g.Expect(c.TLS.CertFile).To(Equal("/etc/scitunnel/tls/tls.crt"))
			g.Expect(c.TLS.AllowedSANs).To(ContainElements("spiffe://partner/consumer",
				"spiffe://test.scitunnel/ns/"+ns+"/streamtunnel/detector/bundle"))
			g.Expect(c.Scitag).To(Equal(&config.Scitag{ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output", Entropy: true}), "entropy on by default")
			g.Expect(c.Telemetry.SamplingRate).To(Equal(512))
			g.Expect(c.Telemetry.Collectors).To(Equal([]string{"sflow-rt.monitoring:6343"}))
			g.Expect(c.Telemetry.HeaderBytes).To(Equal(config.HeaderBytesTransport), "no payload byte to the collectors")
			g.Expect(c.Telemetry.RegistryFile).To(Equal("/etc/scitunnel/registry.json"))
		}, timeout, interval).Should(Succeed())
		var cm corev1.ConfigMap
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "detector-config"}, &cm)).To(Succeed())
		Expect(cm.Data["registry.json"]).To(ContainSubstring(`"expName":"atlas"`))
		ownedBy(Default, &cm, t)

		By("the Service with one port per stream")
		var svc corev1.Service
		Expect(k8sClient.Get(ctx, key(t), &svc)).To(Succeed())
		ownedBy(Default, &svc, t)
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
		Expect(svc.Spec.Selector).To(Equal(map[string]string{"app.kubernetes.io/name": "scitunnel-proxy", "scitunnel.io/tunnel": "detector"}))
		Expect(svc.Spec.Ports).To(HaveLen(3))
		Expect(svc.Spec.Ports[2].Port).To(BeEquivalentTo(5102))
		Expect(svc.Spec.Ports[2].Protocol).To(Equal(corev1.ProtocolTCP))

		By("the CA, the server certificate and the connection bundle (the certificates controller's)")
		Eventually(func(g Gomega) { secret(g, ns, "detector-bundle") }, timeout, interval).Should(Succeed())
		ca := secret(Default, ns, "detector-ca")
		ownedBy(Default, ca, t)
		caCert := cert(Default, ca.Data["ca.crt"])
		Expect(caCert.IsCA).To(BeTrue())
		tls := secret(Default, ns, "detector-tls")
		ownedBy(Default, tls, t)
		Expect(tls.Type).To(Equal(corev1.SecretTypeTLS))
		server := cert(Default, tls.Data["tls.crt"])
		Expect(server.CheckSignatureFrom(caCert)).To(Succeed())
		Expect(server.DNSNames).To(ContainElements("detector", "detector."+ns+".svc", "detector."+ns+".svc.cluster.local"))
		Expect(server.IPAddresses).NotTo(BeEmpty()) // the ClusterIP
		Expect(server.IPAddresses[0].String()).To(Equal(svc.Spec.ClusterIP))
		Expect(server.ExtKeyUsage).To(ContainElement(x509.ExtKeyUsageServerAuth))
		Expect(server.PublicKeyAlgorithm).To(Equal(x509.ECDSA))
		Expect(tls.Data["ca.crt"]).To(Equal(ca.Data["ca.crt"]))
		bundle := secret(Default, ns, "detector-bundle")
		ownedBy(Default, bundle, t)
		client := cert(Default, bundle.Data["tls.crt"])
		Expect(client.CheckSignatureFrom(caCert)).To(Succeed())
		Expect(client.URIs).To(HaveLen(1))
		Expect(client.URIs[0].String()).To(Equal("spiffe://test.scitunnel/ns/" + ns + "/streamtunnel/detector/bundle"))
		var info certificates.BundleInfo
		Expect(json.Unmarshal(bundle.Data["bundle.json"], &info)).To(Succeed())
		Expect(info.Ports).To(Equal([]int{5100, 5101, 5102}))
		Expect(info.Address).To(Equal("detector." + ns + ".svc"))

		By("the Deployment (once the certificates are ready): proxy and sFlow sidecar, restricted security, probes, mounts, reflection sysctl")
		var d appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key(t), &d) }, timeout, interval).Should(Succeed())
		ownedBy(Default, &d, t)
		Expect(*d.Spec.Replicas).To(BeEquivalentTo(1))
		pod := d.Spec.Template.Spec
		Expect(*pod.AutomountServiceAccountToken).To(BeFalse())
		Expect(pod.NodeSelector).To(Equal(map[string]string{"dtn": "true"}))
		Expect(pod.Tolerations).To(HaveLen(1))
		Expect(d.Spec.Template.Labels).To(HaveKeyWithValue("team", "daq"))
		Expect(d.Spec.Template.Annotations).To(HaveKey(child.AnnotationConfigHash))
		Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
		Expect(pod.SecurityContext.Sysctls).To(ContainElement(corev1.Sysctl{Name: "net.ipv6.flowlabel_reflect", Value: "1"}))
		Expect(pod.Containers).To(HaveLen(2))
		proxy, sidecar := pod.Containers[0], pod.Containers[1]
		Expect(proxy.Name).To(Equal("proxy"))
		Expect(proxy.Image).To(Equal("scitunnel-dataplane:test"))
		Expect(proxy.Args).To(Equal([]string{"run", "--config", "/etc/scitunnel/config.json"}))
		Expect(*proxy.SecurityContext.RunAsNonRoot).To(BeTrue())
		Expect(*proxy.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(*proxy.SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
		Expect(proxy.SecurityContext.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
		Expect(proxy.SecurityContext.Capabilities.Add).To(BeEmpty())
		Expect(proxy.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		Expect(proxy.ReadinessProbe.HTTPGet.Port.IntValue()).To(Equal(9090))
		Expect(proxy.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(proxy.VolumeMounts).To(ContainElements(
			corev1.VolumeMount{Name: "config", MountPath: "/etc/scitunnel", ReadOnly: true},
			corev1.VolumeMount{Name: "tls", MountPath: "/etc/scitunnel/tls", ReadOnly: true}))
		Expect(sidecar.Name).To(Equal("sflow"))
		Expect(sidecar.Args).To(Equal([]string{"sflow", "--config", "/etc/scitunnel/config.json"}))
		Expect(sidecar.SecurityContext.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
		Expect(sidecar.SecurityContext.Capabilities.Add).To(Equal([]corev1.Capability{"NET_RAW"}))
		Expect(*sidecar.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(*sidecar.SecurityContext.RunAsNonRoot).To(BeTrue())
		Expect(*sidecar.SecurityContext.RunAsUser).To(BeEquivalentTo(65532))
		// NET_RAW reaches the non-root sampler through the binary's file capability.
		Expect(*sidecar.SecurityContext.AllowPrivilegeEscalation).To(BeTrue())
		Expect(sidecar.LivenessProbe.HTTPGet.Port.IntValue()).To(Equal(9091))
		var tlsVol *corev1.Volume
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == "tls" {
				tlsVol = &pod.Volumes[i]
			}
		}
		Expect(tlsVol).NotTo(BeNil())
		Expect(tlsVol.Secret.SecretName).To(Equal("detector-tls"))

		By("status: endpoints, tag, certificates, and not Ready while no pod is available")
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Endpoint).To(Equal("detector." + ns + ".svc:5100-5102"))
			g.Expect(t.Status.Scitag).NotTo(BeNil())
			g.Expect(t.Status.Scitag.Name).To(Equal("atlas.Production_Output"))
			g.Expect(t.Status.Scitag.FlowLabel).To(BeEquivalentTo(65600))
			g.Expect(t.Status.Scitag.FlowLabelHex).To(Equal("0x10040"))
			g.Expect(t.Status.Certificates).To(HaveLen(3))
			g.Expect(t.Status.Selector).To(Equal("app.kubernetes.io/name=scitunnel-proxy,scitunnel.io/tunnel=detector"))
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
			expectCondition(g, t.Status.Conditions, "ProxyAvailable", metav1.ConditionFalse, "NoPodAvailable")
			expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionFalse, "ProxyNotAvailable")
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "AsExpected")
			g.Expect(t.Status.ObservedGeneration).To(Equal(t.Generation))
			for _, c := range t.Status.Conditions {
				g.Expect(c.ObservedGeneration).To(Equal(t.Generation))
			}
		})
	})

	It("exposes an Inbound end as a LoadBalancer with the user's settings, reports its address, and places pods as asked", func() {
		ns := newNamespace("exposure")
		affinity := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "site.example.org/dtn", Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}}}}}}}
		spread := []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
			WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"scitunnel.io/tunnel": "edge"}}}}
		resources := &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("4Gi")}}
		sidecarResources := &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")}}
		t := inbound(ns, "edge", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Exposure = &scitunnelv1.ExposureSpec{Type: corev1.ServiceTypeLoadBalancer,
				Annotations:       map[string]string{"metallb.universe.tf/address-pool": "dtn"},
				LoadBalancerClass: ptr("example.org/dtn-lb")}
			t.Spec.Pod = &scitunnelv1.ProxyPodSpec{Affinity: affinity, TopologySpreadConstraints: spread,
				PriorityClassName: "dtn-critical", Resources: resources, SidecarResources: sidecarResources,
				Annotations: map[string]string{"prometheus.io/scrape": "true"}}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())

		var svc corev1.Service
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), &svc)).To(Succeed())
			g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
			g.Expect(svc.Annotations).To(HaveKeyWithValue("metallb.universe.tf/address-pool", "dtn"))
			g.Expect(svc.Spec.LoadBalancerClass).To(HaveValue(Equal("example.org/dtn-lb")))
			g.Expect(svc.Spec.Ports).To(HaveLen(1))
			g.Expect(svc.Spec.Ports[0].NodePort).NotTo(BeZero(), "the API server allocates a node port")
		}, timeout, interval).Should(Succeed())
		nodePort := svc.Spec.Ports[0].NodePort

		By("the load balancer's address becomes the endpoint peers dial, and goes into the bundle")
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.10"}}
		Expect(k8sClient.Status().Update(ctx, &svc)).To(Succeed())
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Endpoint).To(Equal("192.0.2.10:5100"))
			g.Expect(t.Status.Endpoints).To(ContainElements(
				scitunnelv1.TunnelEndpoint{Type: "NodePort", Address: "*", Ports: []int32{nodePort}},
				scitunnelv1.TunnelEndpoint{Type: "LoadBalancer", Address: "192.0.2.10", Ports: []int32{5100}}))
			var info certificates.BundleInfo
			g.Expect(json.Unmarshal(secret(g, ns, "edge-bundle").Data["bundle.json"], &info)).To(Succeed())
			g.Expect(info.Address).To(Equal("192.0.2.10"))
		})

		By("the pod template carries the placement and resources")
		var d appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key(t), &d) }, timeout, interval).Should(Succeed())
		pod := d.Spec.Template.Spec
		Expect(pod.Affinity).To(Equal(affinity))
		Expect(pod.TopologySpreadConstraints).To(Equal(spread))
		Expect(pod.PriorityClassName).To(Equal("dtn-critical"))
		Expect(d.Spec.Template.Annotations).To(HaveKeyWithValue("prometheus.io/scrape", "true"))
		Expect(pod.Containers[0].Resources.Requests.Cpu().String()).To(Equal("2"))
		Expect(pod.Containers[0].Resources.Limits.Memory().String()).To(Equal("4Gi"))
		Expect(pod.Containers[1].Resources.Requests.Cpu().String()).To(Equal("200m"))
	})

	It("runs a plain-TCP tunnel without certificates and UDP listeners as UDP", func() {
		ns := newNamespace("plain")
		t := inbound(ns, "plain", func(t *scitunnelv1.StreamTunnel) { t.Spec.Protocol = scitunnelv1.ProtocolTCP })
		u := inbound(ns, "datagrams", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Protocol = scitunnelv1.ProtocolUDP
			t.Spec.UDPTransport = scitunnelv1.UDPTransportPlain
			t.Spec.Telemetry = &scitunnelv1.TelemetrySpec{SamplingRate: ptr(int32(0))}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "NotRequired")
			g.Expect(proxyConfig(g, t).TLS).To(BeNil())
		})
		var secrets corev1.SecretList
		Expect(k8sClient.List(ctx, &secrets, client.InNamespace(ns))).To(Succeed())
		Expect(secrets.Items).To(BeEmpty())
		var d appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key(u), &d) }, timeout, interval).Should(Succeed())
		Expect(d.Spec.Template.Spec.Containers[0].Ports[1].Protocol).To(Equal(corev1.ProtocolUDP))
		// Sampling off: the sidecar needs no capability and runs non-root ("restricted").
		sc := d.Spec.Template.Spec.Containers[1].SecurityContext
		Expect(sc.Capabilities.Add).To(BeEmpty())
		Expect(*sc.RunAsNonRoot).To(BeTrue())
		// Untagged: no reflection sysctl.
		Expect(d.Spec.Template.Spec.SecurityContext.Sysctls).To(BeEmpty())
	})

	It("follows spec changes and the scale subresource", func() {
		ns := newNamespace("scale")
		t := inbound(ns, "scaled")
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		var d appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key(t), &d) }, timeout, interval).Should(Succeed())
		hash := d.Spec.Template.Annotations[child.AnnotationConfigHash]

		scale := &autoscalingv1.Scale{}
		Expect(k8sClient.SubResource("scale").Get(ctx, t, scale)).To(Succeed())
		scale.Spec.Replicas = 3
		Expect(k8sClient.SubResource("scale").Update(ctx, t, client.WithSubResourceBody(scale))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
			g.Expect(*d.Spec.Replicas).To(BeEquivalentTo(3))
		}, timeout, interval).Should(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			t.Spec.Inbound.ListenPorts = ports(5100, 5200)
			g.Expect(k8sClient.Update(ctx, t)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
			g.Expect(d.Spec.Template.Annotations[child.AnnotationConfigHash]).NotTo(Equal(hash))
			var svc corev1.Service
			g.Expect(k8sClient.Get(ctx, key(t), &svc)).To(Succeed())
			g.Expect(svc.Spec.Ports).To(HaveLen(2))
		}, timeout, interval).Should(Succeed())
		eventually(t, func(g Gomega) { g.Expect(t.Status.Endpoint).To(HaveSuffix(":5100,5200")) })
	})
})

var _ = Describe("Same-cluster pairing", func() {
	It("wires an Outbound created before its Inbound, across namespaces the Inbound allows", func() {
		producerNS := newNamespace("producer")
		consumerNS := newNamespace("consumer")
		strangerNS := newNamespace("stranger")

		out := outbound(consumerNS, "consumer", producerNS, "detector", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Outbound.ListenPortRange = &scitunnelv1.PortRange{First: 7100, Last: 7101}
		})
		Expect(k8sClient.Create(ctx, out)).To(Succeed())
		eventually(out, func(g Gomega) {
			// Another namespace: "missing" and "not allowed" are one answer (no existence oracle).
			c := expectCondition(g, out.Status.Conditions, "Degraded", metav1.ConditionTrue, "RemoteNotFoundOrNotAllowed")
			g.Expect(c.Message).To(ContainSubstring("fix spec.outbound.tunnelRef"))
			expectCondition(g, out.Status.Conditions, "Ready", metav1.ConditionFalse, "RemoteNotFoundOrNotAllowed")
		})

		in := inbound(producerNS, "detector", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Inbound.ListenPorts = ports(5100, 5101)
			t.Spec.Inbound.AllowedPeerNamespaces = []string{consumerNS}
			t.Spec.Inbound.AllowedClients = []string{"spiffe://partner/other"}
		})
		Expect(k8sClient.Create(ctx, in)).To(Succeed())

		By("the Outbound's routes lead to the Inbound's Service ports")
		host := "detector." + producerNS + ".svc.cluster.local"
		eventually(out, func(g Gomega) {
			expectCondition(g, out.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Issued")
			expectCondition(g, out.Status.Conditions, "Degraded", metav1.ConditionFalse, "")
			c := proxyConfig(g, out)
			g.Expect(c.Role).To(Equal(config.Outbound))
			g.Expect(c.Routes).To(Equal([]config.Route{{ListenPort: 7100, Target: host + ":5100"}, {ListenPort: 7101, Target: host + ":5101"}}))
			g.Expect(c.TLS.ServerName).To(Equal(host))
			g.Expect(out.Status.Remote).To(Equal(host + ":5100-5101"))
		})

		By("the Outbound's client certificate comes from the Inbound's CA and carries its identity")
		Eventually(func(g Gomega) {
			caCert := cert(g, secret(g, producerNS, "detector-ca").Data["ca.crt"])
			tls := secret(g, consumerNS, "consumer-tls")
			leaf := cert(g, tls.Data["tls.crt"])
			g.Expect(leaf.CheckSignatureFrom(caCert)).To(Succeed())
			g.Expect(leaf.ExtKeyUsage).To(Equal([]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}))
			g.Expect(leaf.URIs[0].String()).To(Equal("spiffe://test.scitunnel/ns/" + consumerNS + "/streamtunnel/consumer"))
			g.Expect(tls.Labels).To(HaveKeyWithValue(child.LabelIssuerUID, string(in.UID)))
			ownedBy(g, tls, out)
		}, timeout, interval).Should(Succeed())

		By("the Inbound lists the peer and admits its identity next to the user's allow-list")
		eventually(in, func(g Gomega) {
			g.Expect(in.Status.Peers).To(Equal([]string{consumerNS + "/consumer"}))
			g.Expect(proxyConfig(g, in).TLS.AllowedSANs).To(ContainElements(
				"spiffe://partner/other",
				"spiffe://test.scitunnel/ns/"+consumerNS+"/streamtunnel/consumer"))
		})

		By("a namespace the Inbound does not allow is refused with the fix")
		stranger := outbound(strangerNS, "sneaky", producerNS, "detector")
		Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
		eventually(stranger, func(g Gomega) {
			c := expectCondition(g, stranger.Status.Conditions, "Degraded", metav1.ConditionTrue, "RemoteNotFoundOrNotAllowed")
			g.Expect(c.Message).To(ContainSubstring("allowedPeerNamespaces"))
		})
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: strangerNS, Name: "sneaky-tls"}, &corev1.Secret{}))
		}, 2*time.Second, 200*time.Millisecond).Should(BeTrue())
		Expect(in.Status.Peers).NotTo(ContainElement(strangerNS + "/sneaky"))

		By("a port-count mismatch says what to change")
		mismatch := outbound(consumerNS, "mismatch", producerNS, "detector", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Outbound.ListenPorts = ports(7200)
		})
		Expect(k8sClient.Create(ctx, mismatch)).To(Succeed())
		eventually(mismatch, func(g Gomega) {
			c := expectCondition(g, mismatch.Status.Conditions, "Degraded", metav1.ConditionTrue, "PortCountMismatch")
			g.Expect(c.Message).To(ContainSubstring("1 local ports but the Inbound end"))
		})

		By("deleting the Inbound removes the certificates issued from its CA in other namespaces (finalizer)")
		Expect(k8sClient.Get(ctx, key(in), in)).To(Succeed())
		Expect(in.Finalizers).To(ContainElement(child.Finalizer))
		Expect(k8sClient.Delete(ctx, in)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, key(in), &scitunnelv1.StreamTunnel{}))
		}, timeout, interval).Should(BeTrue())
		Eventually(func(g Gomega) {
			var s corev1.Secret
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: consumerNS, Name: "consumer-tls"}, &s)
			// Deleted by the finalizer; the Outbound may not re-issue: its CA is gone.
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "consumer-tls still exists")
		}, timeout, interval).Should(Succeed())
		eventually(out, func(g Gomega) {
			expectCondition(g, out.Status.Conditions, "Degraded", metav1.ConditionTrue, "RemoteNotFoundOrNotAllowed")
			expectCondition(g, out.Status.Conditions, "Ready", metav1.ConditionFalse, "RemoteNotFoundOrNotAllowed")
		})
	})

	It("uses a connection bundle for a remote endpoint in another cluster", func() {
		producerNS := newNamespace("far")
		consumerNS := newNamespace("near")
		in := inbound(producerNS, "exported", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Exposure = &scitunnelv1.ExposureSpec{Type: corev1.ServiceTypeClusterIP, AdvertisedAddress: "dtn.producer.example.org"}
		})
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		var bundle *corev1.Secret
		Eventually(func(g Gomega) {
			bundle = secret(g, producerNS, "exported-bundle")
			g.Expect(string(bundle.Data["bundle.json"])).To(ContainSubstring("dtn.producer.example.org"))
			server := cert(g, secret(g, producerNS, "exported-tls").Data["tls.crt"])
			g.Expect(server.DNSNames).To(ContainElement("dtn.producer.example.org"))
		}, timeout, interval).Should(Succeed())

		out := &scitunnelv1.StreamTunnel{
			ObjectMeta: metav1.ObjectMeta{Namespace: consumerNS, Name: "remote"},
			Spec: scitunnelv1.StreamTunnelSpec{
				Role: scitunnelv1.RoleOutbound,
				Outbound: &scitunnelv1.OutboundSpec{Endpoint: &scitunnelv1.RemoteEndpoint{
					Address: "dtn.producer.example.org", Ports: ports(5100),
					BundleSecretRef: &scitunnelv1.LocalObjectReference{Name: "copied-bundle"},
				}},
			},
		}
		Expect(k8sClient.Create(ctx, out)).To(Succeed())
		eventually(out, func(g Gomega) {
			c := expectCondition(g, out.Status.Conditions, "Degraded", metav1.ConditionTrue, "SecretNotFound")
			g.Expect(c.Message).To(ContainSubstring("copy the Inbound end's connection-bundle Secret"))
		})

		// The user copies the bundle into the consumer's cluster.
		copied := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: consumerNS, Name: "copied-bundle"}, Data: bundle.Data}
		Expect(k8sClient.Create(ctx, copied)).To(Succeed())
		eventually(out, func(g Gomega) {
			expectCondition(g, out.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "Valid")
			c := proxyConfig(g, out)
			g.Expect(c.Routes).To(Equal([]config.Route{{ListenPort: 5100, Target: "dtn.producer.example.org:5100"}}))
		})
		var d appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key(out), &d) }, timeout, interval).Should(Succeed())
		i := slices.IndexFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "tls" })
		Expect(i).To(BeNumerically(">=", 0))
		Expect(d.Spec.Template.Spec.Volumes[i].Secret.SecretName).To(Equal("copied-bundle"))
	})
})

func ptr[T any](v T) *T { return &v }
