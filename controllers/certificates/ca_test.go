package certificates

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/scitunnel/scitunnel/internal/pki"
)

// The CA Secret written during an overlap reads back as written, and every inconsistency in it
// is reported as corrupt (which, for a tunnel whose CA was issued, means CAUnavailable).
func TestCASecretDuringOverlapRoundTrips(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	oldCA, _ := pki.NewCA("old", now)
	newCA, _ := pki.NewCA("new", now)
	until := now.Add(3 * time.Hour)
	st := &caState{signer: newCA, previous: oldCA, until: until, handled: "r1"}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			annotationRotationHandled: "r1", annotationPreviousUntil: until.Format(time.RFC3339)}},
		Data: map[string][]byte{"ca.crt": st.trust(), "ca.key": newCA.KeyPEM, previousKeyKey: oldCA.KeyPEM},
	}
	got, err := parseCASecret(sec)
	if err != nil {
		t.Fatal(err)
	}
	if !got.signer.Cert.Equal(newCA.Cert) || !got.previous.Cert.Equal(oldCA.Cert) || !got.until.Equal(until) || got.handled != "r1" {
		t.Fatalf("read back %+v", got)
	}
	if got.serverSigner() != got.previous {
		t.Error("during the overlap the server certificate is not signed by the old CA")
	}

	corrupt := map[string]func(map[string][]byte){
		"no ca.crt":             func(d map[string][]byte) { delete(d, "ca.crt") },
		"key of another CA":     func(d map[string][]byte) { d["ca.key"] = oldCA.KeyPEM },
		"garbage key":           func(d map[string][]byte) { d["ca.key"] = []byte("garbage") },
		"previous key, one CA":  func(d map[string][]byte) { d["ca.crt"] = newCA.CertPEM },
		"previous key mismatch": func(d map[string][]byte) { d[previousKeyKey] = newCA.KeyPEM },
	}
	for name, breakIt := range corrupt {
		d := map[string][]byte{}
		for k, v := range sec.Data {
			d[k] = v
		}
		breakIt(d)
		if _, err := parseCASecret(&corev1.Secret{ObjectMeta: sec.ObjectMeta, Data: d}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
