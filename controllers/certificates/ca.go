package certificates

// The Inbound's CA. Its certificate is copied, in connection bundles, to sites the operator
// cannot reach, so it is never replaced silently: once a CA was issued for a tunnel (its
// fingerprint is recorded in an annotation on the StreamTunnel), a missing or unreadable CA
// Secret is reported as CAUnavailable instead of becoming a new CA. A new CA comes only from a
// rotation (at two thirds of the CA's life, or on request), with an overlap in which ca.crt holds
// both CAs.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/internal/pki"
)

const (
	// AnnotationRotateCA on an Inbound StreamTunnel asks for a new CA: set it to any value not
	// used before (a date, say). The old CA stays trusted for the overlap.
	AnnotationRotateCA = "scitunnel.io/rotate-ca"
	// AnnotationCAFingerprint on an Inbound StreamTunnel records the SHA-256 of the CA the
	// operator issued for it. While it is there, a lost CA Secret is an error, not a reason to
	// make a new CA. Removing it (with the Secret gone) lets the operator start over with a new CA.
	AnnotationCAFingerprint = "scitunnel.io/ca-fingerprint"

	// On the CA Secret: the last rotation request handled, and the end of the overlap.
	annotationRotationHandled = "scitunnel.io/rotate-ca-handled"
	annotationPreviousUntil   = "scitunnel.io/previous-ca-until"
	previousKeyKey            = "previous-ca.key"

	// ReasonCAUnavailable: the CA Secret of a tunnel whose CA was issued is missing or unreadable.
	ReasonCAUnavailable = "CAUnavailable"
)

// caState is what the CA Secret holds.
type caState struct {
	signer *pki.KeyPair // signs new client and bundle certificates
	// previous is the CA being retired, during the overlap (until): still trusted, and still
	// the signer of the server certificate, so that sites holding the old bundle keep working
	// until they copy the new one.
	previous *pki.KeyPair
	until    time.Time
	handled  string // the AnnotationRotateCA value last acted on
}

// trust is ca.crt: the signer, then the CA being retired.
func (c *caState) trust() []byte {
	if c.previous == nil {
		return c.signer.CertPEM
	}
	return append(bytes.Clone(c.signer.CertPEM), c.previous.CertPEM...)
}

// serverSigner signs the server certificate: the old CA until the overlap ends.
func (c *caState) serverSigner() *pki.KeyPair {
	if c.previous != nil {
		return c.previous
	}
	return c.signer
}

// Fingerprint is the SHA-256 of a certificate, as AnnotationCAFingerprint records it.
func Fingerprint(certDER []byte) string {
	sum := sha256.Sum256(certDER)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// splitPEM returns each PEM block of data, re-encoded.
func splitPEM(data []byte) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		out = append(out, pem.EncodeToMemory(b))
	}
}

// parseCASecret reads a CA Secret; any inconsistency is an error (the Secret is corrupt).
func parseCASecret(sec *corev1.Secret) (*caState, error) {
	certs := splitPEM(sec.Data["ca.crt"])
	if len(certs) == 0 {
		return nil, errors.New("ca.crt holds no PEM certificate")
	}
	signer, err := pki.ParseKeyPair(certs[0], sec.Data["ca.key"])
	if err != nil {
		return nil, fmt.Errorf("ca.crt/ca.key: %w", err)
	}
	if !signer.Cert.IsCA {
		return nil, errors.New("ca.crt is not a CA certificate")
	}
	st := &caState{signer: signer, handled: sec.Annotations[annotationRotationHandled]}
	if len(sec.Data[previousKeyKey]) == 0 {
		return st, nil
	}
	if len(certs) < 2 {
		return nil, fmt.Errorf("%s without the previous CA in ca.crt", previousKeyKey)
	}
	if st.previous, err = pki.ParseKeyPair(certs[1], sec.Data[previousKeyKey]); err != nil {
		return nil, fmt.Errorf("ca.crt/%s: %w", previousKeyKey, err)
	}
	if st.until, err = time.Parse(time.RFC3339, sec.Annotations[annotationPreviousUntil]); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", annotationPreviousUntil, err)
	}
	return st, nil
}

// caOverlap is how long the old CA stays trusted after a rotation: one leaf lifetime of the
// Inbound, which caps every certificate its CA issues, so no leaf of the old CA outlives it, and
// a site that copies the renewed bundle in time (as it must for renewals) gets the new CA too.
func (r *Reconciler) caOverlap(t *scitunnelv1.StreamTunnel) time.Duration {
	return r.leafLifetime(t)
}

