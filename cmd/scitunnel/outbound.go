package main

import (
	"context"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

func init() {
	register("outbound", "run the consumer's end: local ports carried over mutual TLS to an inbound end", func(ctx context.Context, args []string) int {
		return runEnd(ctx, config.Outbound, args)
	})
}

const outboundHelp = `Usage: scitunnel outbound --listen PORTS --remote HOST:PORTS [flags]

Runs the consumer's end of a tunnel (SciStream's outbound request). Consumers connect to the
local listen ports with plain TCP (or UDP); each connection is carried over mutual TLS 1.3 to
the inbound end's port at the same position in --remote.

Examples:

  # The other side of 'scitunnel inbound --listen 5100-5104': consumers connect to 6000-6004.
  scitunnel outbound --listen 6000-6004 --remote inbound.example.org:5100-5104 \
      --cert client.crt --key client.key --ca ca.crt \
      --scitag atlas/Production_Output

  # An IPv6 literal goes in brackets; --num-conn takes consecutive ports from each start.
  scitunnel outbound --listen 6000 --remote [2001:db8::1]:5100 --num-conn 5 --cert ...

  # Bind only to loopback, so only local consumers can use the tunnel.
  scitunnel outbound --listen-address ::1 --listen 6000 --remote inbound.example.org:5100 ...

The inbound end's certificate must carry the --remote host name (or --server-name).
The tag (--scitag) is stamped on the IPv6 flow label of the connections to the inbound end.

Flags:
`
