package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/contract"
	"github.com/scitunnel/scitunnel/dataplane/filewatch"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/analyzer"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sampler"
)

func init() {
	register("sflow", "run the sFlow sidecar: in-kernel sampler and per-tag analyzer", runSflow)
}

const sflowHelp = `Usage: scitunnel sflow [--config FILE] [flags]

Runs the sFlow sidecar of a tunnel pod, or standalone on a data-transfer host:

  - a sampler (an sFlow v5 agent) that samples the interfaces 1-in-N inside the kernel and sends
    datagrams to the local analyzer and to --collectors (needs CAP_NET_RAW; without it the
    analyzer runs alone); each sample carries the packet's first --header-bytes bytes, or with
    --header-bytes transport its headers alone: on an unencrypted leg, use that so that no
    payload byte reaches the collectors;
  - an analyzer that receives sFlow from the sampler and from the switches and routers named
    by --allowed-agents (UDP 6343; datagrams from other sources are counted and dropped), maps
    flow labels to scitags tags and serves per-tag throughput with 95% error bounds:
    /v1/tags, /v1/flows, /v1/agents, /v1/health, /metrics (scitag_networks_bps), /healthz.

The configuration's telemetry section is read from --config (the pod's config.json); the flags
override it. A flow label counts as tagged only when its tag is assigned (the configuration's
scitag, or --assigned-tags) or announced by a firefly (--fireflies): Linux's random labels
decode to registered tags too.

The sidecar runs Go code on one CPU at a time (GOMAXPROCS=1 unless the environment sets it).

Example (standalone):

  scitunnel sflow --sampling-rate 1000 --interfaces eth0 --assigned-tags 2.16 \
      --collectors sflow-rt.example.org:6343 --header-bytes transport --fireflies :10514 \
      --allowed-agents 192.0.2.0/28

Flags:
`

// sflowOptions holds the sflow command's flags; newSflowFlags defines them, override applies
// the ones given over the --config file's telemetry section.
type sflowOptions struct {
	path, ifaces, collectors, listen, httpAddr *string
	registry, assigned, fireflies, agent       *string
	allowedAgents, headerBytes                 *string
	logLevel                                   *string
	rate                                       *int
	window, polling                            *time.Duration
}

// newSflowFlags defines the sflow command's flags.
func newSflowFlags() (*flag.FlagSet, *sflowOptions) {
	fs := flag.NewFlagSet("sflow", flag.ContinueOnError)
	o := &sflowOptions{
		path:          fs.String("config", "", "data-plane configuration (JSON); its telemetry section is used"),
		rate:          fs.Int("sampling-rate", 0, "sample 1 in N packets; 0 turns the sampler off"),
		ifaces:        fs.String("interfaces", "", "comma-separated interfaces to sample (default: every up, non-loopback one)"),
		collectors:    fs.String("collectors", "", "comma-separated host:port sFlow collectors besides the local analyzer"),
		headerBytes:   fs.String("header-bytes", "", "bytes of each sampled packet sent to the analyzer and --collectors: 64..1024 (default 128), or \"transport\" to stop after the transport header (no payload byte leaves the host)"),
		listen:        fs.String("listen", "", fmt.Sprintf("sFlow listen address (default %q, IPv4 and IPv6)", contract.ListenAddress(contract.SFlowPort))),
		httpAddr:      fs.String("http", "", fmt.Sprintf("HTTP listen address (default %q)", contract.ListenAddress(contract.AnalyzerPort))),
		window:        fs.Duration("window", 0, "smoothing window of the rates (default 10s)"),
		polling:       fs.Duration("polling-interval", 0, "interval of interface counter samples (default 20s)"),
		registry:      fs.String("registry", "", "scitags registry file (api.json format; default: the snapshot compiled in)"),
		assigned:      fs.String("assigned-tags", "", "comma-separated exp.act ids assigned to this host, e.g. 2.16,2.9 (default: the --config file's scitag)"),
		fireflies:     fs.String("fireflies", "", "listen for fireflies at this address, e.g. \":10514\" (default off)"),
		agent:         fs.String("agent-address", "", "agent address in the sampler's datagrams (default: the sampled interfaces' first global address)"),
		allowedAgents: fs.String("allowed-agents", "", "comma-separated IP addresses or CIDRs of switches and routers whose sFlow the analyzer accepts (default: only the local sampler's, from loopback)"),
		logLevel:      fs.String("log-level", "info", "debug, info, warn or error"),
	}
	fs.Usage = func() { fmt.Fprint(fs.Output(), sflowHelp); fs.PrintDefaults() }
	return fs, o
}

