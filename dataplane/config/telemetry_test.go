package config

import (
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
		"telemetry.fireflyAddress":  `{"fireflyAddress":"10514"}`,
		"telemetry.agentAddress":    `{"agentAddress":"pod-ip"}`,
		"telemetry.analyzerAddress": `{"analyzerAddress":":99999"}`,
		"telemetry.httpAddress":     `{"httpAddress":"localhost"}`,
	} {
		_, err := Parse([]byte(strings.Replace(base, "%s", tel, 1)))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v, want one naming %s", tel, err, field)
		}
	}
}