// ensureCA returns the Inbound's CA, creating the "<name>-ca" Secret the first time, ending an
// overlap that is over and rotating on request or at two thirds of the CA's life. It returns nil
// (with CertificateReady False, CAUnavailable) when the CA that was issued is gone.
func (r *Reconciler) ensureCA(ctx context.Context, s *scope) (*caState, error) {
	t := s.tunnel
	name := child.CASecretName(t.Name)
	cur := &corev1.Secret{}
	found, st, err := readCA(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: name}, cur)
	if err == nil && caChangeAhead(t, s.now, st) {
		// Creating, rotating or reporting the CA lost on a stale cache could rotate twice or
		// report a CA that was just written: confirm with the API server first.
		cur = &corev1.Secret{}
		found, st, err = readCA(ctx, r.APIReader, client.ObjectKey{Namespace: t.Namespace, Name: name}, cur)
	}
	if err != nil && st == nil && !found {
		return nil, err
	}
	recorded := t.Annotations[AnnotationCAFingerprint]
	if found && st != nil && !metav1.IsControlledBy(cur, t) && recorded == Fingerprint(st.signer.Cert.Raw) {
		if err := r.adoptRestoredCA(ctx, t, cur); err != nil {
			return nil, err
		}
	}
	switch {
	case st != nil:
	case recorded != "":
		r.caUnavailable(s, name, found, err)
		return nil, nil
	default:
		if st, err = r.newCA(t, s.now); err != nil {
			return nil, err
		}
		st.handled = t.Annotations[AnnotationRotateCA] // a request made before the CA existed is moot
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "CACreated", "IssueCertificate",
			"CA for this tunnel and its Outbound ends valid until %s", st.signer.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := r.advanceCA(t, s.now, st); err != nil {
		return nil, err
	}
	if err := r.applyCA(ctx, t, found, cur, st); err != nil {
		return nil, err
	}
	if err := r.recordFingerprint(ctx, t, recorded, st); err != nil {
		return nil, err
	}
	s.requeueAfter(pki.RenewAt(st.signer.Cert).Sub(s.now))
	if st.previous != nil {
		s.requeueAfter(st.until.Sub(s.now))
	}
	return st, nil
}

// adoptRestoredCA takes back a CA Secret restored from a backup without its owner reference
// (a restore makes new UIDs) or labels: the fingerprint recorded on the tunnel proves it is this
// tunnel's CA, so it is not a user's object of the same name (which the operator leaves alone).
func (r *Reconciler) adoptRestoredCA(ctx context.Context, t *scitunnelv1.StreamTunnel, cur *corev1.Secret) error {
	patch := client.MergeFrom(cur.DeepCopy())
	labels := cur.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, child.Labels(t))
	cur.SetLabels(labels)
	refs := slices.DeleteFunc(cur.GetOwnerReferences(), func(o metav1.OwnerReference) bool { return o.Controller != nil && *o.Controller })
	cur.SetOwnerReferences(append(refs, *metav1.NewControllerRef(t, scitunnelv1.GroupVersion.WithKind("StreamTunnel"))))
	if err := r.Patch(ctx, cur, patch); err != nil {
		return err
	}
	r.Recorder.Eventf(t, cur, corev1.EventTypeNormal, "CARestored", "IssueCertificate",
		"adopted the restored CA Secret %s: its certificate is the CA recorded on this tunnel", cur.Name)
	return nil
}

// readCA reads and parses the CA Secret. err is a read error (found false) or why the Secret
// is unreadable (found true, st nil).
func readCA(ctx context.Context, c client.Reader, key client.ObjectKey, into *corev1.Secret) (found bool, st *caState, err error) {
	if found, err = ssa.Get(ctx, c, key, into); err != nil || !found {
		return false, nil, err
	}
	st, err = parseCASecret(into)
	return true, st, err
}

// caChangeAhead says whether this pass would create, rotate or report lost the CA st describes.
func caChangeAhead(t *scitunnelv1.StreamTunnel, now time.Time, st *caState) bool {
	switch {
	case st == nil:
		return true
	case st.previous != nil:
		return !now.Before(st.until)
	}
	return rotationRequested(t, st) || !now.Before(pki.RenewAt(st.signer.Cert))
}

// rotationRequested: AnnotationRotateCA holds a value not acted on yet (removing it asks nothing).
func rotationRequested(t *scitunnelv1.StreamTunnel, st *caState) bool {
	v := t.Annotations[AnnotationRotateCA]
	return v != "" && v != st.handled
}

