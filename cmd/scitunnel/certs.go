package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/scitunnel/scitunnel/internal/pki"
)

func init() {
	register("certs", "make a CA, a server and a client certificate for a tunnel between bare hosts", makeCerts)
}

const certsHelp = `Usage: scitunnel certs --out DIR --server-name NAME [flags]

Makes what a tunnel between two hosts needs for mutual TLS, in DIR:

  ca.crt                       the tunnel's CA; both ends trust it
  ca.key                       keep it safe (or delete it): it signs new certificates
  server.crt, server.key       for 'scitunnel inbound --cert server.crt --key server.key'
  client.crt, client.key       for 'scitunnel outbound --cert client.crt --key client.key'

Copy ca.crt and the client pair to the consumer's host. The client certificate carries the
identity given by --client-id; pass the same value to the inbound end's --allow-san.

Flags:
`

func makeCerts(_ context.Context, args []string) int {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	out := fs.String("out", "", "directory to write the files to (created; existing files are not overwritten)")
	var names, ips listFlag
	fs.Var(&names, "server-name", "DNS name outbound ends use to reach the inbound end, repeatable")
	fs.Var(&ips, "server-ip", "IP address outbound ends use to reach the inbound end, repeatable")
	clientID := fs.String("client-id", "spiffe://scitunnel.local/client", "identity (URI SAN) in the client certificate")
	lifetime := fs.Duration("lifetime", 90*24*time.Hour, "lifetime of the server and client certificates")
	fs.Usage = func() { fmt.Fprint(fs.Output(), certsHelp); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" {
		return usageError("certs", "--out is required")
	}
	if len(names) == 0 && len(ips) == 0 {
		return usageError("certs", "give at least one --server-name or --server-ip: the outbound end checks it")
	}
	var parsedIPs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError("certs", fmt.Sprintf("--server-ip %q is not an IP address", s))
		}
		parsedIPs = append(parsedIPs, ip)
	}
	now := time.Now()
	ca, err := pki.NewCA("scitunnel tunnel CA", now)
	if err != nil {
		return fail(err)
	}
	server, err := ca.Issue(pki.LeafRequest{CommonName: "inbound", DNSNames: names, IPs: parsedIPs, Server: true, Lifetime: *lifetime}, now)
	if err != nil {
		return fail(err)
	}
	client, err := ca.Issue(pki.LeafRequest{CommonName: "outbound", URIs: []string{*clientID}, Lifetime: *lifetime}, now)
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fail(err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.crt", ca.CertPEM, 0o644}, {"ca.key", ca.KeyPEM, 0o600},
		{"server.crt", server.CertPEM, 0o644}, {"server.key", server.KeyPEM, 0o600},
		{"client.crt", client.CertPEM, 0o644}, {"client.key", client.KeyPEM, 0o600},
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(*out, f.name)); err == nil {
			return fail(fmt.Errorf("%s already exists; refusing to overwrite certificates", filepath.Join(*out, f.name)))
		}
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(*out, f.name), f.data, f.mode); err != nil {
			return fail(err)
		}
	}
	fmt.Printf("wrote %s/{ca,server,client}.{crt,key}; client identity %s, valid until %s\n", *out, *clientID, server.Cert.NotAfter.Format(time.DateOnly))
	return 0
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "scitunnel: %v\n", err)
	return 1
}
