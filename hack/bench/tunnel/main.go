// Command tunnel is the data plane's throughput, CPU and latency benchmark (`make bench-tunnel`).
//
// On IPv6 loopback it runs iperf3 directly and through each proxy path, all in one run so the
// ratios compare like with like on the same machine at the same moment:
//
//	direct           iperf3 client -> iperf3 server
//	scitunnel-tls    client -> scitunnel outbound ==mutual TLS 1.3==> scitunnel inbound -> server
//	scitunnel-tcp    the same pair with --protocol TCP (plain relay, splice)
//	tls+sampler      the TLS pair with the sFlow sidecar sampling loopback 1-in-1000 (root)
//	stunnel4         client -> stunnel (client=yes) ==TLS==> stunnel (server) -> server
//	haproxy          one haproxy: plain frontend -> ssl backend ==TLS==> ssl frontend -> server
//	socat            client -> socat (one plain relay) -> server
//
// For each path and stream count it prints Gbit/s, the ratios against direct, stunnel4 and
// haproxy, the CPU seconds the proxy processes spent per Gbit carried (utime+stime from
// /proc/PID/stat, children included), and for each path the round-trip time of a 1 KiB
// ping-pong, and the latency a path adds over direct. A goals section reads met or MISSED
// against the data plane's goals (the goal* constants in report.go). Nothing here asserts
// timing: it measures and prints.
//
// Needs iperf3, stunnel4, haproxy and socat on PATH (paths whose tool is missing are skipped
// and say so). Certificates are made with the project's own pki package.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scitunnel/scitunnel/internal/testutil"
)

