package main

import (
	"context"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

func init() {
	register("inbound", "run the producer's end: (m)TLS listeners forwarding to the producer", func(ctx context.Context, args []string) int {
		return runEnd(ctx, config.Inbound, args)
	})
}

const inboundHelp = `Usage: scitunnel inbound --listen PORTS --target HOST:PORT[,...] [flags]

Runs the producer's end of a tunnel (SciStream's inbound request). It accepts mutual TLS 1.3
from outbound ends on the listen ports and forwards each connection to a producer target.
With more listen ports than targets (parallel streams, SciStream's num_conn), port i carries
target i mod len(targets).

Examples:

  # Five parallel streams to two producer ports, tagged atlas / Production Output. Only clients
  # whose certificate carries the given SAN get in.
  scitunnel inbound --listen 5100-5104 --target [2001:db8::5]:5074,[2001:db8::5]:5075 \
      --cert server.crt --key server.key --ca ca.crt \
      --allow-san spiffe://example.org/ns/hpc/streamtunnel/consumer \
      --scitag atlas/Production_Output

  # The same with --num-conn: five consecutive ports from 5100.
  scitunnel inbound --listen 5100 --num-conn 5 --target producer.example.org:5074 ...

  # UDP datagrams framed on mutual TLS (--udp-transport Plain relays them unencrypted).
  scitunnel inbound --protocol UDP --listen 5200 --target [2001:db8::5]:4000 --cert ...

Certificates: 'scitunnel certs' makes a CA, a server and a client certificate.
Scitags: --scitag takes EXPERIMENT/ACTIVITY as registry names or ids (atlas/Production_Output,
cms/Analysis_Input, 2/16). The tag is stamped on the IPv6 flow label of every connection this
end dials; for the data flowing back toward the outbound end, enable flow-label reflection in
this host's network namespace: sysctl -w net.ipv6.flowlabel_reflect=1.
The admin endpoint (--admin) serves /healthz, /readyz, /metrics, /v1/status, /v1/connections.

Flags:
`
