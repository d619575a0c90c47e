package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

func init() {
	register("run", "run a tunnel end from a configuration file (what the proxy pods run)", runFromFile)
	register("inbound", "run the producer's end: (m)TLS listeners forwarding to the producer", func(ctx context.Context, args []string) int {
		return runFromFlags(ctx, config.Inbound, args)
	})
	register("outbound", "run the consumer's end: local ports carried over mutual TLS to an inbound end", func(ctx context.Context, args []string) int {
		return runFromFlags(ctx, config.Outbound, args)
	})
}

// configReloadInterval is how often `run` re-reads its configuration file. A ConfigMap update
// reaches a pod's mount within the kubelet's sync period, so seconds are plenty.
const configReloadInterval = 3 * time.Second

func runFromFile(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "/etc/scitunnel/config.json", "the data-plane configuration (JSON, as the operator writes it)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: scitunnel run [--config FILE]

Runs one tunnel end from a configuration file: the Kubernetes operator writes it into the proxy
pod's ConfigMap, and 'scitunnel inbound|outbound --print-config' writes one for bare hosts.
Changes to the file (targets, tag, ports) apply to new connections without a restart.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel run: %s: %v\n", *path, err)
		return 2
	}
	return serve(ctx, cfg, *path)
}

// serve runs a validated configuration: the proxy, its admin endpoint and, when the
// configuration came from a file, the watch on that file.
func serve(ctx context.Context, cfg *config.Config, path string) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	p, err := proxy.New(cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel: %v\n", err)
		return 1
	}
	admin, err := net.Listen("tcp", cfg.AdminAddress)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel: adminAddress %s: %v\n", cfg.AdminAddress, err)
		return 1
	}
	srv := &http.Server{Handler: p.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(admin) }()
	defer srv.Close()
	if path != "" {
		go watchConfig(ctx, p, path, log)
	}
	if err := p.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel: %v\n", err)
		return 1
	}
	return 0
}

func watchConfig(ctx context.Context, p *proxy.Proxy, path string, log *slog.Logger) {
	last, _ := os.ReadFile(path)
	t := time.NewTicker(configReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil || string(data) == string(last) {
			continue
		}
		last = data
		cfg, err := config.Parse(data)
		if err == nil {
			err = p.Reload(cfg)
		}
		if err != nil {
			log.Error("configuration change refused; the previous configuration stays in effect", "file", path, "err", err)
		}
	}
}

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

const inboundHelp = `Usage: scitunnel inbound --listen PORTS --target HOST:PORT[,...] [flags]

Runs the producer's end of a tunnel (SciStream's inbound request): it accepts mutual TLS from
outbound ends on the listen ports and forwards each connection to a producer target. With more
listen ports than targets (parallel streams, SciStream's num_conn), port i carries target
i mod len(targets).

Example: five parallel streams to two producer ports, tagged atlas / Production Output:

  scitunnel inbound --listen 5100-5104 --target 10.0.0.5:5074,10.0.0.5:5075 \
      --cert server.crt --key server.key --ca ca.crt \
      --allow-client spiffe://example.org/ns/hpc/streamtunnel/consumer \
      --experiment atlas --activity "Production Output"

Certificates: 'scitunnel certs' makes a CA, a server and a client certificate.

Flags:
`

const outboundHelp = `Usage: scitunnel outbound --listen PORTS --remote HOST:PORTS [flags]

Runs the consumer's end of a tunnel (SciStream's outbound request): consumers connect to the
local listen ports, and each connection is carried over mutual TLS to the inbound end's port at
the same position in --remote.

Example: the other side of the inbound example, consumers connecting to ports 6000-6004:

  scitunnel outbound --listen 6000-6004 --remote inbound.example.org:5100-5104 \
      --cert client.crt --key client.key --ca ca.crt \
      --experiment atlas --activity "Production Output"

Flags:
`

