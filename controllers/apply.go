package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// appliedCache remembers, per child object, the hash of the apply configuration last sent and
// the resourceVersion the API server answered with. When the informer cache still holds that
// version and the desired configuration hashes the same, the apply is skipped: at a thousand
// tunnels, re-sending identical applies on every pass is most of the API server's load. Any
// change by someone else bumps the resourceVersion, so drift is still corrected.
type appliedCache struct {
	mu sync.Mutex
	m  map[string]appliedEntry
}

type appliedEntry struct{ hash, resourceVersion string }

func (c *appliedCache) fresh(key, hash, rv string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	return ok && e.hash == hash && e.resourceVersion == rv
}

func (c *appliedCache) store(key, hash, rv string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]appliedEntry{}
	}
	c.m[key] = appliedEntry{hash, rv}
}

func (c *appliedCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// apply server-side-applies ac with the operator's field owner, taking ownership of the fields
// it sets. current is the cached object (nil when absent); into receives the object as the
// API server holds it after the apply (or current, when the apply was skipped).
func (r *StreamTunnelReconciler) apply(ctx context.Context, current client.Object, ac runtime.ApplyConfiguration, into client.Object) (changed bool, err error) {
	return applyWith(ctx, r.Client, &r.applied, current, ac, into)
}

func applyWith(ctx context.Context, c client.Client, cache *appliedCache, current client.Object, ac runtime.ApplyConfiguration, into client.Object) (bool, error) {
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
	if current != nil && cache.fresh(key, hash, current.GetResourceVersion()) {
		if into != nil {
			return false, copyObject(current, into)
		}
		return false, nil
	}
	if err := c.Apply(ctx, ac, FieldOwner, client.ForceOwnership); err != nil {
		cache.forget(key)
		return false, err
	}
	got, err := json.Marshal(ac) // the apply configuration now holds the server's answer
	if err != nil {
		return false, err
	}
	var after metav1.PartialObjectMetadata
	if err := json.Unmarshal(got, &after); err != nil {
		return false, err
	}
	cache.store(key, hash, after.ResourceVersion)
	changed := current == nil || current.GetResourceVersion() != after.ResourceVersion
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

// hashOf is a short stable digest for annotations.
func hashOf(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
