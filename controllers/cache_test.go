package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// In a shared cluster the manager must not hold other groups' Secrets and ConfigMaps in
// memory: it caches only what it labelled (controllers.CacheOptions).
var _ = Describe("The manager's cache", func() {
	It("holds the Secrets and ConfigMaps the operator made, and no one else's", func() {
		ns := newNamespace("cache")
		managed := map[string]string{"app.kubernetes.io/managed-by": "scitunnel-operator"}
		objs := []client.Object{
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"}, StringData: map[string]string{"password": "hunter2"}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"}, Data: map[string]string{"k": "v"}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ours", Labels: managed}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ours", Labels: managed}},
		}
		for _, o := range objs {
			Expect(k8sClient.Create(ctx, o)).To(Succeed())
		}
		// Once the cache has the operator's objects, created after the others, it would have
		// the others too if it held them.
		Eventually(func(g Gomega) {
			g.Expect(mgrCache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ours"}, &corev1.Secret{})).To(Succeed())
			g.Expect(mgrCache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ours"}, &corev1.ConfigMap{})).To(Succeed())
		}, timeout, interval).Should(Succeed())
		err := mgrCache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "theirs"}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a user's Secret is in the manager's cache: %v", err)
		err = mgrCache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "theirs"}, &corev1.ConfigMap{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a user's ConfigMap is in the manager's cache: %v", err)
	})
})
