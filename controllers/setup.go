package controllers

import (
	"context"
	"net/http"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Setup wires both reconcilers into a manager: the field indexes, then the StreamTunnel and
// ScitagPolicy controllers. The manager and the envtest suites share it.
type Setup struct {
	Options Options
	// Reports reads the data plane's reports; nil disables throughput polling.
	Reports DataPlaneReports
	// RegistryHTTPClient fetches ScitagPolicy registry URLs; nil: a default client.
	RegistryHTTPClient *http.Client
	// Clock drives certificate issuance; nil: the real clock.
	Clock clock.PassiveClock
}

// Register adds the controllers to mgr and returns the StreamTunnel reconciler.
func (s Setup) Register(mgr ctrl.Manager) (*StreamTunnelReconciler, error) {
	if s.Clock == nil {
		s.Clock = clock.RealClock{}
	}
	if err := SetupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return nil, err
	}
	tunnels := &StreamTunnelReconciler{
		Client:  mgr.GetClient(),
		Scheme:  mgr.GetScheme(),
		Reports: s.Reports,
		Clock:   s.Clock,
		Options: s.Options,
	}
	if err := tunnels.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	policies := &ScitagPolicyReconciler{
		Client:     mgr.GetClient(),
		HTTPClient: s.RegistryHTTPClient,
		Clock:      s.Clock,
	}
	if err := policies.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return tunnels, nil
}
