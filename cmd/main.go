// Command manager is the SciTunnel operator: it reconciles StreamTunnels into proxy pods,
// Services, Secrets and ConfigMaps, and ScitagPolicies into flow labels.
package main

import (
	"crypto/tls"
	"flag"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers"
	"github.com/scitunnel/scitunnel/controllers/scitagpolicy"
	"github.com/scitunnel/scitunnel/controllers/scitagpolicy/egress"
	"github.com/scitunnel/scitunnel/controllers/telemetry"
	"github.com/scitunnel/scitunnel/dataplane/contract"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(scitunnelv1.AddToScheme(scheme))
}

// flags are the manager's command-line flags.
type flags struct {
	metricsAddr, probeAddr, pprofAddr      string
	leaderElectionNamespace                string
	secureMetrics, enableHTTP2, leaderElec bool
	opts                                   controllers.Options
	statusPort, analyzerPort               int
	watchNamespaces                        []string
	qps                                    float64
	burst                                  int
	zapOpts                                zap.Options
	registry                               registryFlags
}

// registryFlags are the rules for ScitagPolicy registry URLs (the chart's registry values).
type registryFlags struct {
	allowHTTP                  bool
	clusterCIDRs, refusedCIDRs string
	allowedCIDRs               string
	maxURLs                    int
}

func (r *registryFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&r.allowHTTP, "registry-allow-http", false, "Fetch ScitagPolicy registry URLs over plain http:// too (default: https only).")
	fs.StringVar(&r.clusterCIDRs, "cluster-cidrs", "", "The cluster's pod and service CIDRs, comma-separated: registry URLs never reach them.")
	fs.StringVar(&r.refusedCIDRs, "registry-refused-cidrs", prefixList(egress.DefaultPrivate()),
		"Ranges registry URLs may not reach besides loopback, link-local and the cluster (default: the private ranges).")
	fs.StringVar(&r.allowedCIDRs, "registry-allowed-cidrs", "", "Ranges registry URLs may reach even inside a refused range (a site's internal mirror).")
	fs.IntVar(&r.maxURLs, "registry-max-urls", scitagpolicy.DefaultMaxRegistryURLs, "Registry URLs cached at once.")
}