func (r *Reconciler) newCA(t *scitunnelv1.StreamTunnel, now time.Time) (*caState, error) {
	ca, err := pki.NewCA(fmt.Sprintf("SciTunnel CA %s/%s", t.Namespace, t.Name), now)
	if err != nil {
		return nil, err
	}
	return &caState{signer: ca}, nil
}

// caUnavailable reports a lost CA and what to do about it.
func (r *Reconciler) caUnavailable(s *scope, name string, found bool, err error) {
	t := s.tunnel
	what := fmt.Sprintf("the CA Secret %s/%s is missing", t.Namespace, name)
	if found {
		what = fmt.Sprintf("the CA Secret %s/%s is unreadable (%v)", t.Namespace, name, err)
	}
	// A Secret restored without its labels is not in the cache and triggers no pass: look again.
	s.requeueAfter(cmp.Or(r.Options.UserObjectsRecheck, time.Minute))
	s.set(metav1.ConditionFalse, ReasonCAUnavailable, fmt.Sprintf("%s, but a CA was issued for this tunnel (%s %s) and its certificate may have been copied to other sites: "+
		"restore the Secret from a backup; or, to start over with a new CA (every copied bundle must then be replaced), delete the Secret and remove the annotation %s from this StreamTunnel",
		what, AnnotationCAFingerprint, t.Annotations[AnnotationCAFingerprint], AnnotationCAFingerprint))
}

// advanceCA ends an overlap that is over, then starts a rotation if one is requested or due.
// A rotation waits for the current overlap to end, so that at most two CAs are trusted.
func (r *Reconciler) advanceCA(t *scitunnelv1.StreamTunnel, now time.Time, st *caState) error {
	if st.previous != nil && !now.Before(st.until) {
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "CAOverlapEnded", "IssueCertificate",
			"the previous CA is no longer trusted; certificates it signed are replaced")
		st.previous, st.until = nil, time.Time{}
	}
	if st.previous != nil {
		return nil
	}
	requested := rotationRequested(t, st)
	if !requested && now.Before(pki.RenewAt(st.signer.Cert)) {
		return nil
	}
	next, err := r.newCA(t, now)
	if err != nil {
		return err
	}
	st.previous, st.signer = st.signer, next.signer
	st.until = now.Add(r.caOverlap(t))
	if requested {
		st.handled = t.Annotations[AnnotationRotateCA]
	}
	why := "the CA is two thirds into its life"
	if requested {
		why = fmt.Sprintf("requested by the annotation %s", AnnotationRotateCA)
	}
	r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "CARotated", "IssueCertificate",
		"new CA (%s); the previous one stays trusted until %s: copy the renewed bundle to other sites before then", why, st.until.UTC().Format(time.RFC3339))
	return nil
}

func (r *Reconciler) applyCA(ctx context.Context, t *scitunnelv1.StreamTunnel, found bool, cur *corev1.Secret, st *caState) error {
	data := map[string][]byte{"ca.crt": st.trust(), "ca.key": st.signer.KeyPEM}
	annotations := map[string]string{annotationRotationHandled: st.handled}
	if st.previous != nil {
		data[previousKeyKey] = st.previous.KeyPEM
		annotations[annotationPreviousUntil] = st.until.UTC().Format(time.RFC3339)
	}
	ac := corev1ac.Secret(child.CASecretName(t.Name), t.Namespace).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(child.Labels(t)).
		WithAnnotations(annotations).
		WithOwnerReferences(child.OwnerRef(t)).
		WithData(data)
	var current client.Object
	if found {
		current = cur
	}
	_, err := r.applier.Apply(ctx, current, ac, nil)
	return err
}

// recordFingerprint keeps AnnotationCAFingerprint on the tunnel at the signing CA's. A valid
// CA Secret that someone replaced with another CA is taken (they hold the Secret's rights), with
// a warning.
func (r *Reconciler) recordFingerprint(ctx context.Context, t *scitunnelv1.StreamTunnel, recorded string, st *caState) error {
	fp := Fingerprint(st.signer.Cert.Raw)
	if recorded == fp {
		return nil
	}
	if recorded != "" && (st.previous == nil || Fingerprint(st.previous.Cert.Raw) != recorded) {
		r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, "CAReplaced", "IssueCertificate",
			"the CA Secret holds a CA other than the one issued for this tunnel (%s); using it", recorded)
	}
	patch := client.MergeFrom(t.DeepCopy())
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	t.Annotations[AnnotationCAFingerprint] = fp
	return r.Patch(ctx, t, patch)
}
