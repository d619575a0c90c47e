package scitagpolicy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// abuseURLs is the flood: policies naming this many distinct registry URLs, half serving
// 4 MiB documents (over the cap), half serving valid documents just under it.
const abuseURLs = 128

// BenchmarkAbuseRegistryURLs measures what a flood of large registry URLs costs the manager:
// the heap and goroutines of the fetcher at rest and once every URL it accepted was fetched.
// Before the fetcher was bounded, 16 URLs of 4 MiB added 128 MiB (the manager's limit is 256).
// Run it with `make bench-abuse` (or go test -run '^$' -bench AbuseRegistryURLs -benchtime 1x).
func BenchmarkAbuseRegistryURLs(b *testing.B) {
	huge := []byte(`{"experiments":[` + strings.Repeat(" ", 4<<20) + `]}`)
	valid := largeValidRegistry(maxRegistryBytes - 32<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/huge/") {
			_, _ = w.Write(huge)
			return
		}
		_, _ = w.Write(valid)
	}))
	defer srv.Close()
	flood := fmt.Sprintf("%d registry URLs (%d of 4 MiB, %d of %d KiB)", abuseURLs, abuseURLs/2, abuseURLs/2, len(valid)>>10)

	for range b.N {
		restHeap, restGoroutines := heapMiB(), runtime.NumGoroutine()
		f := RegistryOptions{Egress: loopbackRules}.newFetcher(logr.Discard())
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan struct{})
		go func() { _ = f.Start(ctx); close(done) }()
		go func() { // the controller's side of the channel
			for {
				select {
				case <-f.events:
				case <-ctx.Done():
					return
				}
			}
		}()
		for i := range abuseURLs {
			kind := [2]string{"huge", "valid"}[i%2]
			f.want(policyKey("p"+strconv.Itoa(i)), srv.URL+"/"+kind+"/"+strconv.Itoa(i), time.Hour, false)
		}
		waitAllAttempted(b, f)
		floodHeap, floodGoroutines := heapMiB(), runtime.NumGoroutine()
		fmt.Printf("abuse manager %s: heap %.1f -> %.1f MiB, goroutines %d -> %d\n",
			flood, restHeap, floodHeap, restGoroutines, floodGoroutines)
		b.ReportMetric(floodHeap-restHeap, "heap-MiB")
		b.ReportMetric(float64(f.cachedURLs()), "cached-urls")
		cancel()
		<-done
	}
}

// waitAllAttempted waits until every cached URL was fetched once.
func waitAllAttempted(b *testing.B, f *registryFetcher) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		pending := 0
		for _, e := range f.entries {
			if !e.attempted {
				pending++
			}
		}
		f.mu.Unlock()
		if pending == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("the fetcher did not fetch every URL in 5 minutes")
}

func heapMiB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// largeValidRegistry is a registry document of about size bytes with names that fit status.
func largeValidRegistry(size int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"version":1,"modified":"m","experiments":[`)
	for e := 0; e <= 511 && sb.Len() < size-8<<10; e++ {
		if e > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"expName":"experiment-%03d-%s","expId":%d,"activities":[`, e, strings.Repeat("e", 40), e)
		for a := 0; a <= 63; a++ {
			if a > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"activityName":"activity-%02d-%s","activityId":%d}`, a, strings.Repeat("a", 10), a)
		}
		sb.WriteString("]}")
	}
	sb.WriteString("]}")
	return []byte(sb.String())
}
