package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/contract"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// runEnd builds a configuration from the inbound or outbound flags, validates all of it with
// dataplane/config (the same checks the operator's configurations pass) and runs it.
func runEnd(ctx context.Context, role config.Role, args []string) int {
	cfg, printOnly, code := parseEndFlags(role, args)
	if cfg == nil {
		return code
	}
	if printOnly {
		out, _ := cfg.Marshal()
		fmt.Println(string(out))
		return 0
	}
	return serve(ctx, cfg, "", "")
}

// parseEndFlags returns the configuration, whether to only print it, and the exit code to use
// when the configuration is nil (0 after --help, 2 for a usage error, already reported).
func parseEndFlags(role config.Role, args []string) (*config.Config, bool, int) {
	name := strings.ToLower(string(role))
	fs, o := newEndFlags(role)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, false, 0
		}
		return nil, false, 2
	}
	if fs.NArg() > 0 {
		return nil, false, usageError(name, fmt.Errorf("unexpected arguments %q (flags come before nothing else)", fs.Args()))
	}
	cfg, err := o.config(role)
	if err != nil {
		return nil, false, usageError(name, err)
	}
	return cfg, *o.printConfig, 0
}

// endOptions holds an inbound or outbound end's flags; newEndFlags defines them, config turns
// them into a validated configuration.
type endOptions struct {
	listen, protocol, udpTransport, cert, key, ca *string
	tag, admin, listenAddr, tunnel                *string
	numConn, maxDatagram                          *int
	entropy, fireflies, toPeer, printConfig       *bool
	dial, drain, idle                             *time.Duration
	targets, allow, collectors                    listFlag
	remote, serverName                            string
}

// newEndFlags defines the flags of an inbound or outbound end: --target and --allow-san are
// inbound's, --remote and --server-name outbound's.
func newEndFlags(role config.Role) (*flag.FlagSet, *endOptions) {
	name := strings.ToLower(string(role))
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o := &endOptions{}
	o.listen = fs.String("listen", "", "local listen `ports`: a list and/or ranges, e.g. 5100-5104 or 5100,5102 (required)")
	if role == config.Inbound {
		fs.Var(&o.targets, "target", "producer `host:port`, repeatable or comma-separated (required)")
	} else {
		fs.StringVar(&o.remote, "remote", "", "the inbound end: `host:ports`, e.g. inbound.example.org:5100-5104 (required)")
	}
	o.numConn = fs.Int("num-conn", 0, "parallel streams (SciStream's num_conn): `N` ports, the first N of --listen, or N consecutive ports from a single --listen port (default: every --listen port)")
	o.protocol = fs.String("protocol", "TLS", "TLS (mutual TLS 1.3), TCP (plain relay, unencrypted) or UDP")
	o.udpTransport = fs.String("udp-transport", "TLS", "with --protocol UDP: TLS (datagrams framed on mutual TLS) or Plain (relayed as datagrams, unencrypted)")
	o.maxDatagram = fs.Int("max-datagram", 0, fmt.Sprintf("with --protocol UDP: largest datagram carried, in `bytes`; larger ones are dropped and counted (default %d)", config.MaxFramedDatagram))
	o.cert = fs.String("cert", "", "this end's certificate (PEM `file`)")
	o.key = fs.String("key", "", "this end's private key (PEM `file`)")
	o.ca = fs.String("ca", "", "the CA that signs the other end's certificate (PEM `file`)")
	if role == config.Inbound {
		fs.Var(&o.allow, "allow-san", "accept only client certificates carrying this `SAN` (DNS, URI, IP or email), repeatable; default: any certificate signed by --ca")
		fs.Var(&o.allow, "allow-client", "the same as --allow-san (its earlier name)")
	} else {
		fs.StringVar(&o.serverName, "server-name", "", "`name` the inbound end's certificate must carry (default: the --remote host)")
	}
	o.tag = fs.String("scitag", "", "scitags `experiment/activity` to stamp on the IPv6 flow label, names or ids: atlas/Production_Output, 2/16")
	o.entropy = fs.Bool("entropy", true, "fill the flow label's five entropy bits with fresh random bits per connection (keeps ECMP hashing spread)")
	o.fireflies = fs.Bool("fireflies", false, "announce each flow's start and end with scitags fireflies (UDP port 10514)")
	fs.Var(&o.collectors, "firefly-collector", "`host:port` that receives fireflies (port 10514 by convention), repeatable; implies --fireflies")
	o.toPeer = fs.Bool("firefly-to-peer", false, "also send fireflies to the flow's peer on port 10514, as flowd does; implies --fireflies")
	o.admin = fs.String("admin", contract.ListenAddress(contract.AdminPort), "admin HTTP `address`: /healthz, /readyz, /metrics, /v1/status, /v1/connections")
	o.listenAddr = fs.String("listen-address", "::", "`address` the listeners bind to")
	o.dial = fs.Duration("dial-timeout", 10*time.Second, "bound on each connection to the target")
	o.drain = fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long active connections may finish")
	o.idle = fs.Duration("idle-timeout", 0, "close connections idle this long in both directions (0: never)")
	o.tunnel = fs.String("name", "cli/"+name, "tunnel `name` in metrics, logs and /v1/status")
	o.printConfig = fs.Bool("print-config", false, "print the configuration as JSON (for 'scitunnel run --config') and exit")
	fs.Usage = func() {
		if role == config.Inbound {
			fmt.Fprint(fs.Output(), inboundHelp)
		} else {
			fmt.Fprint(fs.Output(), outboundHelp)
		}
		fs.PrintDefaults()
	}
	return fs, o
}