// options turns the flags into the controller's rules.
func (r registryFlags) options() (scitagpolicy.RegistryOptions, error) {
	var lists [3][]netip.Prefix
	for i, s := range []string{r.clusterCIDRs, r.refusedCIDRs, r.allowedCIDRs} {
		p, err := egress.ParsePrefixes(strings.Split(s, ","))
		if err != nil {
			return scitagpolicy.RegistryOptions{}, err
		}
		lists[i] = p
	}
	return scitagpolicy.RegistryOptions{
		Egress:  egress.Rules{AllowHTTP: r.allowHTTP, Refused: append(lists[0], lists[1]...), Allowed: lists[2]},
		MaxURLs: r.maxURLs,
	}, nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func parseFlags() flags {
	var f flags
	var pullPolicy, managerPodLabels string
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint (:8443 HTTPS, :8080 HTTP, 0 off).")
	flag.BoolVar(&f.secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS with Kubernetes authentication and authorization.")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.StringVar(&f.pprofAddr, "pprof-bind-address", "0", "Address of Go's /debug/pprof endpoints (0: off).")
	flag.BoolVar(&f.leaderElec, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&f.leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the manager's own namespace in a cluster).")
	flag.BoolVar(&f.enableHTTP2, "enable-http2", false, "Serve metrics with HTTP/2 (off by default: HTTP/2 rapid-reset CVEs).")
	flag.StringVar(&f.opts.DataPlaneImage, "dataplane-image", "ghcr.io/scitunnel/scitunnel:latest", "Image of the proxy and sFlow sidecar containers.")
	flag.StringVar(&pullPolicy, "dataplane-image-pull-policy", "", "imagePullPolicy of the data-plane containers (Always, IfNotPresent, Never; empty: Kubernetes' default).")
	flag.StringVar(&f.opts.TrustDomain, "trust-domain", "scitunnel.local", "Trust domain of the spiffe:// client identities the operator issues.")
	flag.StringVar(&f.opts.ClusterDomain, "cluster-domain", "cluster.local", "The cluster's DNS domain.")
	flag.DurationVar(&f.opts.CertificateDuration, "certificate-duration", 90*24*time.Hour, "Default lifetime of the leaf certificates the operator issues.")
	flag.DurationVar(&f.opts.ThroughputInterval, "throughput-interval", 10*time.Second, "How often the proxies' reports are read into status while pods are ready.")
	flag.IntVar(&f.opts.MaxConcurrentReconciles, "max-concurrent-reconciles", 4, "StreamTunnels reconciled in parallel.")
	flag.IntVar(&f.statusPort, "dataplane-status-port", contract.AdminPort, "Port of the proxy's /v1/status.")
	flag.IntVar(&f.analyzerPort, "dataplane-analyzer-port", contract.AnalyzerPort, "Port of the sFlow analyzer's /v1/tags.")
	flag.Float64Var(&f.qps, "kube-api-qps", 50, "Requests per second to the API server.")
	flag.IntVar(&f.burst, "kube-api-burst", 100, "Burst of requests to the API server.")
	flag.Func("watch-namespaces", "Comma-separated namespaces the manager confines itself to (the chart's namespaced install; empty: all).", func(v string) error {
		for ns := range strings.SplitSeq(v, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				f.watchNamespaces = append(f.watchNamespaces, ns)
			}
		}
		return nil
	})
	np := &f.opts.TunnelNetworkPolicy
	flag.BoolVar(&np.Enabled, "tunnel-network-policies", true, "Give each tunnel a NetworkPolicy that admits only the manager's pods and --monitoring-namespace to its pods' admin (9090) and analyzer (9091, 6343) ports.")
	flag.StringVar(&np.ManagerNamespace, "manager-namespace", ownNamespace(), "The manager's namespace, for the tunnels' NetworkPolicies (default: its own in a cluster).")
	flag.StringVar(&managerPodLabels, "manager-pod-labels", "app.kubernetes.io/name=scitunnel,control-plane=controller-manager", "Labels of the manager's pods (k=v,...), for the tunnels' NetworkPolicies.")
	flag.StringVar(&np.MonitoringNamespace, "monitoring-namespace", "", "Namespace (e.g. Prometheus') the tunnels' NetworkPolicies also admit to the admin and analyzer ports.")
	f.registry.bind(flag.CommandLine)
	f.zapOpts = zap.Options{Development: false}
	f.zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	f.opts.ImagePullPolicy = corev1.PullPolicy(pullPolicy)
	podLabels, err := labels.ConvertSelectorToLabelsMap(managerPodLabels)
	if err != nil {
		ctrl.Log.Error(err, "--manager-pod-labels must be k=v,...")
		os.Exit(2)
	}
	np.ManagerPodLabels = podLabels
	return f
}

// ownNamespace is the namespace the manager runs in, from its service account's mount; empty
// outside a cluster.
func ownNamespace() string {
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// metricsOptions serves metrics over HTTPS with authentication and authorization unless
// --metrics-secure=false, and HTTP/1.1 only unless --enable-http2.
func (f flags) metricsOptions() metricsserver.Options {
	var tlsOpts []func(*tls.Config)
	if !f.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	opts := metricsserver.Options{BindAddress: f.metricsAddr, SecureServing: f.secureMetrics, TLSOpts: tlsOpts}
	if f.secureMetrics {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return opts
}

func main() {
	f := parseFlags()
	opts := f.opts
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zapOpts)))
	log := ctrl.Log.WithName("setup")

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(f.qps), f.burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       f.metricsOptions(),
		HealthProbeBindAddress:        f.probeAddr,
		PprofBindAddress:              f.pprofAddr,
		LeaderElection:                f.leaderElec,
		LeaderElectionID:              "scitunnel-operator.scitunnel.io",
		LeaderElectionNamespace:       f.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(f.watchNamespaces...),
	})
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	registry, err := f.registry.options()
	if err != nil {
		log.Error(err, "invalid registry flags")
		os.Exit(1)
	}
	setup := controllers.Setup{
		Options:  opts,
		Reports:  telemetry.NewHTTPReports(f.statusPort, f.analyzerPort),
		Registry: registry,
	}
	if err := setup.Register(mgr); err != nil {
		log.Error(err, "unable to set up the controllers")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up the ready check")
		os.Exit(1)
	}
	if os.Getenv("GOGC") == "" {
		// The manager's live heap is mostly informer caches, which live as long as the process;
		// Go's default GOGC=100 lets the heap grow to twice that before collecting, for little
		// CPU saved. 50 keeps a thousand tunnels under 150 MB (make bench-reconcile).
		debug.SetGCPercent(50)
	}
	log.Info("starting the manager", "dataplaneImage", opts.DataPlaneImage, "namespaces", f.watchNamespaces)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "the manager stopped")
		os.Exit(1)
	}
}
