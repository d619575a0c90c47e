package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Routes are a configuration's routes, for their validation.
type Routes []Route

// Validate checks each route and that no two share a listening port.
func (rs Routes) Validate() error {
	var p problems
	if len(rs) == 0 {
		p.add("", "at least one route (listen port and target) is required")
	}
	ports := map[int]bool{}
	for i, r := range rs {
		f := fmt.Sprintf("[%d]", i)
		if ports[r.ListenPort] && validPort(r.ListenPort) {
			p.add(f+".listenPort", "port %d is used by another route", r.ListenPort)
		}
		ports[r.ListenPort] = true
		p.within(f, r.Validate())
	}
	return p.err()
}

// Validate checks the listening port and the target's form.
func (r Route) Validate() error {
	var p problems
	if !validPort(r.ListenPort) {
		p.add("listenPort", "is %d, must be 1..65535", r.ListenPort)
	}
	if err := checkHostPort(r.Target); err != nil {
		p.add("target", "%v", err)
	}
	return p.err()
}

// Expand maps listening ports onto targets the way SciStream maps num_conn ports: port i
// carries target i mod len(targets). With as many ports as targets that is one port per
// target; with parallel streams (more ports than targets) each target gets several ports.
// Both the controller and the CLI build their routes with it.
func Expand(listenPorts []int, targets []string) ([]Route, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("no targets")
	}
	if len(listenPorts) < len(targets) {
		return nil, fmt.Errorf("%d listen ports for %d targets: need at least one port per target", len(listenPorts), len(targets))
	}
	routes := make([]Route, len(listenPorts))
	for i, p := range listenPorts {
		routes[i] = Route{ListenPort: p, Target: targets[i%len(targets)]}
	}
	return routes, nil
}

// PortRange returns count consecutive ports starting at first.
func PortRange(first, count int) []int {
	ports := make([]int, count)
	for i := range ports {
		ports[i] = first + i
	}
	return ports
}

// ParsePorts reads a comma-separated list of ports and ranges: "5100-5104,6000".
func ParsePorts(s string) ([]int, error) {
	var ports []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return nil, err
			}
			if last < first {
				return nil, fmt.Errorf("port range %q runs backwards", part)
			}
		}
		ports = append(ports, PortRange(first, last-first+1)...)
	}
	if len(ports) == 0 {
		return nil, fmt.Errorf("no ports in %q", s)
	}
	return ports, nil
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || !validPort(p) {
		return 0, fmt.Errorf("%q is not a port (1..65535)", s)
	}
	return p, nil
}
