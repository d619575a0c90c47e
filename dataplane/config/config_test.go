package config

import (
	"strings"
	"testing"
	"time"
)

const validInbound = `{
  "version": 1, "tunnel": "ns/in", "role": "Inbound",
  "routes": [{"listenPort": 5100, "target": "producer:5074"}],
  "tls": {"certFile": "/c", "keyFile": "/k", "caFile": "/ca", "allowedSANs": ["spiffe://x"]},
  "scitag": {"experimentId": 2, "activityId": 16, "entropy": true},
  "drainTimeout": "5s"
}`

func TestParseDefaultsAndRoundTrip(t *testing.T) {
	c, err := Parse([]byte(validInbound))
	if err != nil {
		t.Fatal(err)
	}
	if c.Protocol != TLS || c.AdminAddress != ":9090" || c.DialTimeout.Duration != 10*time.Second || c.DrainTimeout.Duration != 5*time.Second {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if c.Scitag.FlowLabel() != 65600 {
		t.Fatalf("flow label %d", c.Scitag.FlowLabel())
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse of marshalled config: %v\n%s", err, out)
	}
	if again.DrainTimeout != c.DrainTimeout || again.Routes[0] != c.Routes[0] {
		t.Fatalf("round trip changed the config")
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]struct{ doc, want string }{
		"unknown field":  {`{"version":1,"role":"Inbound","routes":[{"listenPort":1,"target":"a:1"}],"protocol":"TCP","bogus":1}`, "bogus"},
		"bad role":       {`{"version":1,"role":"Sideways","protocol":"TCP","routes":[{"listenPort":1,"target":"a:1"}]}`, "role"},
		"bad protocol":   {`{"version":1,"role":"Inbound","protocol":"SCTP","routes":[{"listenPort":1,"target":"a:1"}]}`, "protocol"},
		"no routes":      {`{"version":1,"role":"Inbound","protocol":"TCP"}`, "routes"},
		"port range":     {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":70000,"target":"a:1"}]}`, "routes[0].listenPort"},
		"dup port":       {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"},{"listenPort":5,"target":"a:2"}]}`, "routes[1].listenPort"},
		"bad target":     {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"nohostport"}]}`, "routes[0].target"},
		"tls missing":    {`{"version":1,"role":"Inbound","routes":[{"listenPort":5,"target":"a:1"}]}`, "tls"},
		"future version": {`{"version":2,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}]}`, "version"},
		"bad scitag":     {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}],"scitag":{"experimentId":600,"activityId":1}}`, "scitag"},
		"bad duration":   {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}],"drainTimeout":"soon"}`, "duration"},
		"datagram size":  {`{"version":1,"role":"Inbound","protocol":"UDP","udpTransport":"Plain","routes":[{"listenPort":5,"target":"a:1"}],"maxDatagramSize":70000}`, "maxDatagramSize"},
		"datagram tcp":   {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}],"maxDatagramSize":1200}`, "maxDatagramSize"},
		"admin address":  {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}],"adminAddress":"9090"}`, "adminAddress"},
		// The sidecar takes the pod's tag from "scitag"; telemetry.assignedTags is gone.
		"assignedTags gone": {`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}],"telemetry":{"samplingRate":10,"assignedTags":["2.16"]}}`, "assignedTags"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", name, err, c.want)
		}
	}
}

func TestExpand(t *testing.T) {
	routes, err := Expand(PortRange(5100, 5), []string{"p:5074", "p:5075"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"p:5074", "p:5075", "p:5074", "p:5075", "p:5074"}
	for i, r := range routes {
		if r.ListenPort != 5100+i || r.Target != want[i] {
			t.Fatalf("route %d = %+v", i, r)
		}
	}
	if _, err := Expand([]int{1}, []string{"a:1", "b:2"}); err == nil {
		t.Fatal("fewer ports than targets accepted")
	}
}

func TestParsePorts(t *testing.T) {
	p, err := ParsePorts("5100-5102, 6000")
	if err != nil || len(p) != 4 || p[2] != 5102 || p[3] != 6000 {
		t.Fatalf("ParsePorts = %v, %v", p, err)
	}
	for _, bad := range []string{"", "0", "5-3", "x", "70000"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
}

func TestMaxDatagramSizeDefaultsForUDP(t *testing.T) {
	c, err := Parse([]byte(`{"version":1,"role":"Outbound","protocol":"UDP","udpTransport":"Plain","routes":[{"listenPort":5,"target":"a:1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxDatagramSize != MaxFramedDatagram {
		t.Fatalf("maxDatagramSize defaulted to %d, want %d", c.MaxDatagramSize, MaxFramedDatagram)
	}
	c, err = Parse([]byte(`{"version":1,"role":"Outbound","protocol":"UDP","udpTransport":"Plain","maxDatagramSize":1200,"routes":[{"listenPort":5,"target":"a:1"}]}`))
	if err != nil || c.MaxDatagramSize != 1200 {
		t.Fatalf("maxDatagramSize 1200: %v, %+v", err, c)
	}
	c, err = Parse([]byte(`{"version":1,"role":"Outbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}]}`))
	if err != nil || c.MaxDatagramSize != 0 {
		t.Fatalf("TCP config got maxDatagramSize %d (%v)", c.MaxDatagramSize, err)
	}
}

// Each section validates itself, naming its own fields; Config.Validate puts the section's path
// in front, and Fields takes the joined errors apart for a caller that maps them (the CLI).
func TestSectionsValidateThemselves(t *testing.T) {
	names := func(err error) (fields, keys []string) {
		for _, fe := range Fields(err) {
			fields, keys = append(fields, fe.Field), append(keys, fe.Name())
		}
		return fields, keys
	}
	if f, _ := names((&TLSConfig{KeyFile: "/k"}).Validate()); strings.Join(f, ",") != "certFile,caFile" {
		t.Errorf("TLSConfig.Validate names %v", f)
	}
	tel := &Telemetry{SamplingRate: -1, Collectors: []string{"ok:1", "no-port"}}
	tel.Default()
	if f, _ := names(tel.Validate()); strings.Join(f, ",") != "samplingRate,collectors[1]" {
		t.Errorf("Telemetry.Validate names %v", f)
	}
	if err := (&Scitag{ExperimentID: 600}).Validate(); err == nil || Fields(err)[0].Field != "" {
		t.Errorf("Scitag.Validate: %v", err)
	}
	if err := (Routes{}).Validate(); err == nil || !strings.Contains(err.Error(), "at least one route") {
		t.Errorf("Routes{}.Validate: %v", err)
	}

	c := &Config{Role: Outbound, Protocol: TLS, TLS: &TLSConfig{CertFile: "/c", KeyFile: "/k"},
		Routes:    []Route{{ListenPort: 5, Target: "a:1"}, {ListenPort: 5, Target: "nohost"}},
		Fireflies: &Fireflies{Collectors: []string{"x"}}, Scitag: &Scitag{ActivityID: 99}}
	c.Default()
	err := c.Validate()
	fields, keys := names(err)
	want := []string{"routes[1].listenPort", "routes[1].target", "tls.caFile", "scitag", "fireflies.collectors[0]"}
	wantKeys := []string{"routes.listenPort", "routes.target", "tls.caFile", "scitag", "fireflies.collectors"}
	if strings.Join(fields, ",") != strings.Join(want, ",") || strings.Join(keys, ",") != strings.Join(wantKeys, ",") {
		t.Fatalf("Config.Validate names %v (keys %v), want %v (%v)\n%v", fields, keys, want, wantKeys, err)
	}
	if !strings.Contains(err.Error(), `routes[1].target: "nohost" is not host:port`) || !strings.Contains(err.Error(), "tls.caFile: is required") {
		t.Errorf("messages: %v", err)
	}
}

func TestLimitsDefaultAndRefuse(t *testing.T) {
	var none *Limits
	if got := none.WithDefaults(); got.MaxUDPSessions != DefaultMaxUDPSessions || got.HandshakeTimeout.Duration != DefaultHandshakeTimeout ||
		got.HalfCloseTimeout.Duration != DefaultHalfCloseTimeout || got.UDPQueueBytes != DefaultUDPQueueBytes {
		t.Fatalf("defaults of an absent section: %+v", got)
	}
	set := (&Limits{MaxHandshakes: 7}).WithDefaults()
	if set.MaxHandshakes != 7 || set.MaxUDPSessionsPerSource != DefaultMaxUDPSessionsPerSource {
		t.Fatalf("a set field must stay and the others default: %+v", set)
	}
	base := `{"version":1,"role":"Outbound","protocol":"UDP","udpTransport":"Plain","routes":[{"listenPort":5,"target":"a:1"}],"limits":%s}`
	for limits, field := range map[string]string{
		`{"maxUDPSessions":-1}`:          "limits.maxUDPSessions",
		`{"maxUDPSessionsPerSource":-3}`: "limits.maxUDPSessionsPerSource",
		`{"maxHandshakes":-1}`:           "limits.maxHandshakes",
		`{"udpQueueBytes":1000}`:         "limits.udpQueueBytes",
		`{"handshakeTimeout":"-1s"}`:     "limits.handshakeTimeout",
		`{"halfCloseTimeout":"-1s"}`:     "limits.halfCloseTimeout",
	} {
		_, err := Parse([]byte(strings.Replace(base, "%s", limits, 1)))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("limits %s: got %v, want an error naming %s", limits, err, field)
		}
	}
	if _, err := Parse([]byte(strings.Replace(base, "%s", `{"maxUDPSessions":10,"udpQueueBytes":65535,"handshakeTimeout":"2s"}`, 1))); err != nil {
		t.Fatalf("valid limits refused: %v", err)
	}
}