// runSflow parses the flags, builds the telemetry section from --config and the flags, and runs
// the sidecar until ctx ends.
func runSflow(ctx context.Context, args []string) int {
	fs, o := newSflowFlags()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		return usageError("sflow", fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// The sidecar's work is a few goroutines that wake a few times a second, beside a proxy
		// that wants every core. More Ps only add hand-offs between threads, each a wake-up that
		// takes a core from the proxy: beside a 10 Gbit/s stream the sidecar used 2.6 ms of CPU
		// a second with 2 and 1.7-2.4 ms with 1. One P decodes millions of samples a second.
		runtime.GOMAXPROCS(1)
	}

	t, assignedTags, err := telemetryFromFile(*o.path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel sflow: %s: %v\n", *o.path, err)
		return 2
	}
	if assignedTags, err = o.override(fs, t, assignedTags); err != nil {
		return usageError("sflow", err)
	}
	if err := checkTelemetry(t); err != nil {
		return usageError("sflow", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*o.logLevel)); err != nil {
		return usageError("sflow", fmt.Errorf("--log-level: %v", err))
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := sidecar(ctx, t, assignedTags, log); err != nil {
		log.Error("sflow sidecar failed", "err", err)
		return 1
	}
	return 0
}

// telemetryFromFile reads the telemetry section and the assigned tag from the configuration file
// at path; with no path, or no section, the section is empty (checkTelemetry fills the defaults).
func telemetryFromFile(path string) (*config.Telemetry, []scitag.Tag, error) {
	t := &config.Telemetry{}
	// The pod's tag enters once, as the configuration's scitag: the proxy stamps it, the
	// analyzer attributes labels that decode to it.
	var assignedTags []scitag.Tag
	if path != "" {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, nil, err
		}
		if cfg.Telemetry != nil {
			t = cfg.Telemetry
		}
		if cfg.Scitag != nil {
			assignedTags = []scitag.Tag{cfg.Scitag.Tag()}
		}
	}
	return t, assignedTags, nil
}

// override sets the fields of t whose flags were given (only those: the others keep the file's
// values), and returns the assigned tags, replaced when --assigned-tags was given.
func (o *sflowOptions) override(fs *flag.FlagSet, t *config.Telemetry, assignedTags []scitag.Tag) ([]scitag.Tag, error) {
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "sampling-rate":
			t.SamplingRate = *o.rate
		case "interfaces":
			t.Interfaces = splitList(*o.ifaces)
		case "collectors":
			t.Collectors = splitList(*o.collectors)
		case "header-bytes":
			h, err := config.ParseHeaderBytes(*o.headerBytes)
			if err != nil {
				flagErr = fmt.Errorf("--header-bytes: %w", err)
				return
			}
			t.HeaderBytes = h
		case "listen":
			t.AnalyzerAddress = *o.listen
		case "http":
			t.HTTPAddress = *o.httpAddr
		case "window":
			t.Window.Duration = *o.window
		case "polling-interval":
			t.PollingInterval.Duration = *o.polling
		case "registry":
			t.RegistryFile = *o.registry
		case "assigned-tags":
			assignedTags = nil
			for _, s := range splitList(*o.assigned) {
				tag, err := scitag.ParseIDs(s)
				if err != nil {
					flagErr = fmt.Errorf("--assigned-tags: %w", err)
					return
				}
				assignedTags = append(assignedTags, tag)
			}
		case "fireflies":
			t.FireflyAddress = *o.fireflies
		case "agent-address":
			t.AgentAddress = *o.agent
		case "allowed-agents":
			t.AllowedAgents = splitList(*o.allowedAgents)
		}
	})
	return assignedTags, flagErr
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// checkTelemetry fills the telemetry defaults and validates the section, naming the flags. A
// value from the --config file was validated when the file was loaded, so a problem here comes
// from a flag.
func checkTelemetry(t *config.Telemetry) error {
	t.Default()
	if err := t.Validate(); err != nil {
		return inFlagTerms(err, sflowFlags)
	}
	return nil
}

