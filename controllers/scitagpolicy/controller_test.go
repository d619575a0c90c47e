package scitagpolicy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
)

// builderIndexer registers the controllers' field indexes on a fake client.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, f client.IndexerFunc) error {
	i.b.WithIndex(obj, field, f)
	return nil
}

// newTestReconciler is the controller over a fake API server, its fetcher (allowed to reach
// loopback over http) not yet started.
func newTestReconciler(t *testing.T, objs ...client.Object) *Reconciler {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := scitunnelv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&scitunnelv1.ScitagPolicy{})
	if err := indexes.SetupIndexes(t.Context(), builderIndexer{b}); err != nil {
		t.Fatal(err)
	}
	c := b.Build()
	return &Reconciler{
		Client:    c,
		APIReader: c,
		Recorder:  events.NewFakeRecorder(100),
		Clock:     clocktesting.NewFakePassiveClock(time.Now()),
		fetcher:   RegistryOptions{Egress: loopbackRules}.newFetcher(logr.Discard()),
		applier:   &ssa.Applier{Client: c, Owner: child.FieldOwner},
	}
}

func urlPolicy(name, url string) *scitunnelv1.ScitagPolicy {
	return &scitunnelv1.ScitagPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1, UID: types.UID("uid-" + name)},
		Spec: scitunnelv1.ScitagPolicySpec{Experiment: "x", Activity: "y",
			Registry: &scitunnelv1.RegistrySource{URL: url}},
	}
}

// reconcileReturns runs one pass in the background and reports whether it returned.
func reconcileReturns(r *Reconciler, name string) func() bool {
	done := make(chan struct{})
	go func() {
		_, _ = r.Reconcile(context.Background(), ctrl.Request{NamespacedName: policyKey(name)})
		close(done)
	}()
	return func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

// A registry that holds its answer does not hold the controller: the fetch runs in the
// background, passes of the same and other policies return meanwhile, and the policy is
// reconciled again when the answer comes.
func TestSlowRegistryDoesNotBlockReconciles(t *testing.T) {
	g := NewWithT(t)
	inFlight, release := make(chan struct{}, 1), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		inFlight <- struct{}{}
		<-release
		_, _ = w.Write([]byte(tinyRegistry))
	}))
	defer slow.Close()
	defer close(release) // before slow.Close, which waits for the handler
	fast, _ := registryServer(t, http.StatusOK, tinyRegistry)

	r := newTestReconciler(t, urlPolicy("slow", slow.URL), urlPolicy("fast", fast.URL))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = r.fetcher.Start(ctx) }()

	g.Eventually(reconcileReturns(r, "slow"), 30*time.Second).Should(BeTrue(), "the pass must not wait for the registry")
	g.Eventually(inFlight, 30*time.Second).Should(Receive(), "the fetch runs in the background")
	g.Eventually(reconcileReturns(r, "slow"), 30*time.Second).Should(BeTrue(), "nor a second pass of the same policy")
	g.Eventually(reconcileReturns(r, "fast"), 30*time.Second).Should(BeTrue(), "nor another policy's pass")

	p := &scitunnelv1.ScitagPolicy{}
	g.Expect(r.Get(ctx, policyKey("slow"), p)).To(Succeed())
	g.Expect(conditionOf(p, scitunnelv1.ConditionRegistrySynced)).To(HaveField("Reason", "Fetching"))

	release <- struct{}{}
	g.Eventually(r.fetcher.events, 30*time.Second).Should(Receive(HaveField("Object.GetName()", "slow")))
	_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: policyKey("slow")})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.Get(ctx, policyKey("slow"), p)).To(Succeed())
	g.Expect(conditionOf(p, scitunnelv1.ConditionRegistrySynced)).To(HaveField("Reason", "Fetched"))
	g.Expect(p.Status.Tag).To(Equal("x.y"))
}

// A deleted policy's URL leaves the cache.
func TestDeletedPolicyEvictsItsURL(t *testing.T) {
	g := NewWithT(t)
	srv, _ := registryServer(t, http.StatusOK, tinyRegistry)
	p := urlPolicy("gone", srv.URL)
	r := newTestReconciler(t, p)
	_, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: policyKey("gone")})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.fetcher.cachedURLs()).To(Equal(1))
	g.Expect(r.Delete(t.Context(), p)).To(Succeed())
	_, err = r.Reconcile(t.Context(), ctrl.Request{NamespacedName: policyKey("gone")})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.fetcher.cachedURLs()).To(BeZero())
}

func conditionOf(p *scitunnelv1.ScitagPolicy, typ string) metav1.Condition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}
