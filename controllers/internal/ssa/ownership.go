package ssa

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
)

// NameConflictError: an object already holds a child's name and the owner the child is applied
// for does not control it (a user's Service "web" beside a tunnel "web"). The Applier leaves
// such an object alone: applying with ForceOwnership would overwrite it and add a controller
// reference, and deleting the owner would then garbage-collect it.
type NameConflictError struct {
	Kind, Name string
	// Controller is the existing object's controller, nil when it has none.
	Controller *metav1.OwnerReference
}

func (e *NameConflictError) Error() string {
	return fmt.Sprintf("%s %s already exists and its controller is not the applying owner (%s)", e.Kind, e.Name, e.controlledBy())
}

func (e *NameConflictError) controlledBy() string {
	if c := e.Controller; c != nil {
		return fmt.Sprintf("it is controlled by %s %s, uid %s", c.Kind, c.Name, c.UID)
	}
	return "it has no controller"
}

// ApplyError is the API server's refusal of a child (an invalid field, an admission denial).
type ApplyError struct {
	Kind, Name string
	Err        error
}

func (e *ApplyError) Error() string { return fmt.Sprintf("applying %s %s: %v", e.Kind, e.Name, e.Err) }
func (e *ApplyError) Unwrap() error { return e.Err }

// maxRefusal bounds the API server's message in a condition (several problems share one).
const maxRefusal = 400

// Problem turns an Applier error into what the user must act on, as a condition's reason and
// message for a StreamTunnel's child: a name conflict, or an object the API server refuses. ok is false for errors that
// are worth retrying as they are (a timeout, a conflict on a precondition).
func Problem(err error) (reason, message string, ok bool) {
	var conflict *NameConflictError
	if errors.As(err, &conflict) {
		return conditions.ReasonNameConflict, fmt.Sprintf("%s %s already exists and does not belong to this tunnel "+
			"(%s; the operator leaves it untouched): rename the tunnel, or rename or delete the %s",
			conflict.Kind, conflict.Name, conflict.controlledBy(), conflict.Kind), true
	}
	var refused *ApplyError
	if errors.As(err, &refused) && isRefusal(refused.Err) {
		msg := conditions.Truncate(refusalMessage(refused.Err), maxRefusal)
		return conditions.ReasonApplyFailed, fmt.Sprintf("the API server refused %s %s: %s", refused.Kind, refused.Name, msg), true
	}
	return "", "", false
}

// isRefusal: a 4xx answer that the same request will get again (not 404, 409, 429).
func isRefusal(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := int(status.Status().Code)
	switch code {
	case http.StatusNotFound, http.StatusConflict, http.StatusTooManyRequests:
		return false
	}
	return code >= 400 && code < 500
}

func refusalMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Message != "" {
		return status.Status().Message
	}
	return err.Error()
}

// checkOwnership refuses to apply over an object the owner named in the apply configuration
// does not control. current is the cached object; when the cache shows none (a kind cached
// only with the operator's label, a cache behind a user's create), the API server is asked
// for the object's metadata through a.Live.
func (a *Applier) checkOwnership(ctx context.Context, current client.Object, id *metav1.PartialObjectMetadata) error {
	owner := metav1.GetControllerOfNoCopy(id)
	if owner == nil {
		return nil // an apply without a controller reference claims nothing
	}
	var existing metav1.Object
	switch {
	case current != nil:
		existing = current
	case a.Live != nil:
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(id.GroupVersionKind())
		if err := a.Live.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, live); err != nil {
			return client.IgnoreNotFound(err)
		}
		existing = live
	default:
		return nil
	}
	if c := metav1.GetControllerOfNoCopy(existing); c == nil || c.UID != owner.UID {
		return &NameConflictError{Kind: id.Kind, Name: id.Name, Controller: metav1.GetControllerOf(existing)}
	}
	return nil
}