// sflowFlags names the flag that sets each telemetry field (config.FieldError.Name).
var sflowFlags = map[string]string{
	"samplingRate": "--sampling-rate", "interfaces": "--interfaces", "collectors": "--collectors",
	"analyzerAddress": "--listen", "httpAddress": "--http", "window": "--window",
	"pollingInterval": "--polling-interval", "registryFile": "--registry",
	"fireflyAddress": "--fireflies", "agentAddress": "--agent-address", "allowedAgents": "--allowed-agents",
	"headerBytes": "--header-bytes",
}

// sidecar runs the analyzer, and the sampler when configured and permitted, until ctx ends.
// assigned are the tags (by ids) whose labels the analyzer attributes without a firefly.
func sidecar(ctx context.Context, t *config.Telemetry, assigned []scitag.Tag, log *slog.Logger) error {
	a := analyzer.New(analyzer.Options{Window: t.Window.Duration, AssignedTags: assigned, Registry: loadRegistry(t.RegistryFile, log),
		AllowedAgents: t.AllowedAgentPrefixes()})

	conn, err := analyzer.ListenSFlow(t.AnalyzerAddress)
	if err != nil {
		return fmt.Errorf("sFlow socket (telemetry.analyzerAddress, --listen): %w", err)
	}
	httpLn, err := net.Listen("tcp", t.HTTPAddress)
	if err != nil {
		conn.Close()
		return fmt.Errorf("HTTP socket (telemetry.httpAddress, --http): %w", err)
	}
	var ffConn *net.UDPConn
	if t.FireflyAddress != "" {
		if ffConn, err = analyzer.ListenFireflies(t.FireflyAddress); err != nil {
			conn.Close()
			httpLn.Close()
			return fmt.Errorf("firefly socket (telemetry.fireflyAddress, --fireflies): %w", err)
		}
	}

	var smp *sampler.Sampler
	if t.SamplingRate > 0 {
		smp = startSampler(t, localDestination(conn.LocalAddr().(*net.UDPAddr), t.AnalyzerAddress), log)
	} else {
		log.Info("sampler off (samplingRate 0); the analyzer serves sFlow from other agents")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(a.Collector(), sampler.Collector(smp),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := &http.Server{Handler: a.Handler(reg), ReadHeaderTimeout: 10 * time.Second}

	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	run(func() { _ = a.ServeSFlow(ctx, conn, log) })
	if ffConn != nil {
		run(func() { _ = a.ServeFireflies(ctx, ffConn, log) })
	}
	if smp != nil {
		run(func() { _ = smp.Run(ctx) })
	}
	if t.RegistryFile != "" {
		run(func() { watchRegistry(ctx, t.RegistryFile, a, log) })
	}
	run(func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	})
	log.Info("sflow sidecar serving", "sflow", conn.LocalAddr().String(), "http", httpLn.Addr().String(),
		"fireflies", t.FireflyAddress, "samplingRate", t.SamplingRate, "assignedTags", tagIDs(assigned))
	err = srv.Serve(httpLn)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// tagIDs renders tags as "exp.act" ids, as --assigned-tags takes them.
func tagIDs(tags []scitag.Tag) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = fmt.Sprintf("%d.%d", t.ExperimentID, t.ActivityID)
	}
	return out
}

