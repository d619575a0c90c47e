package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/scitunnel/scitunnel/internal/loadgen"
)

func init() {
	register("loadgen", "test traffic that checks every byte: a producer (serve) and a consumer (get, put)", runLoadgen)
}

const loadgenUsage = `Usage:
  scitunnel loadgen serve [--listen :5074]...       the producer: answers get and put requests
  scitunnel loadgen get --connect HOST:PORT [flags]  stream from the producer, check every byte
  scitunnel loadgen put --connect HOST:PORT [flags]  stream to the producer, which checks every byte

Both sides derive the payload from a seed, so the receiving side verifies each byte and both
report byte counts and SHA-256 sums. serve logs one JSON line per finished connection; get and
put print one JSON result and exit 1 unless every connection verified.
`

func runLoadgen(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, loadgenUsage)
		return 2
	}
	switch args[0] {
	case "serve":
		return loadgenServe(ctx, args[1:])
	case "get":
		return loadgenClient(ctx, loadgen.OpGet, args[1:])
	case "put":
		return loadgenClient(ctx, loadgen.OpPut, args[1:])
	}
	fmt.Fprintf(os.Stderr, "scitunnel loadgen: unknown mode %q\n\n%s", args[0], loadgenUsage)
	return 2
}

// addrList collects the repeated --listen flag.
type addrList []string

func (l *addrList) String() string     { return strings.Join(*l, ",") }
func (l *addrList) Set(v string) error { *l = append(*l, v); return nil }

func loadgenServe(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("loadgen serve", flag.ContinueOnError)
	var listen addrList
	fs.Var(&listen, "listen", "address to listen on, repeatable (default :5074)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(listen) == 0 {
		listen = addrList{":5074"}
	}
	srv := &loadgen.Server{Log: os.Stdout}
	var wg sync.WaitGroup
	errs := make(chan error, len(listen))
	for _, addr := range listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "scitunnel loadgen serve: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "scitunnel loadgen: serving on %s\n", ln.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel loadgen serve: %v\n", err)
		return 1
	}
	return 0
}

func loadgenClient(ctx context.Context, op loadgen.Op, args []string) int {
	fs := flag.NewFlagSet("loadgen "+string(op), flag.ContinueOnError)
	o := loadgen.Options{Op: op}
	fs.StringVar(&o.Address, "connect", "", "host:port of the producer, or of the tunnel end in front of it")
	fs.Uint64Var(&o.Seed, "seed", uint64(time.Now().UnixNano()), "seed of the first connection's payload (connection i uses seed+i)")
	bytes := fs.String("bytes", "0", "bytes per connection, with a K/M/G suffix (0: until --duration ends)")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long (needed when --bytes is 0)")
	rate := fs.String("rate", "0", "bits per second per connection, with a k/M/G suffix (0: as fast as possible)")
	fs.IntVar(&o.Parallel, "parallel", 1, "connections at once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.Bytes, err = parseSize(*bytes, 1024); err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel loadgen: --bytes: %v\n", err)
		return 2
	}
	if o.RateBitsPerSecond, err = parseSize(*rate, 1000); err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel loadgen: --rate: %v\n", err)
		return 2
	}
	if o.Address == "" || (o.Bytes == 0 && o.Duration == 0) {
		fmt.Fprint(os.Stderr, "scitunnel loadgen: --connect and one of --bytes or --duration are required\n\n"+loadgenUsage)
		return 2
	}
	res := loadgen.Run(ctx, o)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res)
	if !res.Verified {
		return 1
	}
	return 0
}

// parseSize reads "1500", "64K", "2G" with powers of unit (1024 for bytes, 1000 for rates).
func parseSize(s string, unit uint64) (uint64, error) {
	s = strings.TrimSpace(s)
	mult := uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = unit, s[:n-1]
		case 'M':
			mult, s = unit*unit, s[:n-1]
		case 'G':
			mult, s = unit*unit*unit, s[:n-1]
		}
	}
	var v uint64
	if _, err := fmt.Sscanf(s, "%d", &v); err != nil || fmt.Sprint(v) != s {
		return 0, fmt.Errorf("%q is not a number with an optional K, M or G suffix", s)
	}
	return v * mult, nil
}
