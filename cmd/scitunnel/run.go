package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/contract"
	"github.com/scitunnel/scitunnel/dataplane/proxy"
	"github.com/scitunnel/scitunnel/dataplane/proxy/admin"
)

func init() {
	register("run", "run a tunnel end from a configuration file (what the proxy pods run)", runFromFile)
}

// configReloadInterval is how often `run --watch-config` polls its configuration file.
const configReloadInterval = 3 * time.Second

const runHelp = `Usage: scitunnel run [--config FILE] [--watch-config]

Runs one tunnel end from a configuration file. In Kubernetes the operator writes the file into
the proxy pod's ConfigMap; on a bare host, 'scitunnel inbound ... --print-config > end.json'
writes one from flags.

The file is read once: in a cluster the operator rolls the proxy pods when the configuration
changes, except for the Inbound end's allow-list of client identities (tls.allowedSANs), which
is re-read in place so that revoking a peer drops no other peer's connections. With --watch-config (for a bare host), changes to the file (targets, scitag, ports,
fireflies) apply to new connections without a restart; established connections keep going.
Certificates are always re-read when their files change (a renewed Secret), without a restart.

Example:

  scitunnel inbound --listen 5100-5104 --target [2001:db8::5]:5074 \
      --cert server.crt --key server.key --ca ca.crt --allow-san spiffe://example.org/consumer \
      --scitag atlas/Production_Output --print-config > inbound.json
  scitunnel run --config inbound.json --watch-config

SIGTERM (or Ctrl-C) stops accepting, lets active connections finish for drainTimeout, then exits.

Flags:
`

func runFromFile(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", contract.ConfigFile, "the data-plane configuration (JSON, as the operator writes it)")
	watch := fs.Bool("watch-config", false, "apply changes of the --config file without a restart (bare hosts; in a cluster the operator rolls the pods instead)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), runHelp); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		return usageError("run", fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel run: %s: %v\n", *path, err)
		return 2
	}
	if *watch {
		return serve(ctx, cfg, *path, "")
	}
	// Without --watch-config (the pods) only the allow-list of client identities is taken from
	// the file while running: the operator changes it in place to revoke or admit a peer.
	return serve(ctx, cfg, "", *path)
}

// serve runs a validated configuration: it binds every route's listener and the admin endpoint
// (or, if any of them cannot be bound, closes what it opened and fails), then serves until ctx
// ends and the drain is over. With watchConfig, the path of the file cfg came from, it also
// applies the file's changes; with allowListFile (instead) only its allow-list of client
// identities.
func serve(ctx context.Context, cfg *config.Config, watchConfig, allowListFile string) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	p, err := proxy.New(cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel: %v\n", err)
		return 1
	}
	srv, err := admin.Listen(cfg.AdminAddress, p)
	if err != nil {
		p.Close()
		fmt.Fprintf(os.Stderr, "scitunnel: admin endpoint (adminAddress, --admin): %v\n", err)
		return 1
	}
	go srv.Serve()
	log.Info("admin endpoint up", "address", srv.Addr().String())
	switch {
	case watchConfig != "":
		go p.WatchConfig(ctx, watchConfig, configReloadInterval)
	case allowListFile != "":
		go p.WatchAllowedClients(ctx, allowListFile, configReloadInterval)
	}
	err = p.Run(ctx)
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scitunnel: %v\n", err)
		return 1
	}
	return 0
}
