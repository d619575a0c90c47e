// Package ssa writes the operator's objects with server-side apply: children through an
// Applier that skips applies the API server already holds, and status fields through
// ApplyStatus, under one field manager per controller, so that the controllers sharing a
// StreamTunnel's status never overwrite each other's fields.
package ssa

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Applier server-side-applies child objects for one controller. It remembers, per object, the
// hash of the apply configuration last sent and the resourceVersion the API server answered
// with. When the informer cache still holds that version and the desired configuration hashes
// the same, the apply is skipped: at a thousand tunnels, re-sending identical applies on every
// pass is most of the API server's load. Any change by someone else bumps the
// resourceVersion, so drift is still corrected.
//
// It never touches an object its owner does not control: an object of the child's name
// without the apply's controller reference makes Apply fail with a NameConflictError.
type Applier struct {
	Client client.Client
	// Live reads an object's metadata from the API server when current is nil: the cache may
	// not show a user's object (kinds cached only with the operator's label). Nil trusts current.
	Live  client.Reader
	Owner client.FieldOwner

	mu sync.Mutex
	m  map[string]appliedEntry
}

type appliedEntry struct{ hash, resourceVersion string }

func (a *Applier) fresh(key, hash, rv string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.m[key]
	return ok && e.hash == hash && e.resourceVersion == rv
}

func (a *Applier) store(key, hash, rv string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]appliedEntry{}
	}
	a.m[key] = appliedEntry{hash, rv}
}

func (a *Applier) forget(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, key)
}

// Apply server-side-applies ac, taking ownership of the fields it sets. current is the cached
// object (nil when absent); into receives the object as the API server holds it after the
// apply (or current, when the apply was skipped). changed says whether the object changed.
// It fails with a NameConflictError, touching nothing, when the object exists and is not
// controlled by ac's controller reference, and with an ApplyError when the API server
// refuses the object (see Problem).
func (a *Applier) Apply(ctx context.Context, current client.Object, ac runtime.ApplyConfiguration, into client.Object) (changed bool, err error) {
	desired, err := json.Marshal(ac)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(desired)
	hash := hex.EncodeToString(sum[:])
	var id metav1.PartialObjectMetadata
	if err := json.Unmarshal(desired, &id); err != nil {
		return false, err
	}
	key := fmt.Sprintf("%s/%s/%s/%s", id.APIVersion, id.Kind, id.Namespace, id.Name)
	if err := a.checkOwnership(ctx, current, &id); err != nil {
		a.forget(key)
		return false, err
	}
	if current != nil && a.fresh(key, hash, current.GetResourceVersion()) {
		if into != nil {
			return false, copyObject(current, into)
		}
		return false, nil
	}
	if err := a.Client.Apply(ctx, ac, a.Owner, client.ForceOwnership); err != nil {
		a.forget(key)
		return false, &ApplyError{Kind: id.Kind, Name: id.Name, Err: err}
	}
	got, err := json.Marshal(ac) // the apply configuration now holds the server's answer
	if err != nil {
		return false, err
	}
	var after metav1.PartialObjectMetadata
	if err := json.Unmarshal(got, &after); err != nil {
		return false, err
	}
	a.store(key, hash, after.ResourceVersion)
	changed = current == nil || current.GetResourceVersion() != after.ResourceVersion
	if into != nil {
		return changed, json.Unmarshal(got, into)
	}
	return changed, nil
}

func copyObject(from, to client.Object) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, to)
}

// Get fetches an object (from the cache); found is false when it does not exist.
func Get(ctx context.Context, c client.Reader, key client.ObjectKey, obj client.Object) (found bool, err error) {
	if err := c.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// HashOf is a short stable digest for annotations.
func HashOf(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ApplyStatus server-side-applies the status fields one controller owns on obj. status is
// the JSON of those fields alone: a field this owner set before and leaves out now is removed
// (unless another owner holds it too). With preconditioned, the apply carries obj's
// resourceVersion and fails with a conflict when obj was read from a stale cache (for owners
// whose decision depends on other owners' fields).
func ApplyStatus(ctx context.Context, c client.Client, obj client.Object, owner client.FieldOwner, status map[string]any, preconditioned bool) error {
	gvk, err := c.GroupVersionKindFor(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	u.SetGroupVersionKind(gvk)
	u.SetName(obj.GetName())
	u.SetNamespace(obj.GetNamespace())
	if preconditioned {
		u.SetResourceVersion(obj.GetResourceVersion())
	}
	return c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), owner, client.ForceOwnership)
}

// Fields turns a typed value into the JSON map ApplyStatus takes (its omitempty fields left out).
func Fields(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	return out, json.Unmarshal(b, &out)
}

// List returns l, or an empty list for nil: a list field sent empty is cleared, one left out
// of an apply may stay (another owner may hold it).
func List[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}