// config builds the end's configuration from the parsed flags and validates it with
// dataplane/config, reporting problems in the flags' terms.
func (o *endOptions) config(role config.Role) (*config.Config, error) {
	cfg := &config.Config{
		Tunnel: *o.tunnel, Role: role, Protocol: config.Protocol(strings.ToUpper(*o.protocol)),
		AdminAddress: *o.admin, ListenAddress: *o.listenAddr, MaxDatagramSize: *o.maxDatagram,
		DialTimeout:  config.Duration{Duration: *o.dial},
		DrainTimeout: config.Duration{Duration: *o.drain}, IdleTimeout: config.Duration{Duration: *o.idle},
	}
	if cfg.Protocol == config.UDP {
		cfg.UDPTransport = normalizeTransport(*o.udpTransport)
	}
	ports, err := portsFlag("--listen", *o.listen, *o.numConn)
	if err != nil {
		return nil, err
	}
	targets := o.targets
	if role == config.Outbound {
		if targets, err = remoteTargets(o.remote, *o.numConn); err != nil {
			return nil, err
		}
		if len(targets) != len(ports) {
			return nil, fmt.Errorf("--listen gives %d ports and --remote %d: give one local port per remote port", len(ports), len(targets))
		}
	}
	if len(targets) == 0 {
		return nil, errors.New("--target: at least one producer host:port is required, e.g. --target [2001:db8::5]:5074")
	}
	if cfg.Routes, err = config.Expand(ports, targets); err != nil {
		return nil, fmt.Errorf("--listen/--target: %w", err)
	}
	if *o.cert != "" || *o.key != "" || *o.ca != "" || len(o.allow) > 0 || o.serverName != "" {
		cfg.TLS = &config.TLSConfig{CertFile: *o.cert, KeyFile: *o.key, CAFile: *o.ca, AllowedSANs: o.allow, ServerName: o.serverName}
	}
	if *o.tag != "" {
		s, err := parseScitag(*o.tag)
		if err != nil {
			return nil, fmt.Errorf("--scitag: %w", err)
		}
		s.Entropy = *o.entropy
		cfg.Scitag = s
	}
	if *o.fireflies || len(o.collectors) > 0 || *o.toPeer {
		cfg.Fireflies = &config.Fireflies{Enabled: true, Collectors: o.collectors, ToPeer: *o.toPeer, Application: "scitunnel"}
	}
	if cfg.NeedsTLS() && cfg.TLS == nil {
		return nil, fmt.Errorf("--cert, --key and --ca are required for protocol %s\n('scitunnel certs' makes the certificates; --protocol TCP relays unencrypted)", cfg.Protocol)
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, inFlagTerms(err, endFlags(role))
	}
	return cfg, nil
}

// endFlags names the flag that sets each configuration field (config.FieldError.Name) of an
// inbound or outbound end.
func endFlags(role config.Role) map[string]string {
	flags := map[string]string{
		"routes.listenPort": "--listen", "routes.target": "--target",
		"protocol": "--protocol", "udpTransport": "--udp-transport", "maxDatagramSize": "--max-datagram",
		"tls.certFile": "--cert", "tls.keyFile": "--key", "tls.caFile": "--ca",
		"tls.allowedSANs": "--allow-san", "tls.serverName": "--server-name",
		"scitag": "--scitag", "fireflies.collectors": "--firefly-collector",
		"adminAddress": "--admin", "listenAddress": "--listen-address", "tunnel": "--name",
		"dialTimeout": "--dial-timeout", "drainTimeout": "--drain-timeout", "idleTimeout": "--idle-timeout",
	}
	if role == config.Outbound {
		flags["routes.target"] = "--remote"
	}
	return flags
}