// localDestination is where the sampler reaches the analyzer: its port on loopback when it
// listens on all addresses.
func localDestination(bound *net.UDPAddr, configured string) string {
	host, _, _ := net.SplitHostPort(configured)
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(bound.Port))
}

// startSampler starts the in-pod sampler; when it cannot (no CAP_NET_RAW, a missing interface)
// it says so and returns nil: the analyzer keeps serving sFlow from switches.
func startSampler(t *config.Telemetry, local string, log *slog.Logger) *sampler.Sampler {
	var agent netip.Addr
	if t.AgentAddress != "" {
		agent = netip.MustParseAddr(t.AgentAddress) // validated
	}
	s, err := sampler.New(sampler.Config{
		Interfaces:   t.Interfaces,
		SamplingRate: uint32(t.SamplingRate),
		HeaderBytes:  uint32(max(t.HeaderBytes, 0)),
		// Only the headers matter to the analyzer; the payload of an unencrypted leg must
		// not reach the collectors when "transport" is asked for.
		TransportHeadersOnly: t.HeaderBytes == config.HeaderBytesTransport,
		PollingInterval:      t.PollingInterval.Duration,
		Collectors:           append([]string{local}, t.Collectors...),
		AgentAddress:         agent,
		Log:                  log,
	})
	switch {
	case errors.Is(err, sampler.ErrNoNetRaw):
		log.Error("sampler off: it needs the NET_RAW capability for AF_PACKET sockets (add NET_RAW to the sflow container's securityContext.capabilities); the analyzer still serves sFlow from switches and routers",
			"err", err)
		return nil
	case err != nil:
		log.Error("sampler off: it could not start; the analyzer still serves sFlow from switches and routers", "err", err)
		return nil
	}
	log.Info("sampler on", "samplingRate", t.SamplingRate, "interfaces", t.Interfaces, "agent", s.AgentAddress(), "collectors", append([]string{local}, t.Collectors...))
	return s
}

// loadRegistry reads the mounted registry; a missing or broken file falls back to the snapshot
// compiled in (names are for display: an analyzer that stops over them helps no one).
func loadRegistry(path string, log *slog.Logger) *scitag.Registry {
	if path == "" {
		return scitag.Default()
	}
	data, err := os.ReadFile(path)
	return registryOf(path, data, err, log)
}

// registryOf parses a registry file's contents, or falls back to the snapshot compiled in.
func registryOf(path string, data []byte, err error, log *slog.Logger) *scitag.Registry {
	if err == nil {
		var r *scitag.Registry
		if r, err = scitag.Parse(data); err == nil {
			return r
		}
	}
	log.Warn("scitags registry unreadable; naming tags from the snapshot compiled in", "file", path, "err", err, "snapshot", scitag.SnapshotSource)
	return scitag.Default()
}

// registryReloadInterval is how often the sidecar polls its registry file.
const registryReloadInterval = 30 * time.Second

// watchRegistry re-reads the registry file when its contents change (dataplane/filewatch): a
// registry edited on a bare host. (In a cluster the registry sits in the pod's ConfigMap, whose
// changes roll the pods; there the watch finds nothing to do before the pod is replaced.)
func watchRegistry(ctx context.Context, path string, a *analyzer.Analyzer, log *slog.Logger) {
	w := &filewatch.Watcher{
		Files:    []string{path},
		Interval: registryReloadInterval,
		OnChange: func(contents [][]byte) {
			a.SetRegistry(registryOf(path, contents[0], nil, log))
			log.Info("scitags registry reloaded", "file", path)
		},
		OnError: func(err error) {
			log.Warn("scitags registry unreadable; keeping the registry in use", "file", path, "err", err)
		},
	}
	w.Run(ctx)
}
