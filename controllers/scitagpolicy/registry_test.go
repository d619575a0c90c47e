package scitagpolicy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestRegistryFetcherRefreshAndFallback(t *testing.T) {
	var hits atomic.Int32
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_, _ = w.Write([]byte(`{"version":3,"modified":"m","experiments":[{"expName":"x","expId":9,"activities":[{"activityName":"y","activityId":1}]}]}`))
	}))
	defer srv.Close()
	f := newRegistryFetcher(srv.Client())
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	got, err := f.get(ctx, srv.URL, 10*time.Minute, t0, false)
	if err != nil || got.registry.Version != 3 || hits.Load() != 1 {
		t.Fatalf("first fetch: %v, hits %d", err, hits.Load())
	}
	if _, err := f.get(ctx, srv.URL, 10*time.Minute, t0.Add(9*time.Minute), false); err != nil || hits.Load() != 1 {
		t.Fatalf("within the refresh interval the copy must be reused: hits %d", hits.Load())
	}
	failing.Store(true)
	got, err = f.get(ctx, srv.URL, 10*time.Minute, t0.Add(11*time.Minute), false)
	if err == nil || hits.Load() != 2 {
		t.Fatalf("after the interval a failed refresh must be reported: err %v, hits %d", err, hits.Load())
	}
	if got.registry == nil || !got.fetchedAt.Equal(t0) {
		t.Fatalf("a failed refresh must keep the last good copy, got %+v", got)
	}
	failing.Store(false)
	if got, err = f.get(ctx, srv.URL, 10*time.Minute, t0.Add(12*time.Minute), true); err != nil || !got.fetchedAt.Equal(t0.Add(12*time.Minute)) {
		t.Fatalf("forced refetch: %v %v", err, got.fetchedAt)
	}
}
