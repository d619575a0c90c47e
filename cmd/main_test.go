package main

import (
	"flag"
	"net/netip"
	"testing"
)

func parseRegistryFlags(t *testing.T, args ...string) registryFlags {
	t.Helper()
	var r registryFlags
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	r.bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return r
}

// By default the manager fetches https only and refuses the private ranges.
func TestRegistryFlagsDefaultRefusesPrivateRanges(t *testing.T) {
	opts, err := parseRegistryFlags(t).options()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Egress.AllowHTTP {
		t.Error("http must be off by default")
	}
	for _, a := range []string{"10.1.2.3", "192.168.0.1", "127.0.0.1", "169.254.169.254"} {
		if opts.Egress.Permits(netip.MustParseAddr(a)) {
			t.Errorf("%s is permitted by default", a)
		}
	}
}

func TestRegistryFlags(t *testing.T) {
	opts, err := parseRegistryFlags(t, "--registry-allow-http", "--cluster-cidrs=198.18.0.0/15,198.51.100.0/24",
		"--registry-allowed-cidrs=10.1.2.3", "--registry-max-urls=4").options()
	if err != nil {
		t.Fatal(err)
	}
	if !opts.Egress.AllowHTTP || opts.MaxURLs != 4 {
		t.Errorf("options %+v", opts)
	}
	for addr, want := range map[string]bool{"198.18.0.1": false, "198.51.100.7": false, "10.1.2.3": true, "10.1.2.4": false} {
		if got := opts.Egress.Permits(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Permits(%s) = %v, want %v", addr, got, want)
		}
	}
	if _, err := parseRegistryFlags(t, "--cluster-cidrs=not-a-cidr").options(); err == nil {
		t.Error("a bad CIDR must stop the manager")
	}
}
