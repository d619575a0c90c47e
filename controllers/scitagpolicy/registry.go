package scitagpolicy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// DefaultRegistryRefresh is how often a registry URL is re-read, as sFlow-RT does.
const DefaultRegistryRefresh = 600 * time.Second

// maxRegistryBytes bounds a fetched registry document (today's is under 10 kB).
const maxRegistryBytes = 4 << 20

// registryFetcher fetches registry documents over HTTP and remembers the last good copy per
// URL, so policies sharing a URL cause one fetch per refresh interval and a failed refresh
// keeps the previous registry.
type registryFetcher struct {
	client *http.Client

	mu    sync.Mutex
	byURL map[string]*fetchedRegistry
}

type fetchedRegistry struct {
	registry  *scitag.Registry
	raw       []byte
	fetchedAt time.Time // last success
	triedAt   time.Time // last attempt
	err       error     // last attempt's error
}

func newRegistryFetcher(c *http.Client) *registryFetcher {
	if c == nil {
		c = &http.Client{Timeout: 15 * time.Second}
	}
	return &registryFetcher{client: c, byURL: map[string]*fetchedRegistry{}}
}

// get returns the registry at url, fetching it when the copy is older than refresh (or when
// force is set). A failed fetch returns the last good copy, if any, together with the error.
func (f *registryFetcher) get(ctx context.Context, url string, refresh time.Duration, now time.Time, force bool) (fetchedRegistry, error) {
	f.mu.Lock()
	cur := f.byURL[url]
	if cur != nil && !force && now.Sub(cur.triedAt) < refresh {
		c := *cur
		f.mu.Unlock()
		return c, c.err
	}
	f.mu.Unlock()

	reg, raw, err := f.fetch(ctx, url)

	f.mu.Lock()
	defer f.mu.Unlock()
	next := &fetchedRegistry{triedAt: now, err: err}
	if err == nil {
		next.registry, next.raw, next.fetchedAt = reg, raw, now
	} else if cur != nil {
		next.registry, next.raw, next.fetchedAt = cur.registry, cur.raw, cur.fetchedAt
	}
	f.byURL[url] = next
	return *next, err
}

func (f *registryFetcher) fetch(ctx context.Context, url string) (*scitag.Registry, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRegistryBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if len(raw) > maxRegistryBytes {
		return nil, nil, fmt.Errorf("GET %s: document larger than %d bytes", url, maxRegistryBytes)
	}
	reg, err := scitag.Parse(raw)
	if err != nil {
		return nil, nil, err
	}
	return reg, raw, nil
}