func main() {
	scitunnel := flag.String("scitunnel", "bin/scitunnel", "the scitunnel binary to measure")
	seconds := flag.Int("seconds", 5, "iperf3 run time per measurement (after a 1 s omitted warm-up)")
	streamsFlag := flag.String("streams", "1,4", "comma-separated iperf3 parallel stream counts (-P)")
	pathsFlag := flag.String("paths", strings.Join(allPathNames(), ","), "comma-separated paths to measure")
	rounds := flag.Int("pingpong-rounds", 5000, "1 KiB round trips per latency measurement")
	repeat := flag.Int("repeat", 1, "measure every path this many times, interleaved, and report the median (a shared machine's load drifts)")
	env := flag.String("scitunnel-env", "", "extra environment for the scitunnel processes, e.g. GOMAXPROCS=2,GOGC=200")
	toggle := flag.Duration("sampler-toggle", 0, "also measure the sFlow sidecar's cost within one iperf3 run this long through the TLS pair, starting and stopping the sidecar every --toggle-phase (root; 0: not measured)")
	togglePhase := flag.Duration("toggle-phase", time.Second, "how long the sidecar stays on, then off, in --sampler-toggle")
	sidecarArgs := flag.String("sidecar-args", "", "extra flags for the sFlow sidecar, after the defaults (which they override), e.g. \"--sampling-rate 1000000\" to measure the kernel's per-packet filter without samples")
	keep := flag.Bool("keep", false, "keep the work directory (configurations, certificates, logs)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./hack/bench/tunnel [flags]\n\nPaths: %s\n\nFlags:\n", strings.Join(allPathNames(), ", "))
		flag.PrintDefaults()
	}
	flag.Parse()

	streams, err := parseInts(*streamsFlag)
	if err != nil {
		fatal("--streams: %v", err)
	}
	var chosen []pathDef
	for _, name := range strings.Split(*pathsFlag, ",") {
		if strings.TrimSpace(name) == "" {
			continue // -paths "" measures no path (with -sampler-toggle alone)
		}
		p, ok := pathByName(strings.TrimSpace(name))
		if !ok {
			fatal("--paths: unknown path %q (have %s)", name, strings.Join(allPathNames(), ", "))
		}
		chosen = append(chosen, p)
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		fatal("iperf3 is needed (apt-get install iperf3)")
	}
	bin, err := filepath.Abs(*scitunnel)
	if err != nil {
		fatal("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "scitunnel-bench-")
	if err != nil {
		fatal("%v", err)
	}
	if *keep {
		fmt.Printf("work directory: %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	b := &bench{
		ctx: ctx, work: work, scitunnel: bin, seconds: *seconds, rounds: *rounds,
		scitunnelEnv: splitEnv(*env), sidecarArgs: strings.Fields(*sidecarArgs),
	}
	if err := b.setup(); err != nil {
		fatal("%v", err)
	}
	defer b.teardown()
	printHeader(b)
	runs := b.measureRounds(chosen, streams, *repeat)
	toggles := b.measureToggles(streams, *toggle, *togglePhase)
	results := medians(runs)
	if *repeat > 1 {
		fmt.Printf("\nmedians of %d rounds:\n", len(runs))
	}
	if len(chosen) > 0 {
		printTable(results, streams)
	}
	printToggle(toggles, *toggle, *togglePhase, b.sidecarArgs)
	printGoals(results, runs, toggles, streams)
}

// measureRounds measures every chosen path at every stream count, repeat times, interleaved.
func (b *bench) measureRounds(chosen []pathDef, streams []int, repeat int) [][]result {
	var runs [][]result
	for round := 1; round <= max(repeat, 1) && b.ctx.Err() == nil; round++ {
		if repeat > 1 {
			fmt.Printf(" round %d of %d\n", round, repeat)
		}
		// Even rounds run the paths in reverse, so no path always runs right after the same one
		// (a path that leaves the machine busy would otherwise tax its successor every time).
		order := slices.Clone(chosen)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		var results []result
		for _, p := range order {
			if b.ctx.Err() != nil {
				break
			}
			results = append(results, b.measurePath(p, streams)...)
		}
		runs = append(runs, results)
	}
	return runs
}

// measureToggles measures the sFlow sidecar's cost at every stream count, toggling it every
// phase within one run of total (0: not measured).
func (b *bench) measureToggles(streams []int, total, phase time.Duration) []toggleResult {
	var toggles []toggleResult
	for _, s := range streams {
		if total <= 0 || b.ctx.Err() != nil {
			break
		}
		fmt.Printf("  sampler toggle P=%d: %s with the sidecar started and stopped every %s\n", s, total, phase)
		r, err := b.samplerToggle(total, phase, s)
		if err != nil {
			fmt.Printf("  sampler toggle P=%d failed: %v\n", s, err)
			continue
		}
		toggles = append(toggles, r)
	}
	return toggles
}

// bench holds what every path shares: the work directory, the certificates and the two servers
// the paths carry traffic to (iperf3 for throughput, an echo server for the ping-pong).
type bench struct {
	ctx          context.Context
	work         string
	scitunnel    string
	scitunnelEnv []string
	sidecarArgs  []string // appended to the sidecar's default flags
	seconds      int
	rounds       int

	certs    certFiles
	iperfSrv *exec.Cmd
	iperf    string // [::1]:port of the iperf3 server
	echo     *echoServer
}

func (b *bench) setup() error {
	var err error
	if b.certs, err = makeCerts(b.work); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	ports, err := testutil.FreePorts(1)
	if err != nil {
		return err
	}
	port := ports[0]
	b.iperf = "[::1]:" + strconv.Itoa(port)
	b.iperfSrv = exec.CommandContext(b.ctx, "iperf3", "-s", "-p", strconv.Itoa(port), "--bind", "::1")
	if err := b.iperfSrv.Start(); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	if err := waitListening(port, 5*time.Second); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	b.echo, err = startEcho()
	return err
}

func (b *bench) teardown() {
	if b.iperfSrv != nil && b.iperfSrv.Process != nil {
		_ = b.iperfSrv.Process.Kill()
		_ = b.iperfSrv.Wait()
	}
	if b.echo != nil {
		b.echo.close()
	}
}

// result is one path's figures at one stream count.
type result struct {
	path    string
	streams int
	skipped string // why the path was not measured

	gbps        float64
	cpuSeconds  float64 // CPU time of the path's proxy processes during the run
	carriedGbit float64
	rttP50      time.Duration // 1 KiB ping-pong (streams == 1 row only)
	rttP99      time.Duration
}

func (r result) cpuPerGbit() float64 {
	if r.carriedGbit == 0 {
		return 0
	}
	return r.cpuSeconds / r.carriedGbit
}

// measurePath starts one path toward iperf3 and measures every stream count, then starts it
// again toward the echo server for the ping-pong.
func (b *bench) measurePath(p pathDef, streams []int) []result {
	var out []result
	skip := func(why string) []result {
		fmt.Printf("  %-14s skipped: %s\n", p.name, why)
		for _, s := range streams {
			out = append(out, result{path: p.name, streams: s, skipped: why})
		}
		return out
	}
	for _, tool := range p.needs {
		if _, err := exec.LookPath(tool); err != nil {
			return skip(tool + " not installed")
		}
	}
	run, err := b.start(p, b.iperf, "iperf")
	if err != nil {
		return skip(err.Error())
	}
	for _, s := range streams {
		r := result{path: p.name, streams: s}
		before := run.cpu()
		gbps, err := b.iperf3(run.entry, s)
		time.Sleep(200 * time.Millisecond) // let relay children exit and be reaped
		r.cpuSeconds = run.cpu() - before
		if err != nil {
			r.skipped = err.Error()
		}
		r.gbps = gbps
		r.carriedGbit = gbps * float64(b.seconds)
		fmt.Printf("  %-14s P=%d  %6.2f Gbit/s  cpu %.2f s\n", p.name, s, gbps, r.cpuSeconds)
		out = append(out, r)
	}
	run.stop()

	ping, err := b.start(p, b.echo.addr, "echo")
	if err != nil {
		out[0].skipped = "ping-pong: " + err.Error()
		return out
	}
	defer ping.stop()
	p50, p99, err := pingPong(b.ctx, ping.entry, b.rounds)
	if err != nil {
		fmt.Printf("  %-14s ping-pong failed: %v\n", p.name, err)
		return out
	}
	out[0].rttP50, out[0].rttP99 = p50, p99
	fmt.Printf("  %-14s 1 KiB ping-pong p50 %s p99 %s\n", p.name, us(p50), us(p99))
	return out
}

// medians folds repeated rounds into one result per path and stream count: the median of each
// figure. (CPU per Gbit is recomputed from the median round of throughput.)
func medians(runs [][]result) []result {
	if len(runs) == 1 {
		return runs[0]
	}
	var out []result
	for _, first := range runs[0] {
		var all []result
		for _, run := range runs {
			if r, ok := find(run, first.path, first.streams); ok {
				all = append(all, r)
			}
		}
		if len(all) == 0 {
			out = append(out, first)
			continue
		}
		median := func(key func(result) float64) result {
			sorted := slices.Clone(all)
			slices.SortFunc(sorted, func(a, b result) int { return cmpFloat(key(a), key(b)) })
			return sorted[len(sorted)/2]
		}
		r := median(func(r result) float64 { return r.gbps })
		if first.rttP50 > 0 {
			lat := median(func(r result) float64 { return float64(r.rttP50) })
			r.rttP50, r.rttP99 = lat.rttP50, lat.rttP99
		}
		out = append(out, r)
	}
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench-tunnel: "+format+"\n", a...)
	os.Exit(1)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func splitEnv(s string) []string {
	var out []string
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			out = append(out, kv)
		}
	}
	return out
}