// runFromFlags builds a configuration from the CLI, validates it completely and runs it.
func runFromFlags(ctx context.Context, role config.Role, args []string) int {
	name := strings.ToLower(string(role))
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	listen := fs.String("listen", "", "listen ports: a list and/or ranges, e.g. 5100-5104 or 5100,5101 (required)")
	var targets listFlag
	if role == config.Inbound {
		fs.Var(&targets, "target", "producer `host:port`, repeatable or comma-separated (required)")
	}
	remote := ""
	if role == config.Outbound {
		fs.StringVar(&remote, "remote", "", "the inbound end: `host:ports`, e.g. inbound.example.org:5100-5104 (required)")
	}
	numConn := fs.Int("num-conn", 0, "parallel streams: use the first N listen ports of --listen (default: all of them)")
	protocol := fs.String("protocol", "TLS", "TLS (mutual TLS 1.3), TCP (plain, unencrypted) or UDP")
	udpTransport := fs.String("udp-transport", "TLS", "with --protocol UDP: TLS (framed on mutual TLS) or Plain")
	cert := fs.String("cert", "", "this end's certificate (PEM)")
	key := fs.String("key", "", "this end's private key (PEM)")
	ca := fs.String("ca", "", "the CA that signs the other end's certificate (PEM)")
	var allow listFlag
	serverName := ""
	if role == config.Inbound {
		fs.Var(&allow, "allow-client", "accept only client certificates carrying this SAN (DNS, URI or IP), repeatable")
	} else {
		fs.StringVar(&serverName, "server-name", "", "name the inbound end's certificate must carry (default: the --remote host)")
	}
	experiment := fs.String("experiment", "", "scitags experiment, name or id (e.g. atlas or 2)")
	activity := fs.String("activity", "", "scitags activity, name or id (e.g. \"Production Output\" or 16)")
	entropy := fs.Bool("entropy", false, "fresh random entropy bits in the flow label of every connection")
	fireflies := fs.Bool("fireflies", false, "announce flows with scitags fireflies (UDP port 10514)")
	var collectors listFlag
	fs.Var(&collectors, "firefly-collector", "`host:port` that receives fireflies, repeatable")
	admin := fs.String("admin", ":9090", "admin HTTP address: /healthz, /readyz, /metrics, /v1/status, /v1/connections")
	listenAddr := fs.String("listen-address", "::", "address the listeners bind to")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long active connections may finish")
	idle := fs.Duration("idle-timeout", 0, "close connections idle this long in both directions (0: never)")
	tunnel := fs.String("name", "cli/"+name, "tunnel name in metrics and logs")
	printConfig := fs.Bool("print-config", false, "print the configuration as JSON (for 'scitunnel run --config') and exit")
	fs.Usage = func() {
		if role == config.Inbound {
			fmt.Fprint(fs.Output(), inboundHelp)
		} else {
			fmt.Fprint(fs.Output(), outboundHelp)
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(name, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}

	cfg := &config.Config{
		Tunnel: *tunnel, Role: role, Protocol: config.Protocol(strings.ToUpper(*protocol)),
		AdminAddress: *admin, ListenAddress: *listenAddr,
		DrainTimeout: config.Duration{Duration: *drain}, IdleTimeout: config.Duration{Duration: *idle},
	}
	if cfg.Protocol == config.UDP {
		cfg.UDPTransport = config.UDPTransport(normalizeTransport(*udpTransport))
	}
	ports, err := portsFlag("--listen", *listen)
	if err != nil {
		return usageError(name, err)
	}
	if *numConn < 0 || *numConn > len(ports) {
		return usageError(name, fmt.Errorf("--num-conn %d: --listen gives %d ports", *numConn, len(ports)))
	}
	if *numConn > 0 {
		ports = ports[:*numConn]
	}
	if role == config.Outbound {
		if targets, err = remoteTargets(remote); err != nil {
			return usageError(name, err)
		}
		if len(targets) != len(ports) {
			return usageError(name, fmt.Errorf("--listen gives %d ports and --remote %d: give one local port per remote port", len(ports), len(targets)))
		}
	}
	if len(targets) == 0 {
		return usageError(name, errors.New("--target: at least one producer host:port is required"))
	}
	if cfg.Routes, err = config.Expand(ports, targets); err != nil {
		return usageError(name, fmt.Errorf("--listen/--target: %w", err))
	}
	if *cert != "" || *key != "" || *ca != "" || len(allow) > 0 {
		cfg.TLS = &config.TLSConfig{CertFile: *cert, KeyFile: *key, CAFile: *ca, AllowedSANs: allow, ServerName: serverName}
	}
	if *experiment != "" || *activity != "" {
		tag, err := scitag.Default().Resolve(*experiment, *activity)
		if err != nil {
			return usageError(name, fmt.Errorf("--experiment/--activity: %w", err))
		}
		cfg.Scitag = &config.Scitag{ExperimentID: tag.ExperimentID, ActivityID: tag.ActivityID, Name: tag.String(), Entropy: *entropy}
	}
	if *fireflies || len(collectors) > 0 {
		cfg.Fireflies = &config.Fireflies{Enabled: true, Collectors: collectors, Application: "scitunnel"}
	}
	cfg.Default()
	if cfg.NeedsTLS() && cfg.TLS == nil {
		return usageError(name, fmt.Errorf("--cert, --key and --ca are required for protocol %s (mutual TLS): 'scitunnel certs' makes them; --protocol TCP relays unencrypted", cfg.Protocol))
	}
	if err := cfg.Validate(); err != nil {
		return usageError(name, flagNames.Replace(err.Error()))
	}
	if *printConfig {
		out, _ := cfg.Marshal()
		fmt.Println(string(out))
		return 0
	}
	return serve(ctx, cfg, "")
}

// flagNames turns the configuration's field names in validation errors into the flags a CLI
// user typed.
var flagNames = strings.NewReplacer(
	"tls.certFile", "--cert", "tls.keyFile", "--key", "tls.caFile", "--ca",
	"tls.allowedSANs", "--allow-client", "fireflies.collectors", "--firefly-collector",
	"udpTransport", "--udp-transport", "protocol", "--protocol",
)

func usageError(cmd string, err any) int {
	fmt.Fprintf(os.Stderr, "scitunnel %s: %v\nRun 'scitunnel %s --help' for the flags.\n", cmd, err, cmd)
	return 2
}

func portsFlag(flagName, v string) ([]int, error) {
	if v == "" {
		return nil, fmt.Errorf("%s is required, e.g. %s 5100-5104", flagName, flagName)
	}
	ports, err := config.ParsePorts(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	return ports, nil
}

// remoteTargets expands "host:5100-5104" into one host:port per remote port.
func remoteTargets(remote string) ([]string, error) {
	if remote == "" {
		return nil, errors.New("--remote is required, e.g. --remote inbound.example.org:5100-5104")
	}
	i := strings.LastIndex(remote, ":")
	if i <= 0 {
		return nil, fmt.Errorf("--remote %q: want host:ports (IPv6 in brackets: [2001:db8::1]:5100-5104)", remote)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(remote[:i], "["), "]")
	ports, err := config.ParsePorts(remote[i+1:])
	if err != nil {
		return nil, fmt.Errorf("--remote %q: %w", remote, err)
	}
	out := make([]string, len(ports))
	for j, p := range ports {
		out[j] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return out, nil
}

func normalizeTransport(s string) string {
	if strings.EqualFold(s, "plain") {
		return string(config.UDPPlain)
	}
	return strings.ToUpper(s)
}
