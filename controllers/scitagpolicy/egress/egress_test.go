package egress

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// loopback lets tests reach their own servers: the only way the client dials 127.0.0.1.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// countingServer answers 200 and counts the requests it received.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	return nil
}

func TestHTTPRefusedUnlessAllowed(t *testing.T) {
	srv, hits := countingServer(t)
	err := get(NewClient(Rules{Allowed: loopback}, 10*time.Second), srv.URL)
	if !errors.Is(err, ErrSchemeRefused) || hits.Load() != 0 {
		t.Fatalf("http:// without AllowHTTP: err %v, requests %d; want ErrSchemeRefused and none", err, hits.Load())
	}
	if err := get(NewClient(Rules{AllowHTTP: true, Allowed: loopback}, 10*time.Second), srv.URL); err != nil || hits.Load() != 1 {
		t.Fatalf("http:// with AllowHTTP: err %v, requests %d", err, hits.Load())
	}
}

func TestLoopbackRefusedUnlessAllowed(t *testing.T) {
	srv, hits := countingServer(t)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	refusing := NewClient(Rules{AllowHTTP: true}, 10*time.Second)
	// "localhost" is a name: the check must apply to the address it resolves to when dialled.
	for _, url := range []string{srv.URL, "http://localhost:" + port, "http://[::ffff:127.0.0.1]:" + port} {
		if err := get(refusing, url); !errors.Is(err, ErrAddressRefused) {
			t.Errorf("GET %s: %v, want ErrAddressRefused", url, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("a refused address received %d requests", hits.Load())
	}
	if err := get(NewClient(Rules{AllowHTTP: true, Allowed: loopback}, 10*time.Second), srv.URL); err != nil || hits.Load() != 1 {
		t.Fatalf("loopback allowed: err %v, requests %d", err, hits.Load())
	}
}

func TestRedirectToAnotherHostRefused(t *testing.T) {
	other, otherHits := countingServer(t)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/same" {
			http.Redirect(w, r, "/final", http.StatusFound)
			return
		}
		if r.URL.Path == "/final" {
			_, _ = w.Write([]byte("{}"))
			return
		}
		http.Redirect(w, r, other.URL+"/api.json", http.StatusFound) // another port: another host
	}))
	t.Cleanup(redirecting.Close)
	c := NewClient(Rules{AllowHTTP: true, Allowed: loopback}, 10*time.Second)
	if err := get(c, redirecting.URL+"/elsewhere"); !errors.Is(err, ErrRedirectRefused) || otherHits.Load() != 0 {
		t.Fatalf("redirect to another host: err %v, its requests %d; want ErrRedirectRefused and none", err, otherHits.Load())
	}
	if err := get(c, redirecting.URL+"/same"); err != nil {
		t.Fatalf("a redirect on the same host is followed: %v", err)
	}
}

func TestPermits(t *testing.T) {
	cluster := netip.MustParsePrefix("10.96.0.0/12")
	rules := Rules{Refused: append(DefaultPrivate(), cluster)}
	for addr, want := range map[string]bool{
		"127.0.0.1": false, "::1": false, "::ffff:127.0.0.1": false, "169.254.169.254": false, "fe80::1": false,
		"0.0.0.0": false, "::": false, "10.96.0.1": false, "192.168.1.1": false, "172.16.0.1": false,
		"100.64.0.1": false, "fd00::1": false, "224.0.0.1": false,
		"192.0.2.10": true, "2001:db8::1": true, "8.8.8.8": true,
	} {
		if got := rules.Permits(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Permits(%s) = %v, want %v", addr, got, want)
		}
	}
	mirror := Rules{Refused: DefaultPrivate(), Allowed: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}}
	if !mirror.Permits(netip.MustParseAddr("10.1.2.3")) || mirror.Permits(netip.MustParseAddr("10.1.2.4")) {
		t.Error("an allowed range must open exactly that range inside a refused one")
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.0.0.0/8", "192.0.2.7", "", "fd00::/8"})
	if err != nil || len(got) != 3 || got[1].String() != "192.0.2.7/32" {
		t.Fatalf("ParsePrefixes: %v %v", got, err)
	}
	if _, err := ParsePrefixes([]string{"not-a-cidr"}); err == nil {
		t.Fatal("a bad CIDR must be refused")
	}
}
