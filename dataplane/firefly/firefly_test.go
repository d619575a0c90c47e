package firefly

import (
	"encoding/json"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The schema file in dataplane/scitag/registry carries trailing commas (it is not strict JSON),
// so these checks restate its rules: required members, enums, date-time strings, the address
// family matching the addresses, ports 1..65535, end-time present at the end, nothing extra.
func checkAgainstSchema(t *testing.T, doc []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	only := func(obj map[string]any, where string, allowed ...string) {
		for k := range obj {
			ok := false
			for _, a := range allowed {
				ok = ok || k == a
			}
			if !ok {
				t.Errorf("%s: member %q is not in the schema", where, k)
			}
		}
	}
	only(m, "message", "version", "flow-lifecycle", "flow-id", "context", "usage", "netlink")
	if m["version"] != float64(1) {
		t.Errorf("version %v", m["version"])
	}
	lc, _ := m["flow-lifecycle"].(map[string]any)
	only(lc, "flow-lifecycle", "state", "start-time", "end-time", "current-time")
	state, _ := lc["state"].(string)
	if state != "start" && state != "end" && state != "ongoing" {
		t.Errorf("state %q", state)
	}
	for _, k := range []string{"start-time", "end-time", "current-time"} {
		if v, ok := lc[k]; ok {
			if _, err := time.Parse(time.RFC3339Nano, v.(string)); err != nil {
				t.Errorf("%s %q is not an RFC 3339 date-time: %v", k, v, err)
			}
		} else if k == "start-time" || (k == "end-time" && state == "end") {
			t.Errorf("flow-lifecycle lacks %s", k)
		}
	}
	id, _ := m["flow-id"].(map[string]any)
	only(id, "flow-id", "afi", "src-ip", "dst-ip", "protocol", "src-port", "dst-port")
	for _, k := range []string{"src-ip", "dst-ip"} {
		ip := net.ParseIP(id[k].(string))
		if ip == nil || (id["afi"] == "ipv4") != (ip.To4() != nil) {
			t.Errorf("%s %v does not match afi %v", k, id[k], id["afi"])
		}
	}
	if p := id["protocol"]; p != "tcp" && p != "udp" {
		t.Errorf("protocol %v", p)
	}
	for _, k := range []string{"src-port", "dst-port"} {
		if p, _ := id[k].(float64); p < 1 || p > 65535 {
			t.Errorf("%s %v", k, id[k])
		}
	}
	ctx, _ := m["context"].(map[string]any)
	only(ctx, "context", "experiment-id", "activity-id", "application")
	if _, ok := ctx["experiment-id"].(float64); !ok {
		t.Error("context lacks experiment-id")
	}
	if _, ok := ctx["activity-id"].(float64); !ok {
		t.Error("context lacks activity-id")
	}
	if u, ok := m["usage"].(map[string]any); ok {
		only(u, "usage", "received", "sent")
	}
}

func TestFramedMessagesFollowTheSchema(t *testing.T) {
	start := time.Date(2026, 11, 2, 16, 7, 1, 769470000, time.UTC)
	flows := []Flow{
		{Src: netip.MustParseAddrPort("[2001:db8::1]:40000"), Dst: netip.MustParseAddrPort("[2001:db8::2]:5100"), Protocol: "tcp", ExperimentID: 2, ActivityID: 16, Start: start},
		{Src: netip.MustParseAddrPort("192.0.2.1:40000"), Dst: netip.MustParseAddrPort("192.0.2.2:5100"), Protocol: "udp", ExperimentID: 3, ActivityID: 14, Start: start},
		{Src: netip.MustParseAddrPort("[::ffff:192.0.2.1]:40000"), Dst: netip.MustParseAddrPort("[::ffff:192.0.2.2]:5100"), Protocol: "tcp", ExperimentID: 1, ActivityID: 1, Start: start},
	}
	header := regexp.MustCompile(`^<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 host\.example scitunnel - firefly-json - \{`)
	for _, f := range flows {
		for _, msg := range []Message{
			Build(f, "start", time.Time{}, start, nil, "scitunnel"),
			Build(f, "end", start.Add(time.Minute), start.Add(time.Minute), &Usage{Sent: 10, Received: 20}, ""),
		} {
			line, err := Frame(msg, "host.example", start)
			if err != nil {
				t.Fatal(err)
			}
			if !header.Match(line) {
				t.Fatalf("syslog header: %q", line)
			}
			_, body, _ := strings.Cut(string(line), " firefly-json - ")
			checkAgainstSchema(t, []byte(body))
		}
	}
}

// The sender delivers start and end to every collector, without blocking on an unreachable one.
func TestSenderDeliversToCollectors(t *testing.T) {
	var collectors []net.PacketConn
	var addrs []string
	for range 2 {
		pc, err := net.ListenPacket("udp", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		collectors = append(collectors, pc)
		addrs = append(addrs, pc.LocalAddr().String())
	}
	s := &Sender{Collectors: append(addrs, "unresolvable.invalid:10514"), Application: "test"}
	defer s.Close()
	f := Flow{Src: netip.MustParseAddrPort("[::1]:1000"), Dst: netip.MustParseAddrPort("[::1]:2000"), Protocol: "tcp", ExperimentID: 2, ActivityID: 9, Start: time.Now()}
	s.Start(f)
	s.End(f, time.Now(), 5, 7)
	for i, pc := range collectors {
		for _, want := range []string{`"state":"start"`, `"state":"end"`} {
			buf := make([]byte, 2048)
			if err := pc.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("collector %d: %v", i, err)
			}
			if !strings.Contains(string(buf[:n]), want) {
				t.Fatalf("collector %d got %s, want %s", i, buf[:n], want)
			}
			if want == `"state":"end"` && !strings.Contains(string(buf[:n]), `"usage":{"received":7,"sent":5}`) {
				t.Fatalf("end firefly without usage: %s", buf[:n])
			}
		}
	}
}

// Announcements that find the queue full are dropped, not waited for, and each one is reported
// to OnDrop (the proxy's scitunnel_proxy_fireflies_dropped_total).
func TestSenderReportsDrops(t *testing.T) {
	var drops int
	s := &Sender{Application: "test", OnDrop: func() { drops++ }}
	// A sender whose loop is stuck (say, on a collector slow to resolve): the queue exists, nothing
	// takes from it.
	s.once.Do(func() {
		s.hostname = "test"
		s.queue = make(chan outgoing, queueSize)
		s.done = make(chan struct{})
		close(s.done)
	})
	defer s.Close()
	f := Flow{Src: netip.MustParseAddrPort("[::1]:1000"), Dst: netip.MustParseAddrPort("[::1]:2000"), Protocol: "tcp", ExperimentID: 2, ActivityID: 9, Start: time.Now()}
	for range queueSize {
		s.Start(f)
	}
	if drops != 0 {
		t.Fatalf("%d drops while the queue had room", drops)
	}
	for range 5 {
		s.Start(f)
	}
	if drops != 5 {
		t.Fatalf("OnDrop called %d times for 5 announcements beyond a full queue", drops)
	}
}
