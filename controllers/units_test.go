package controllers

import (
	"context"
	"github.com/scitunnel/scitunnel/internal/pki"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

func TestFormatBitRate(t *testing.T) {
	for _, c := range []struct {
		bps  float64
		want string
	}{
		{0, "0 bit/s"}, {-5, "0 bit/s"}, {950, "950 bit/s"}, {999.4, "999 bit/s"}, {999.6, "1.0 kbit/s"},
		{1200, "1.2 kbit/s"}, {12_300_000, "12 Mbit/s"}, {1.2e9, "1.2 Gbit/s"}, {9.96e9, "10 Gbit/s"},
		{100e9, "100 Gbit/s"}, {1.5e12, "1.5 Tbit/s"},
	} {
		if got := FormatBitRate(c.bps); got != c.want {
			t.Errorf("FormatBitRate(%v) = %q, want %q", c.bps, got, c.want)
		}
	}
}

func TestFormatPorts(t *testing.T) {
	for _, c := range []struct {
		ports []int
		want  string
	}{
		{nil, ""}, {[]int{5100}, "5100"}, {[]int{5100, 5101, 5102}, "5100-5102"}, {[]int{5100, 6000}, "5100,6000"},
		{[]int{5101, 5100}, "5101,5100"},
	} {
		if got := formatPorts(c.ports); got != c.want {
			t.Errorf("formatPorts(%v) = %q, want %q", c.ports, got, c.want)
		}
	}
	if got := joinHostPorts("2001:db8::1", []int{5100, 5101}); got != "[2001:db8::1]:5100-5101" {
		t.Errorf("joinHostPorts IPv6 = %q", got)
	}
}

func TestCombinedErrorPercent(t *testing.T) {
	abs := func(pct, bps float64) float64 { return pct / 100 * bps }
	for _, c := range []struct {
		name        string
		bps, errVar float64
		samples     uint64
		want        int32
	}{
		{"no samples", 1e9, 0, 0, 100},
		{"no rate", 0, 0, 10, 100},
		{"one pod keeps its analyzer's bound, rounded up", 1e9, abs(3.3, 1e9) * abs(3.3, 1e9), 10000, 4},
		{"two equal pods: the bound shrinks by sqrt(2)", 2e9, 2 * abs(3.3, 1e9) * abs(3.3, 1e9), 20000, 3},
		{"a small noisy pod beside a large precise one", 1.1e9, abs(2, 1e9)*abs(2, 1e9) + abs(50, 1e8)*abs(50, 1e8), 10100, 5},
		{"capped at 100", 1e6, abs(400, 1e6) * abs(400, 1e6), 1, 100},
		{"never below 1", 1e9, 0, 1e9, 1},
	} {
		if got := combinedErrorPercent(c.bps, c.errVar, c.samples); got != c.want {
			t.Errorf("%s: combinedErrorPercent = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestRenewalAtTwoThirds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := pki.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafRequest{CommonName: "x", DNSNames: []string{"x"}, IPs: []net.IP{net.ParseIP("10.0.0.1")},
		URIs: []string{"spiffe://td/ns/a/streamtunnel/b"}, Server: true, Lifetime: 90 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	// NotBefore is backdated 5 minutes: the lifetime is 90h05m, two thirds of it 60h03m20s.
	want := now.Add(-pki.Backdate).Add((90*time.Hour + pki.Backdate) * 2 / 3)
	if got := pki.RenewAt(leaf.Cert); !got.Equal(want) {
		t.Errorf("pki.RenewAt = %v, want %v", got, want)
	}
	if !pki.SignedBy(leaf.Cert, ca.Cert) {
		t.Error("leaf not signed by its CA")
	}
	other, _ := pki.NewCA("other", now)
	if pki.SignedBy(leaf.Cert, other.Cert) {
		t.Error("leaf verified against a foreign CA")
	}
	if !pki.HasSANs(leaf.Cert, pki.LeafRequest{DNSNames: []string{"x"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []string{"spiffe://td/ns/a/streamtunnel/b"}}) {
		t.Error("pki.HasSANs false for the same SANs")
	}
	if pki.HasSANs(leaf.Cert, pki.LeafRequest{DNSNames: []string{"x", "y"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []string{"spiffe://td/ns/a/streamtunnel/b"}}) {
		t.Error("pki.HasSANs true after a name was added")
	}
	if lifetimeChanged(leaf.Cert, 90*time.Hour) || !lifetimeChanged(leaf.Cert, 30*time.Hour) {
		t.Error("lifetimeChanged misjudges")
	}
	kp, err := pki.ParseKeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil || kp.Cert.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Errorf("pki.ParseKeyPair round trip: %v", err)
	}
	if _, err := pki.ParseKeyPair(leaf.CertPEM, ca.KeyPEM); err == nil {
		t.Error("pki.ParseKeyPair accepted a key of another certificate")
	}
}

// The flow labels the operator writes follow the scitags test vectors (dataplane/scitag holds
// the encoder's own vectors; this checks the operator's resolution path end to end).
func TestResolveInlineVectors(t *testing.T) {
	for _, c := range []struct {
		exp, act string
		name     string
		label    int32
	}{
		{"default", "default", "default.default", 131076},
		{"atlas", "perfSONAR", "atlas.perfSONAR", 65544},
		{"2", "9", "atlas.Debug", 65572},
		{"ATLAS", "production output", "atlas.Production_Output", 65600},
		{"cms", "Analysis_Input", "cms.Analysis_Input", 196664},
		{"alice", "Job output", "alice.Job_output", 163888},
		{"xenon", "1", "xenon.default", 114692},
		{"511", "63", "511.63", 261884},
	} {
		tag, err := resolveInline(scitunnelv1.ExperimentRef(c.exp), scitunnelv1.ActivityRef(c.act))
		if err != nil {
			t.Errorf("%s/%s: %v", c.exp, c.act, err)
			continue
		}
		r := resolved(tag, false, "inline")
		if r.Name != c.name || r.FlowLabel != c.label || r.FlowLabelHex != scitag.FormatLabel(uint32(c.label)) {
			t.Errorf("%s/%s = %s %d %s, want %s %d", c.exp, c.act, r.Name, r.FlowLabel, r.FlowLabelHex, c.name, c.label)
		}
	}
	if _, err := resolveInline("atlas", "no such activity"); err == nil {
		t.Error("an unknown activity name resolved")
	}
}

func TestSidecarPrivilegesFollowSampling(t *testing.T) {
	on := sflowSecurityContext(true)
	if len(on.Capabilities.Add) != 1 || on.Capabilities.Add[0] != "NET_RAW" || !*on.RunAsNonRoot || *on.RunAsUser != dataPlaneUID ||
		!*on.AllowPrivilegeEscalation { // the binary's file capability needs it (no no_new_privs)
		t.Errorf("sampling sidecar: %+v", on)
	}
	off := sflowSecurityContext(false)
	if len(off.Capabilities.Add) != 0 || !*off.RunAsNonRoot || *off.RunAsUser != dataPlaneUID || *off.AllowPrivilegeEscalation {
		t.Errorf("analyzer-only sidecar: %+v", off)
	}
}

func TestConditionReasonGuard(t *testing.T) {
	for reason, ok := range map[string]bool{"Marked": true, "IPv4Path": true, "": false, "bad reason": false, "1st": false} {
		if conditionReason.MatchString(reason) != ok {
			t.Errorf("%q: want valid=%v", reason, ok)
		}
	}
}

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
