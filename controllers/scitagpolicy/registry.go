package scitagpolicy

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/event"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// DefaultRegistryRefresh is how often a registry URL is re-read, as sFlow-RT does.
const DefaultRegistryRefresh = 600 * time.Second

// Retries of a failing URL back off exponentially from firstRetry to maxRetry, per URL: a
// dead or hostile registry costs one request per backoff step, whatever the number of passes.
const (
	firstRetry = 10 * time.Second
	maxRetry   = DefaultRegistryRefresh
)

// DefaultMaxRegistryURLs bounds the registry URLs cached at once. A document at the size cap
// costs about 4 MiB of heap with its parsed registry (BenchmarkAbuseRegistryURLs), so 16 keep
// the worst case near 64 MiB of the manager's 256 MiB.
const DefaultMaxRegistryURLs = 16

// fetchWorkers fetch URLs concurrently: a slow registry delays others by at most one slot.
const fetchWorkers = 2

// registryFetcher fetches registry URLs in the background and caches the last good copy and
// the last error per URL, for the policies that use it. A reconcile only reads the cache
// (want); when a fetch completes, the policies using its URL are sent on events and
// reconciled again. A URL no policy uses any more is dropped with its copy.
type registryFetcher struct {
	get     func(ctx context.Context, url string) (fetchedDocument, error)
	clock   clock.WithTicker
	maxURLs int
	queue   workqueue.TypedRateLimitingInterface[string]
	events  chan event.GenericEvent

	mu      sync.Mutex
	entries map[string]*urlEntry
	urlOf   map[types.NamespacedName]string // the URL each policy uses
}

// fetchedDocument is a registry document that passed every check.
type fetchedDocument struct {
	registry *scitag.Registry
	raw      []byte
}

// urlEntry is what is known of one URL.
type urlEntry struct {
	users     map[types.NamespacedName]time.Duration // policy -> its refresh interval
	last      fetchedDocument                        // last good copy; registry nil before one
	fetchedAt time.Time                              // of last
	attempted bool
	err       error // the last attempt's, nil when it succeeded
}

// registryState is what a reconcile learns of its policy's URL.
type registryState struct {
	fetchedDocument
	fetchedAt time.Time
	// pending: no attempt finished yet; the policy is sent on events when one does.
	pending bool
	// full: the URL is not cached because DefaultMaxRegistryURLs others are.
	full bool
	err  error
}

func newRegistryFetcher(get func(context.Context, string) (fetchedDocument, error), maxURLs int, clk clock.WithTicker) *registryFetcher {
	if maxURLs <= 0 {
		maxURLs = DefaultMaxRegistryURLs
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &registryFetcher{
		get:     get,
		clock:   clk,
		maxURLs: maxURLs,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](firstRetry, maxRetry),
			workqueue.TypedRateLimitingQueueConfig[string]{Clock: clk}),
		events:  make(chan event.GenericEvent, 64),
		entries: map[string]*urlEntry{},
		urlOf:   map[types.NamespacedName]string{},
	}
}

// want records that policy resolves against url, refreshed every refresh, and returns what
// the cache holds. A new URL is queued for fetching; refreshNow queues a known one again
// unless its last attempt failed (it then waits for its backoff).
func (f *registryFetcher) want(policy types.NamespacedName, url string, refresh time.Duration, refreshNow bool) registryState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.urlOf[policy] != url {
		f.releaseLocked(policy)
	}
	e := f.entries[url]
	if e == nil {
		if len(f.entries) >= f.maxURLs {
			return registryState{full: true}
		}
		e = &urlEntry{users: map[types.NamespacedName]time.Duration{}}
		f.entries[url] = e
		f.queue.Add(url)
	} else if refreshNow && e.attempted && e.err == nil {
		f.queue.Add(url)
	}
	e.users[policy] = refresh
	f.urlOf[policy] = url
	return registryState{fetchedDocument: e.last, fetchedAt: e.fetchedAt, pending: !e.attempted, err: e.err}
}

// forget drops policy's claim on its URL (deleted, or no longer reading a URL).
func (f *registryFetcher) forget(policy types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseLocked(policy)
}

func (f *registryFetcher) releaseLocked(policy types.NamespacedName) {
	url, ok := f.urlOf[policy]
	if !ok {
		return
	}
	delete(f.urlOf, policy)
	if e := f.entries[url]; e != nil {
		delete(e.users, policy)
		if len(e.users) == 0 {
			delete(f.entries, url) // a queued fetch of it finds nothing and stops
		}
	}
}

// cachedURLs is how many URLs the cache holds.
func (f *registryFetcher) cachedURLs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

// Start runs the fetch workers until ctx ends (the fetcher is a manager Runnable, and runs
// on the leader only, like the controller that reads it).
func (f *registryFetcher) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for range fetchWorkers {
		wg.Go(func() {
			for f.fetchNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	f.queue.ShutDown()
	wg.Wait()
	return nil
}

// fetchNext fetches one queued URL, records the outcome, schedules the next attempt and
// tells the URL's policies. It returns false when the queue shuts down.
func (f *registryFetcher) fetchNext(ctx context.Context) bool {
	url, shutdown := f.queue.Get()
	if shutdown {
		return false
	}
	defer f.queue.Done(url)
	if !f.wanted(url) {
		f.queue.Forget(url)
		return true
	}
	doc, err := f.get(ctx, url)
	users, refresh := f.record(url, doc, err)
	switch {
	case users == nil: // evicted while fetching
		f.queue.Forget(url)
	case err != nil:
		f.queue.AddRateLimited(url)
	default:
		f.queue.Forget(url)
		f.queue.AddAfter(url, refresh)
	}
	for _, p := range users {
		ev := event.GenericEvent{Object: &scitunnelv1.ScitagPolicy{}}
		ev.Object.SetNamespace(p.Namespace)
		ev.Object.SetName(p.Name)
		select {
		case f.events <- ev:
		case <-ctx.Done():
			return true
		}
	}
	return true
}

func (f *registryFetcher) wanted(url string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.entries[url] != nil
}

// record stores a fetch's outcome and returns the URL's policies and their shortest refresh
// interval (no policies: the URL was dropped meanwhile).
func (f *registryFetcher) record(url string, doc fetchedDocument, err error) ([]types.NamespacedName, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[url]
	if e == nil {
		return nil, 0
	}
	e.attempted, e.err = true, err
	if err == nil {
		e.last, e.fetchedAt = doc, f.clock.Now()
	}
	users := make([]types.NamespacedName, 0, len(e.users))
	var refresh time.Duration
	for p, r := range e.users {
		users = append(users, p)
		if refresh == 0 || r < refresh {
			refresh = r
		}
	}
	slices.SortFunc(users, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	return users, refresh
}
