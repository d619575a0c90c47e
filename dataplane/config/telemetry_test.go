package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// The sFlow sidecar's fields (owned by the telemetry engineer).
func TestTelemetryFields(t *testing.T) {
	base := `{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5,"target":"a:1"}],"telemetry":%s}`
	ok := `{"samplingRate":1000,"fireflyAddress":":10514","agentAddress":"2001:db8::1","analyzerAddress":"[::]:6343","httpAddress":"127.0.0.1:9091"}`
	c, err := Parse([]byte(strings.Replace(base, "%s", ok, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Telemetry.FireflyAddress != ":10514" || c.Telemetry.AgentAddress != "2001:db8::1" {
		t.Errorf("telemetry %+v", c.Telemetry)
	}
	for field, tel := range map[string]string{
		"telemetry.fireflyAddress":   `{"fireflyAddress":"10514"}`,
		"telemetry.agentAddress":     `{"agentAddress":"pod-ip"}`,
		"telemetry.analyzerAddress":  `{"analyzerAddress":":99999"}`,
		"telemetry.httpAddress":      `{"httpAddress":"localhost"}`,
		"telemetry.allowedAgents[1]": `{"allowedAgents":["10.0.0.1","switch-1"]}`,
		"telemetry.headerBytes":      `{"headerBytes":20}`,
	} {
		_, err := Parse([]byte(strings.Replace(base, "%s", tel, 1)))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v, want one naming %s", tel, err, field)
		}
	}
}

func TestAllowedAgents(t *testing.T) {
	tel := Telemetry{AllowedAgents: []string{"192.0.2.7", "10.20.3.4/16", "2001:db8::/32", "::ffff:10.0.0.0/104"}}
	if err := tel.Validate(); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(tel.AllowedAgentPrefixes())
	if want := "[192.0.2.7/32 10.20.0.0/16 2001:db8::/32 10.0.0.0/8]"; got != want {
		t.Errorf("prefixes %s, want %s", got, want)
	}
}

func TestHeaderBytesJSON(t *testing.T) {
	for in, want := range map[string]HeaderBytes{`"transport"`: HeaderBytesTransport, `96`: 96, `"96"`: 96} {
		var h HeaderBytes
		if err := json.Unmarshal([]byte(in), &h); err != nil || h != want {
			t.Errorf("%s: %d %v, want %d", in, h, err, want)
		}
	}
	if b, _ := json.Marshal(Telemetry{HeaderBytes: HeaderBytesTransport}); !strings.Contains(string(b), `"headerBytes":"transport"`) {
		t.Errorf("marshalled %s", b)
	}
	var h HeaderBytes
	if err := json.Unmarshal([]byte(`"payload"`), &h); err == nil {
		t.Error("headerBytes \"payload\" accepted")
	}
}
