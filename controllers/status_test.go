package controllers_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/report"
)

// tableRows asks the API server for the kubectl table of StreamTunnels in ns: the printer
// columns as kubectl renders them (what `kubectl get tunnels -o wide` shows).
func tableRows(ns string) (*metav1.Table, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &schema.GroupVersion{Group: "scitunnel.io", Version: "v1alpha1"}
	c.APIPath = "/apis"
	c.NegotiatedSerializer = clientgoscheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, err
	}
	table := &metav1.Table{}
	err = rc.Get().Namespace(ns).Resource("streamtunnels").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		Do(context.Background()).Into(table)
	return table, err
}

// column is a cell of the table's first row (each test namespace holds one tunnel).
func column(t *metav1.Table, name string) any {
	for i, c := range t.ColumnDefinitions {
		if c.Name == name {
			return t.Rows[0].Cells[i]
		}
	}
	return "<no column " + name + ">"
}

var _ = Describe("Conditions, live throughput and printer columns", Ordered, func() {
	var (
		ns string
		t  *scitunnelv1.StreamTunnel
	)
	BeforeAll(func() {
		ns = newNamespace("live")
		t = inbound(ns, "live", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Scitag = &scitunnelv1.TunnelScitag{Experiment: "2", Activity: "16"}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "CertificateReady", metav1.ConditionTrue, "")
			expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionFalse, "ProxyNotAvailable")
			expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionUnknown, "NoReport")
		})
	})

	It("becomes Ready when the Deployment has an available pod, and not Ready when it loses it", func() {
		setDeploymentAvailable(t, 1)
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "ProxyAvailable", metav1.ConditionTrue, "Available")
			expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionTrue, "TunnelReady")
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "AsExpected")
			g.Expect(t.Status.ReadyReplicas).To(BeEquivalentTo(1))
			g.Expect(t.Status.Message).To(BeEmpty())
		})
		setDeploymentAvailable(t, 0)
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "ProxyAvailable", metav1.ConditionFalse, "NoPodAvailable")
			c := expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionFalse, "ProxyNotAvailable")
			g.Expect(t.Status.Message).To(Equal(c.Message))
		})
		setDeploymentAvailable(t, 1)
	})

	It("says when the proxy pods cannot be created or their rollout is stuck, and records it as an event", func() {
		setDeploymentConditions := func(conds ...appsv1.DeploymentCondition) {
			Eventually(func(g Gomega) {
				var d appsv1.Deployment
				g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
				d.Status.Conditions = conds
				g.Expect(k8sClient.Status().Update(ctx, &d)).To(Succeed())
			}, timeout, interval).Should(Succeed())
		}
		setDeploymentConditions(appsv1.DeploymentCondition{Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue,
			Reason: "FailedCreate", Message: `pods "live-x" is forbidden: exceeded quota: compute`})
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "ReplicaFailure")
			g.Expect(c.Message).To(ContainSubstring("exceeded quota: compute"))
			g.Expect(t.Status.Message).To(ContainSubstring("cannot be created"))
		})
		Eventually(func(g Gomega) { hasEvent(g, ns, "ReplicaFailure") }, timeout, interval).Should(Succeed())

		setDeploymentConditions(appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
			Reason: "ProgressDeadlineExceeded", Message: `ReplicaSet "live-abc" has timed out progressing.`})
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "RolloutStuck")
			g.Expect(c.Message).To(ContainSubstring("has timed out progressing"))
		})

		setDeploymentConditions()
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "AsExpected")
		})
	})

	It("reads per-tag throughput, connections and the flow-label report from the pods", func() {
		now := time.Now().UTC().Truncate(time.Second)
		dataPlane.set(
			report.ProxyStatus{Tunnel: ns + "/live", Ready: true, ActiveConnections: 3,
				FlowLabel: report.FlowLabelStatus{Applied: true, Reason: "Marked", Label: 65600}},
			report.TagTotals{WindowSeconds: 10, Updated: now, Tags: []report.TagRate{
				{Tag: "atlas.Production_Output", ExperimentID: 2, ActivityID: 16, BitsPerSecond: 1.2e9, ErrorPercent: 3.3, Bytes: 15e9, Samples: 10000, Flows: 3},
				{Tag: "unknown", BitsPerSecond: 2e6, ErrorPercent: 19.6, Bytes: 1e6, Samples: 100},
			}})
		readyPod(t, "live-pod-a")
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Throughput).To(HaveLen(2))
			tp := t.Status.Throughput[0]
			g.Expect(tp.Tag).To(Equal("atlas.Production_Output"))
			g.Expect(tp.BitsPerSecond).To(BeEquivalentTo(1200000000))
			g.Expect(tp.ErrorPercent).To(BeEquivalentTo(4)) // the analyzer's 3.3, rounded up
			g.Expect(tp.Bytes).To(BeEquivalentTo(15000000000))
			g.Expect(tp.Samples).To(BeEquivalentTo(10000))
			g.Expect(tp.LastUpdate.Time.Equal(now)).To(BeTrue())
			g.Expect(t.Status.ThroughputSummary).To(Equal("1.2 Gbit/s"))
			g.Expect(t.Status.ActiveConnections).To(BeEquivalentTo(3))
			expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionTrue, "Marked")
		})

		By("a second pod's figures are summed per tag")
		readyPod(t, "live-pod-b")
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Throughput[0].BitsPerSecond).To(BeEquivalentTo(2400000000))
			g.Expect(t.Status.Throughput[0].Samples).To(BeEquivalentTo(20000))
			// independent pods: 3.3/sqrt(2) = 2.33, rounded up (not 196/sqrt(20000) = 1.39)
			g.Expect(t.Status.Throughput[0].ErrorPercent).To(BeEquivalentTo(3))
			g.Expect(t.Status.ThroughputSummary).To(Equal("2.4 Gbit/s"))
			g.Expect(t.Status.ActiveConnections).To(BeEquivalentTo(6))
		})

		By("the printer columns show it, including -o wide")
		Eventually(func(g Gomega) {
			table, err := tableRows(ns)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(table.Rows).To(HaveLen(1))
			g.Expect(column(table, "Role")).To(Equal("Inbound"))
			g.Expect(column(table, "Ready")).To(Equal("True"))
			g.Expect(column(table, "Endpoint")).To(Equal("live." + ns + ".svc:5100"))
			g.Expect(column(table, "Scitag")).To(Equal("atlas.Production_Output"))
			g.Expect(column(table, "Throughput")).To(Equal("2.4 Gbit/s"))
			g.Expect(column(table, "FlowLabel")).To(Equal("0x10040"))
			g.Expect(column(table, "Connections")).To(BeEquivalentTo(6))
			g.Expect(column(table, "Message")).To(BeNil()) // empty: all is well
			g.Expect(column(table, "Age")).NotTo(BeEmpty())
			for _, c := range table.ColumnDefinitions {
				if c.Name == "FlowLabel" || c.Name == "Connections" || c.Name == "Message" {
					g.Expect(c.Priority).To(BeEquivalentTo(1), c.Name+" is a wide column")
				}
			}
		}, timeout, interval).Should(Succeed())
	})

	It("reports when the proxies cannot stamp the flow label", func() {
		dataPlane.set(
			report.ProxyStatus{Ready: true, ActiveConnections: 1, FlowLabel: report.FlowLabelStatus{
				Applied: false, Reason: "IPv4Path", Message: "the producer is reached over IPv4, which has no flow label"}},
			report.TagTotals{Updated: time.Now()})
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionFalse, "IPv4Path")
			g.Expect(c.Message).To(ContainSubstring("over IPv4"))
			g.Expect(t.Status.ThroughputSummary).To(Equal("0 bit/s"))
			expectCondition(g, t.Status.Conditions, "Ready", metav1.ConditionTrue, "") // carrying data still works
		})
	})

	It("says how to fix a kubelet that forbids the flow-label reflection sysctl", func() {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "live-refused", Labels: map[string]string{
				"app.kubernetes.io/name": "scitunnel-proxy", "app.kubernetes.io/managed-by": "scitunnel-operator", "scitunnel.io/tunnel": "live"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "proxy", Image: "x"}}},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "SysctlForbidden",
			Message: "Pod forbidden sysctl: \"net.ipv6.flowlabel_reflect\" not allowlisted"}
		Expect(k8sClient.Status().Update(ctx, p)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "SysctlForbidden")
			g.Expect(c.Message).To(ContainSubstring("--allowed-unsafe-sysctls=net.ipv6.flowlabel_reflect"))
			g.Expect(c.Message).To(ContainSubstring("spec.inbound.flowLabelReflection: false"))
			expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionFalse, "SysctlForbidden")
			g.Expect(t.Status.Message).To(ContainSubstring("allowed-unsafe-sysctls"))
		})
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "AsExpected")
		})
	})

	It("clears live figures when no pod is ready", func() {
		for _, name := range []string{"live-pod-a", "live-pod-b"} {
			Expect(k8sClient.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})).To(Succeed())
		}
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Throughput).To(BeEmpty())
			g.Expect(t.Status.ThroughputSummary).To(BeEmpty())
			g.Expect(t.Status.ActiveConnections).To(BeZero())
			expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionUnknown, "NoReport")
		})
	})
})
