package scitagpolicy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/scitunnel/scitunnel/controllers/scitagpolicy/egress"
)

const tinyRegistry = `{"version":3,"modified":"m","experiments":[{"expName":"x","expId":9,"activities":[{"activityName":"y","activityId":1}]}]}`

// loopbackRules let tests fetch from their own loopback servers over http; without them the
// fetcher refuses both, as in a cluster.
var loopbackRules = egress.Rules{AllowHTTP: true, Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

// registryServer answers every request with status and body, and counts them.
func registryServer(t *testing.T, status int, body string) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func policyKey(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: "ns", Name: name}
}

// A failing URL is fetched once however many passes read it, then retried after a backoff
// that doubles: 10 s, then 20 s.
func TestFetcherCachesFailuresAndBacksOff(t *testing.T) {
	g := NewWithT(t)
	srv, hits := registryServer(t, http.StatusServiceUnavailable, "maintenance")
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := RegistryOptions{Egress: loopbackRules, Clock: clk}.newFetcher(logr.Discard())
	ctx := t.Context()
	pol := policyKey("a")

	for range 5 {
		g.Expect(f.want(pol, srv.URL, time.Minute, true).pending).To(BeTrue())
	}
	g.Expect(f.queue.Len()).To(Equal(1), "five passes queue one fetch")
	f.fetchNext(ctx)
	for range 5 {
		st := f.want(pol, srv.URL, time.Minute, true)
		g.Expect(st.pending).To(BeFalse())
		g.Expect(st.err).To(HaveOccurred())
	}
	g.Expect(f.queue.Len()).To(BeZero(), "a cached failure is not fetched again by passes")
	g.Expect(hits.Load()).To(BeEquivalentTo(1))

	clk.Step(firstRetry)
	g.Eventually(f.queue.Len, 30*time.Second).Should(Equal(1), "retried after the first backoff")
	f.fetchNext(ctx)
	g.Expect(hits.Load()).To(BeEquivalentTo(2))

	clk.Step(firstRetry)
	g.Consistently(f.queue.Len, time.Second).Should(BeZero(), "the second backoff is twice the first")
	clk.Step(firstRetry)
	g.Eventually(f.queue.Len, 30*time.Second).Should(Equal(1))
	f.fetchNext(ctx)
	g.Expect(hits.Load()).To(BeEquivalentTo(3))
}

// Deleting the policies (or moving them to another URL) drops the copies nobody uses.
func TestFetcherEvictsUnusedURLs(t *testing.T) {
	g := NewWithT(t)
	f := RegistryOptions{Egress: loopbackRules}.newFetcher(logr.Discard())
	f.want(policyKey("a"), "https://one.example/api.json", time.Minute, false)
	f.want(policyKey("b"), "https://one.example/api.json", time.Minute, false)
	f.want(policyKey("c"), "https://two.example/api.json", time.Minute, false)
	g.Expect(f.cachedURLs()).To(Equal(2))
	f.forget(policyKey("a"))
	g.Expect(f.cachedURLs()).To(Equal(2), "b still uses one.example")
	f.want(policyKey("b"), "https://three.example/api.json", time.Minute, false)
	g.Expect(f.cachedURLs()).To(Equal(2), "b moved: one.example is dropped, three.example added")
	f.forget(policyKey("b"))
	f.forget(policyKey("c"))
	g.Expect(f.cachedURLs()).To(BeZero())
	g.Expect(f.urlOf).To(BeEmpty())
}

func TestFetcherCapsCachedURLs(t *testing.T) {
	g := NewWithT(t)
	f := RegistryOptions{Egress: loopbackRules, MaxURLs: 2}.newFetcher(logr.Discard())
	f.want(policyKey("a"), "https://one.example/", time.Minute, false)
	f.want(policyKey("b"), "https://two.example/", time.Minute, false)
	g.Expect(f.want(policyKey("c"), "https://three.example/", time.Minute, false).full).To(BeTrue())
	g.Expect(f.want(policyKey("c"), "https://one.example/", time.Minute, false).full).To(BeFalse(), "a cached URL is shared")
	g.Expect(f.cachedURLs()).To(Equal(2))
	f.forget(policyKey("b"))
	g.Expect(f.want(policyKey("d"), "https://three.example/", time.Minute, false).full).To(BeFalse())
}

// The fetch completes in the background and sends the URL's policies to be reconciled.
func TestFetcherNotifiesPoliciesOfTheirURL(t *testing.T) {
	g := NewWithT(t)
	srv, _ := registryServer(t, http.StatusOK, tinyRegistry)
	f := RegistryOptions{Egress: loopbackRules}.newFetcher(logr.Discard())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = f.Start(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	f.want(policyKey("a"), srv.URL, time.Minute, false)
	f.want(policyKey("b"), srv.URL, time.Minute, false)
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case ev := <-f.events:
			got[ev.Object.GetName()] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("policies notified: %v", got)
		}
	}
	st := f.want(policyKey("a"), srv.URL, time.Minute, false)
	g.Expect(st.err).NotTo(HaveOccurred())
	g.Expect(st.registry.Version).To(Equal(3))
}

func TestRegistrySizeCap(t *testing.T) {
	g := NewWithT(t)
	pad := func(n int) string {
		return tinyRegistry[:len(tinyRegistry)-1] + strings.Repeat(" ", n-len(tinyRegistry)) + "}"
	}
	fits, _ := registryServer(t, http.StatusOK, pad(maxRegistryBytes))
	big, _ := registryServer(t, http.StatusOK, pad(maxRegistryBytes+1))
	get := RegistryOptions{Egress: loopbackRules}.getter(logr.Discard())

	doc, err := get(t.Context(), fits.URL)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(doc.raw).To(HaveLen(maxRegistryBytes))
	_, err = get(t.Context(), big.URL)
	g.Expect(err).To(MatchError(ContainSubstring("larger than 960 KiB")))
}

// Whether the address was refused, answered 503, or did not answer, the message is the same:
// conditions must not tell a user what the manager can reach.
func TestFetchErrorsDoNotRevealReachability(t *testing.T) {
	g := NewWithT(t)
	down, _ := registryServer(t, http.StatusServiceUnavailable, "internal service says hi")
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	allowing := RegistryOptions{Egress: loopbackRules}.getter(logr.Discard())
	refusing := RegistryOptions{Egress: egress.Rules{AllowHTTP: true}}.getter(logr.Discard())

	for name, get := range map[string]func() error{
		"503":             func() error { _, err := allowing(t.Context(), down.URL); return err },
		"closed port":     func() error { _, err := allowing(t.Context(), closed.URL); return err },
		"refused address": func() error { _, err := refusing(t.Context(), down.URL); return err },
	} {
		g.Expect(get()).To(MatchError(unreachableHint), name)
	}
	_, err := RegistryOptions{Egress: egress.Rules{Allowed: loopbackRules.Allowed}}.getter(logr.Discard())(t.Context(), down.URL)
	g.Expect(err).To(MatchError(ContainSubstring("only https://")), "the scheme is the URL's own: say so")
}

func TestRedirectedRegistryRefused(t *testing.T) {
	g := NewWithT(t)
	target, targetHits := registryServer(t, http.StatusOK, tinyRegistry)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL+"/api.json", http.StatusFound))
	t.Cleanup(redirect.Close)
	_, err := RegistryOptions{Egress: loopbackRules}.getter(logr.Discard())(t.Context(), redirect.URL)
	g.Expect(err).To(MatchError(ContainSubstring("redirects to another host")))
	g.Expect(targetHits.Load()).To(BeZero())
}
