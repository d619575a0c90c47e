// Package netns gives privileged tests network namespaces and veth pairs of their own, so
// traffic they generate never leaves the machine (or touches its real interfaces), and the
// SCITUNNEL_REQUIRE_PRIVILEGED rule: without root (or a needed tool) such a test skips, unless
// that variable is 1 (CI), where it fails.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Require skips (or, under SCITUNNEL_REQUIRE_PRIVILEGED=1, fails) t unless the process is root
// and every named tool is installed. "ip" is always required.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root (network namespaces, AF_PACKET)"
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = fmt.Sprintf("needs %s (apt-get install %s)", tool, aptPackage(tool))
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal("SCITUNNEL_REQUIRE_PRIVILEGED=1 but the test cannot run: " + why)
	}
	t.Skip(why)
}

func aptPackage(tool string) string {
	switch tool {
	case "ip":
		return "iproute2"
	case "pmacctd":
		return "pmacct"
	case "nft":
		return "nftables"
	}
	return tool
}

// NS is a network namespace deleted when its test ends.
type NS struct{ Name string }

var seq atomic.Int32

// New makes a namespace with loopback up.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	n := &NS{Name: fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))}
	Run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", n.Name).Run() })
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Run runs a command and returns its output, failing t if it fails.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command is a command to run inside the namespace (ip netns exec, which also mounts the
// namespace's own /sys, so /sys/class/net shows its interfaces).
func (n *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Run runs a command inside the namespace, failing t if it fails.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Do runs f on a thread moved into the namespace; sockets f creates stay in it.
func (n *NS) Do(t testing.TB, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", n.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	f()
}

// Veth connects a and b with a veth pair named aIf/bIf carrying the given addresses (CIDR,
// IPv6 ones without duplicate address detection so they are usable at once).
func Veth(t testing.TB, a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	t.Helper()
	Run(t, "ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, side := range []struct {
		ns        *NS
		ifc, addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		args := []string{"ip", "addr", "add", side.addr, "dev", side.ifc}
		if strings.Contains(side.addr, ":") {
			args = append(args, "nodad")
		}
		side.ns.Run(t, args...)
		side.ns.Run(t, "ip", "link", "set", side.ifc, "up")
	}
}

// Offloads turns TSO, GSO and GRO on or off on an interface (ethtool).
func (n *NS) Offloads(t testing.TB, ifc string, on bool) {
	t.Helper()
	v := "off"
	if on {
		v = "on"
	}
	n.Run(t, "ethtool", "-K", ifc, "tso", v, "gso", v, "gro", v)
}
