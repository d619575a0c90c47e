package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

var _ = Describe("The tunnel's NetworkPolicy", func() {
	It("admits only the manager and the monitoring namespace to the admin and analyzer ports, everyone to the listeners; off, it is removed and not made", func() {
		ns := newNamespace("netpol")
		t := inbound(ns, "guarded")
		Expect(k8sClient.Create(ctx, t)).To(Succeed())

		policy := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "guarded"}}
		eventually(policy, func(g Gomega) {
			ownedBy(g, policy, t)
			g.Expect(policy.Spec.PodSelector.MatchLabels).To(Equal(map[string]string{
				"app.kubernetes.io/name": "scitunnel-proxy", "scitunnel.io/tunnel": "guarded"}))
			g.Expect(policy.Spec.PolicyTypes).To(Equal([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress}))
			g.Expect(policy.Spec.Ingress).To(HaveLen(2))
			listeners := policy.Spec.Ingress[0]
			g.Expect(listeners.From).To(BeEmpty(), "the listeners stay open to every source")
			g.Expect(listeners.Ports).To(Equal([]networkingv1.NetworkPolicyPort{policyPort(corev1.ProtocolTCP, 5100)}))
			endpoints := policy.Spec.Ingress[1]
			g.Expect(endpoints.Ports).To(Equal([]networkingv1.NetworkPolicyPort{
				policyPort(corev1.ProtocolTCP, 9090), policyPort(corev1.ProtocolTCP, 9091), policyPort(corev1.ProtocolUDP, 6343)}))
			g.Expect(endpoints.From).To(Equal([]networkingv1.NetworkPolicyPeer{
				{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "scitunnel-system"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"control-plane": "controller-manager"}},
				},
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}},
			}))
		})
		// The selector must match the proxy pods the Deployment makes.
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: t.Name}}
		eventually(dep, func(g Gomega) {
			for k, v := range policy.Spec.PodSelector.MatchLabels {
				g.Expect(dep.Spec.Template.Labels).To(HaveKeyWithValue(k, v))
			}
		})

		By("turned off, the manager removes the policy it made and makes none for a new tunnel")
		stopManager()
		tunnelNetworkPolicy.Enabled = false
		DeferCleanup(func() {
			stopManager()
			tunnelNetworkPolicy.Enabled = true
			startManager()
		})
		startManager()
		nudge(t)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(policy), &networkingv1.NetworkPolicy{}))
		}, timeout, interval).Should(BeTrue())
		open := inbound(ns, "open", func(t *scitunnelv1.StreamTunnel) { t.Spec.Inbound.ListenPorts = ports(5200) })
		Expect(k8sClient.Create(ctx, open)).To(Succeed())
		// The policy's phase runs before the Deployment's: once the Deployment exists, a pass
		// has decided about the policy.
		eventually(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "open"}}, func(Gomega) {})
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "open"}, &networkingv1.NetworkPolicy{}))
		}, 2*time.Second, 200*time.Millisecond).Should(BeTrue())
	})
})

func policyPort(proto corev1.Protocol, p int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(p)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
}
