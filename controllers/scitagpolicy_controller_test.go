package controllers_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

func policy(ns, name, exp, act string, selector map[string]string, mutate ...func(*scitunnelv1.ScitagPolicy)) *scitunnelv1.ScitagPolicy {
	p := &scitunnelv1.ScitagPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: scitunnelv1.ScitagPolicySpec{
			Experiment: scitunnelv1.ExperimentRef(exp),
			Activity:   scitunnelv1.ActivityRef(act),
		},
	}
	if selector != nil {
		p.Spec.TunnelSelector = &metav1.LabelSelector{MatchLabels: selector}
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// customRegistry is a registry document with an experiment the compiled-in snapshot lacks.
const customRegistry = `{"version": 7, "modified": "2026-01-01T00:00:00Z", "experiments": [
  {"expName": "neutrino", "expId": 300, "activities": [{"activityName": "burst", "activityId": 7}]},
  {"expName": "atlas", "expId": 2, "activities": [{"activityName": "Production Output", "activityId": 16}]}]}`

var _ = Describe("ScitagPolicy", func() {
	It("resolves names to ids and the flow label, and tags a tunnel created before it", func() {
		ns := newNamespace("policy")
		t := inbound(ns, "tagged", func(t *scitunnelv1.StreamTunnel) { t.Labels = map[string]string{"experiment": "atlas"} })
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionFalse, "NotTagged")
			g.Expect(proxyConfig(g, t).Scitag).To(BeNil())
		})

		p := policy(ns, "atlas-po", "ATLAS", "production output", map[string]string{"experiment": "atlas"})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		eventually(p, func(g Gomega) {
			expectCondition(g, p.Status.Conditions, "Resolved", metav1.ConditionTrue, "Resolved")
			expectCondition(g, p.Status.Conditions, "RegistrySynced", metav1.ConditionTrue, "Embedded")
			expectCondition(g, p.Status.Conditions, "Conflict", metav1.ConditionFalse, "NoConflict")
			g.Expect(*p.Status.ExperimentID).To(BeEquivalentTo(2))
			g.Expect(*p.Status.ActivityID).To(BeEquivalentTo(16))
			g.Expect(*p.Status.FlowLabel).To(BeEquivalentTo(65600))
			g.Expect(p.Status.FlowLabelHex).To(Equal("0x10040"))
			g.Expect(p.Status.Mask).To(BeEquivalentTo(261884))
			g.Expect(p.Status.Tag).To(Equal("atlas.Production_Output"))
			g.Expect(p.Status.Registry.Source).To(Equal(scitag.SnapshotSource))
			g.Expect(p.Status.Registry.Modified).NotTo(BeEmpty())
			g.Expect(p.Status.Registry.Pairs).To(BeEquivalentTo(scitag.Default().Len()))
			g.Expect(p.Status.MatchedTunnels).To(BeEquivalentTo(1))
			g.Expect(p.Status.Tunnels).To(Equal([]string{"tagged"}))
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
		})
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag).NotTo(BeNil())
			g.Expect(t.Status.Scitag.Source).To(Equal("ScitagPolicy/atlas-po"))
			g.Expect(t.Status.Scitag.FlowLabel).To(BeEquivalentTo(65600))
			g.Expect(t.Status.Scitag.Entropy).To(BeTrue(), "entropy is on by default")
			g.Expect(proxyConfig(g, t).Scitag).To(Equal(&config.Scitag{ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output", Entropy: true}))
		})

		By("editing the policy never leaves the tunnel untagged while it re-resolves")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(p), p)).To(Succeed())
			p.Spec.Entropy = ptr(false)
			g.Expect(k8sClient.Update(ctx, p)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			g.Expect(t.Status.Scitag).NotTo(BeNil(), "the tunnel went untagged while its policy re-resolved")
			g.Expect(proxyConfig(g, t).Scitag).NotTo(BeNil(), "the proxies' configuration went untagged")
		}, 3*time.Second, 10*time.Millisecond).Should(Succeed())
		eventually(t, func(g Gomega) { g.Expect(t.Status.Scitag.Entropy).To(BeFalse()) })

		By("a second policy selecting the same tunnel is a conflict; the older one keeps applying")
		rival := policy(ns, "cms-ai", "cms", "Analysis Input", map[string]string{"experiment": "atlas"})
		Expect(k8sClient.Create(ctx, rival)).To(Succeed())
		eventually(rival, func(g Gomega) {
			c := expectCondition(g, rival.Status.Conditions, "Conflict", metav1.ConditionTrue, "OverlappingSelectors")
			g.Expect(c.Message).To(ContainSubstring("tunnel tagged is also selected by atlas-po (atlas-po applies)"))
			g.Expect(rival.Status.MatchedTunnels).To(BeZero())
		})
		eventually(p, func(g Gomega) {
			c := expectCondition(g, p.Status.Conditions, "Conflict", metav1.ConditionTrue, "OverlappingSelectors")
			g.Expect(c.Message).To(ContainSubstring("narrow the tunnelSelectors"))
		})
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag.Source).To(Equal("ScitagPolicy/atlas-po"))
			c := expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "PolicyConflict")
			g.Expect(c.Message).To(ContainSubstring("cms-ai"))
		})

		By("removing the rival clears the conflict")
		Expect(k8sClient.Delete(ctx, rival)).To(Succeed())
		eventually(p, func(g Gomega) {
			expectCondition(g, p.Status.Conditions, "Conflict", metav1.ConditionFalse, "NoConflict")
		})
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "AsExpected")
		})

		By("relabelling the tunnel untags it")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), t)).To(Succeed())
			t.Labels = map[string]string{"experiment": "none"}
			g.Expect(k8sClient.Update(ctx, t)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag).To(BeNil())
			g.Expect(proxyConfig(g, t).Scitag).To(BeNil())
		})
		eventually(p, func(g Gomega) { g.Expect(p.Status.MatchedTunnels).To(BeZero()) })
	})

	It("starts the pods of a tunnel applied together with its policy tagged, without a second rollout", func() {
		ns := newNamespace("together")
		// As `kubectl apply -k config/samples` does: the policy, then at once the tunnel.
		Expect(k8sClient.Create(ctx, policy(ns, "atlas-po", "atlas", "Production Output", map[string]string{"experiment": "atlas"}))).To(Succeed())
		t := inbound(ns, "fresh", func(t *scitunnelv1.StreamTunnel) { t.Labels = map[string]string{"experiment": "atlas"} })
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		var d appsv1.Deployment
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag).NotTo(BeNil())
			g.Expect(proxyConfig(g, t).Scitag).NotTo(BeNil())
		})
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(t), &d)).To(Succeed())
			g.Expect(d.Generation).To(BeEquivalentTo(1), "the pod template changed after the pods were first created: they started untagged")
		}, 2*time.Second, 50*time.Millisecond).Should(Succeed())
	})

	It("reports names the registry lacks, and tags by policyRef once the policy exists and resolves", func() {
		ns := newNamespace("policyref")
		t := inbound(ns, "byref", func(t *scitunnelv1.StreamTunnel) {
			t.Spec.Scitag = &scitunnelv1.TunnelScitag{PolicyRef: &scitunnelv1.LocalObjectReference{Name: "later"}}
		})
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			c := expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionFalse, "PolicyNotFound")
			g.Expect(c.Message).To(ContainSubstring(`"later"`))
		})

		p := policy(ns, "later", "atlas", "no such activity", nil)
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		eventually(p, func(g Gomega) {
			c := expectCondition(g, p.Status.Conditions, "Resolved", metav1.ConditionFalse, "NotInRegistry")
			g.Expect(c.Message).To(ContainSubstring(`has no activity "no such activity"`))
			g.Expect(p.Status.FlowLabel).To(BeNil())
		})
		eventually(t, func(g Gomega) {
			expectCondition(g, t.Status.Conditions, "FlowLabelApplied", metav1.ConditionFalse, "PolicyUnresolved")
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionTrue, "PolicyUnresolved")
		})

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(p), p)).To(Succeed())
			p.Spec.Activity = "9"
			p.Spec.Experiment = "2"
			g.Expect(k8sClient.Update(ctx, p)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag).NotTo(BeNil())
			g.Expect(t.Status.Scitag.Name).To(Equal("atlas.Debug"))
			g.Expect(t.Status.Scitag.FlowLabelHex).To(Equal("0x10024"))
			expectCondition(g, t.Status.Conditions, "Degraded", metav1.ConditionFalse, "")
		})

		By("ids the registry does not list still encode (the registry grows)")
		unlisted := policy(ns, "unlisted", "400", "3", nil)
		Expect(k8sClient.Create(ctx, unlisted)).To(Succeed())
		label, _ := scitag.Label(400, 3)
		eventually(unlisted, func(g Gomega) {
			expectCondition(g, unlisted.Status.Conditions, "Resolved", metav1.ConditionTrue, "IDsNotInRegistry")
			g.Expect(*unlisted.Status.FlowLabel).To(BeEquivalentTo(label))
			g.Expect(unlisted.Status.Tag).To(Equal("400.3"))
		})
	})

	It("resolves against a registry URL, keeps the last good copy when a refresh fails, and ships it to the proxies", func() {
		var failing atomic.Bool
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if failing.Load() {
				http.Error(w, "maintenance", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(customRegistry))
		}))
		defer srv.Close()

		ns := newNamespace("registry-url")
		p := policy(ns, "neutrino", "neutrino", "burst", map[string]string{"tag": "neutrino"}, func(p *scitunnelv1.ScitagPolicy) {
			p.Spec.Registry = &scitunnelv1.RegistrySource{URL: srv.URL + "/api.json"}
		})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		label, _ := scitag.Label(300, 7)
		eventually(p, func(g Gomega) {
			expectCondition(g, p.Status.Conditions, "RegistrySynced", metav1.ConditionTrue, "Fetched")
			expectCondition(g, p.Status.Conditions, "Resolved", metav1.ConditionTrue, "Resolved")
			g.Expect(*p.Status.ExperimentID).To(BeEquivalentTo(300))
			g.Expect(*p.Status.FlowLabel).To(BeEquivalentTo(label))
			g.Expect(p.Status.Registry.Source).To(Equal(srv.URL + "/api.json"))
			g.Expect(p.Status.Registry.Version).To(BeEquivalentTo(7))
			g.Expect(p.Status.Registry.LastSync).NotTo(BeNil())
		})
		Eventually(func(g Gomega) {
			var cm corev1.ConfigMap
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "neutrino-registry"}, &cm)).To(Succeed())
			g.Expect(cm.Data["api.json"]).To(Equal(customRegistry))
			g.Expect(cm.OwnerReferences).To(HaveLen(1))
		}, timeout, interval).Should(Succeed())

		t := inbound(ns, "burst", func(t *scitunnelv1.StreamTunnel) { t.Labels = map[string]string{"tag": "neutrino"} })
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag).NotTo(BeNil())
			g.Expect(t.Status.Scitag.Name).To(Equal("neutrino.burst"))
			var cm corev1.ConfigMap
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "burst-config"}, &cm)).To(Succeed())
			g.Expect(cm.Data["registry.json"]).To(Equal(customRegistry))
		})

		By("a failed refresh keeps the last good registry and says so")
		failing.Store(true)
		before := hits.Load()
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(p), p)).To(Succeed())
			p.Spec.Entropy = ptr(false) // a spec change forces a refetch
			g.Expect(k8sClient.Update(ctx, p)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		eventually(p, func(g Gomega) {
			c := expectCondition(g, p.Status.Conditions, "RegistrySynced", metav1.ConditionFalse, "FetchFailed")
			g.Expect(c.Message).To(ContainSubstring("using the copy fetched at"))
			expectCondition(g, p.Status.Conditions, "Resolved", metav1.ConditionTrue, "Resolved")
			g.Expect(*p.Status.ExperimentID).To(BeEquivalentTo(300))
		})
		Expect(hits.Load()).To(BeNumerically(">", before))
		eventually(t, func(g Gomega) {
			g.Expect(t.Status.Scitag).NotTo(BeNil())
			g.Expect(t.Status.Scitag.Entropy).To(BeFalse(), "the policy turned entropy off")
		})
	})

	It("reads the registry from a ConfigMap, and falls back to the snapshot until it exists", func() {
		ns := newNamespace("registry-cm")
		p := policy(ns, "from-cm", "neutrino", "burst", nil, func(p *scitunnelv1.ScitagPolicy) {
			p.Spec.Registry = &scitunnelv1.RegistrySource{ConfigMapRef: &scitunnelv1.ConfigMapKeyReference{Name: "site-registry"}}
		})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		eventually(p, func(g Gomega) {
			c := expectCondition(g, p.Status.Conditions, "RegistrySynced", metav1.ConditionFalse, "ConfigMapNotFound")
			g.Expect(c.Message).To(ContainSubstring(`"site-registry"`))
			expectCondition(g, p.Status.Conditions, "Resolved", metav1.ConditionFalse, "NotInRegistry")
		})
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "site-registry"},
			Data:       map[string]string{"api.json": customRegistry},
		})).To(Succeed())
		eventually(p, func(g Gomega) {
			expectCondition(g, p.Status.Conditions, "RegistrySynced", metav1.ConditionTrue, "Loaded")
			expectCondition(g, p.Status.Conditions, "Resolved", metav1.ConditionTrue, "Resolved")
			g.Expect(p.Status.Registry.Source).To(Equal("configmap:site-registry/api.json"))
			g.Expect(*p.Status.ExperimentID).To(BeEquivalentTo(300))
		})
	})

	It("refuses a registry whose names the status cannot hold, and still patches the status", func() {
		long := strings.Repeat("x", 4000)
		doc := `{"version": 1, "modified": "m", "experiments": [
  {"expName": "` + long + `", "expId": 301, "activities": [{"activityName": "a", "activityId": 1}]}]}`
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(doc)) }))
		defer srv.Close()
		ns := newNamespace("registry-long")
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "long-names"},
			Data:       map[string]string{"api.json": doc},
		})).To(Succeed())
		fromCM := policy(ns, "from-cm", "301", "1", nil, func(p *scitunnelv1.ScitagPolicy) {
			p.Spec.Registry = &scitunnelv1.RegistrySource{ConfigMapRef: &scitunnelv1.ConfigMapKeyReference{Name: "long-names"}}
		})
		fromURL := policy(ns, "from-url", "301", "1", nil, func(p *scitunnelv1.ScitagPolicy) {
			p.Spec.Registry = &scitunnelv1.RegistrySource{URL: srv.URL + "/api.json"}
		})
		for _, p := range []*scitunnelv1.ScitagPolicy{fromCM, fromURL} {
			Expect(k8sClient.Create(ctx, p)).To(Succeed())
		}
		eventually(fromCM, func(g Gomega) {
			c := expectCondition(g, fromCM.Status.Conditions, "RegistrySynced", metav1.ConditionFalse, "InvalidRegistry")
			g.Expect(c.Message).To(ContainSubstring("status.experimentName holds at most 80"))
			g.Expect(fromCM.Status.ObservedGeneration).To(Equal(fromCM.Generation))
			g.Expect(fromCM.Status.ExperimentName).To(BeEmpty())
		})
		eventually(fromURL, func(g Gomega) {
			c := expectCondition(g, fromURL.Status.Conditions, "RegistrySynced", metav1.ConditionFalse, "FetchFailed")
			g.Expect(c.Message).To(ContainSubstring("status.experimentName holds at most 80"))
			g.Expect(fromURL.Status.ObservedGeneration).To(Equal(fromURL.Generation))
		})
	})
})