// inFlagTerms reports a validation error as the flags' problems, one a line: each field a flag
// sets is named by its flag, any other by its configuration field.
func inFlagTerms(err error, flags map[string]string) error {
	var lines []string
	for _, fe := range config.Fields(err) {
		name := fe.Field
		if f, ok := flags[fe.Name()]; ok {
			name = f
		}
		if name == "" {
			lines = append(lines, fe.Problem)
		} else {
			lines = append(lines, name+": "+fe.Problem)
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

// parseScitag reads EXPERIMENT/ACTIVITY (or EXPERIMENT.ACTIVITY): registry names or ids, resolved
// by the rule the operator applies (scitag.Registry.Resolve): a pair of ids the registry does not
// know is still accepted, since the label only needs the ids.
func parseScitag(s string) (*config.Scitag, error) {
	// Experiment names hold neither '/' nor '.', activity names may ("Upload/Download (Job)"),
	// so the first separator splits.
	i := strings.IndexAny(s, "/.")
	if i <= 0 || i == len(s)-1 {
		return nil, fmt.Errorf("%q: want EXPERIMENT/ACTIVITY, e.g. atlas/Production_Output or 2/16", s)
	}
	tag, err := scitag.Default().Resolve(s[:i], s[i+1:])
	if err != nil {
		return nil, err
	}
	out := &config.Scitag{ExperimentID: tag.ExperimentID, ActivityID: tag.ActivityID}
	if tag.InRegistry {
		out.Name = tag.String() // unlisted ids stay unnamed; the proxy renders them "exp.act"
	}
	return out, nil
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

func usageError(cmd string, err any) int {
	fmt.Fprintf(os.Stderr, "scitunnel %s: %v\nRun 'scitunnel %s --help' for the flags and examples.\n", cmd, err, cmd)
	return 2
}

// expandPorts applies --num-conn to a port list: the first n ports, or n consecutive ports
// when a single start port was given.
func expandPorts(flagName string, ports []int, n int) ([]int, error) {
	switch {
	case n < 0:
		return nil, fmt.Errorf("--num-conn %d: must be positive", n)
	case n == 0 || n == len(ports):
		return ports, nil
	case len(ports) == 1:
		if ports[0]+n-1 > 65535 {
			return nil, fmt.Errorf("%s %d with --num-conn %d runs past port 65535", flagName, ports[0], n)
		}
		return config.PortRange(ports[0], n), nil
	case n < len(ports):
		return ports[:n], nil
	}
	return nil, fmt.Errorf("--num-conn %d: %s gives only %d ports", n, flagName, len(ports))
}

func portsFlag(flagName, v string, numConn int) ([]int, error) {
	if v == "" {
		return nil, fmt.Errorf("%s is required, e.g. %s 5100-5104", flagName, flagName)
	}
	ports, err := config.ParsePorts(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	return expandPorts(flagName, ports, numConn)
}

// remoteTargets expands "host:5100-5104" into one host:port per remote port.
func remoteTargets(remote string, numConn int) ([]string, error) {
	if remote == "" {
		return nil, errors.New("--remote is required, e.g. --remote inbound.example.org:5100-5104")
	}
	i := strings.LastIndex(remote, ":")
	if i <= 0 {
		return nil, fmt.Errorf("--remote %q: want host:ports (IPv6 in brackets: [2001:db8::1]:5100-5104)", remote)
	}
	host := remote[:i]
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") || (strings.Contains(host, ":") && !strings.HasPrefix(host, "[")) {
		return nil, fmt.Errorf("--remote %q: put an IPv6 address in brackets: [2001:db8::1]:5100-5104", remote)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	ports, err := config.ParsePorts(remote[i+1:])
	if err != nil {
		return nil, fmt.Errorf("--remote %q: %w", remote, err)
	}
	if ports, err = expandPorts("--remote", ports, numConn); err != nil {
		return nil, err
	}
	out := make([]string, len(ports))
	for j, p := range ports {
		out[j] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return out, nil
}

func normalizeTransport(s string) config.UDPTransport {
	if strings.EqualFold(s, "plain") {
		return config.UDPPlain
	}
	return config.UDPTransport(strings.ToUpper(s))
}
