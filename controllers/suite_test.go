package controllers_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/scitunnel/scitunnel/controllers"
	"github.com/scitunnel/scitunnel/controllers/scitagpolicy"
	"github.com/scitunnel/scitunnel/controllers/scitagpolicy/egress"
	"github.com/scitunnel/scitunnel/controllers/telemetry"
	"github.com/scitunnel/scitunnel/controllers/tunnel"
	"github.com/scitunnel/scitunnel/dataplane/report"
	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

// The reconcilers' suite: a real kube-apiserver and etcd (envtest), the manager running both
// controllers, a fake clock for certificate lifetimes, and loopback HTTP servers standing in
// for the proxies' and analyzers' report endpoints.

var skipNameValidation = true

var (
	env        *envtest.Environment
	cfg        *rest.Config
	scheme     *runtime.Scheme
	k8sClient  client.Client
	ctx        context.Context
	cancel     context.CancelFunc
	stopMgr    context.CancelFunc
	mgrDone    chan struct{}
	fakeClock  *clocktesting.FakePassiveClock
	dataPlane  *fakeDataPlane
	reportsAPI *telemetry.HTTPReports
	// mgrCache is the running manager's cache, to check what it holds.
	mgrCache cache.Cache
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "SciTunnel controllers (envtest)")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	env, cfg, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	scheme = testenv.Scheme()
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	fakeClock = clocktesting.NewFakePassiveClock(time.Now())
	dataPlane = newFakeDataPlane()
	reportsAPI = telemetry.NewHTTPReports(dataPlane.statusPort, dataPlane.tagsPort)
	startManager()
})

var _ = AfterSuite(func() {
	stopManager()
	dataPlane.close()
	cancel()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// tunnelNetworkPolicy is what startManager gives the manager (networkpolicy_test.go turns it
// off for a while).
var tunnelNetworkPolicy = tunnel.NetworkPolicyOptions{
	Enabled: true, ManagerNamespace: "scitunnel-system", MonitoringNamespace: "monitoring",
	ManagerPodLabels: map[string]string{"control-plane": "controller-manager"},
}

// startManager runs a fresh manager (new caches, new reconcilers) against the API server.
func startManager() {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
		// A restarted manager registers the same controller names again.
		Controller: config.Controller{SkipNameValidation: &skipNameValidation},
	})
	Expect(err).NotTo(HaveOccurred())
	mgrCache = mgr.GetCache()
	err = controllers.Setup{
		Options: controllers.Options{
			DataPlaneImage:      "scitunnel-dataplane:test",
			ThroughputInterval:  time.Second,
			TrustDomain:         "test.scitunnel",
			TunnelNetworkPolicy: tunnelNetworkPolicy,
			// Users' Secrets and ConfigMaps are not watched: read them again soon.
			UserObjectsRecheck: time.Second,
		},
		Reports: reportsAPI,
		Clock:   fakeClock,
		// The tests' registries are http servers on loopback, which a cluster's manager refuses.
		Registry: scitagpolicy.RegistryOptions{Egress: egress.Rules{
			AllowHTTP: true, Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		}},
	}.Register(mgr)
	Expect(err).NotTo(HaveOccurred())
	mctx, mcancel := context.WithCancel(ctx)
	stopMgr = mcancel
	mgrDone = make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(mgrDone)
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
}

func stopManager() {
	if stopMgr != nil {
		stopMgr()
		Eventually(mgrDone, 30*time.Second).Should(BeClosed())
	}
}

// fakeDataPlane serves /v1/status and /v1/tags on loopback like a proxy pod's proxy and
// analyzer would; tests set what they answer.
type fakeDataPlane struct {
	mu                   sync.Mutex
	status               report.ProxyStatus
	tags                 report.TagTotals
	statusSrv, tagsSrv   *httptest.Server
	statusPort, tagsPort int
	statusHits, tagHits  int
}

func newFakeDataPlane() *fakeDataPlane {
	f := &fakeDataPlane{}
	f.statusSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.URL.Path != report.StatusPath {
			http.NotFound(w, r)
			return
		}
		f.statusHits++
		_ = json.NewEncoder(w).Encode(f.status)
	}))
	f.tagsSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.URL.Path != report.TagsPath {
			http.NotFound(w, r)
			return
		}
		f.tagHits++
		_ = json.NewEncoder(w).Encode(f.tags)
	}))
	f.statusPort = portOf(f.statusSrv.URL)
	f.tagsPort = portOf(f.tagsSrv.URL)
	return f
}

func (f *fakeDataPlane) set(status report.ProxyStatus, tags report.TagTotals) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.tags = status, tags
}

func (f *fakeDataPlane) close() {
	f.statusSrv.Close()
	f.tagsSrv.Close()
}

func portOf(url string) int {
	_, p, err := net.SplitHostPort(url[len("http://"):])
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(p)
	Expect(err).NotTo(HaveOccurred())
	return n
}

// newNamespace creates a uniquely named namespace for one test.
func newNamespace(prefix string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}
