package flowlabel

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
	"github.com/scitunnel/scitunnel/test/wire"
)

// sink accepts one connection on [::1] and reads it to the end.
func sink(t *testing.T) (net.Listener, <-chan int64) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		skipWithoutIPv6(t, err)
	}
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	t.Cleanup(func() { ln.Close() })
	return ln, got
}

func send(t *testing.T, c net.Conn, n int) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for sent := 0; sent < n; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
}

// skipWithoutIPv6 skips a test on a host without IPv6 loopback, or fails it where every test
// must run (SCITUNNEL_REQUIRE_PRIVILEGED=1, as in CI).
func skipWithoutIPv6(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("no IPv6 loopback: %v", err)
	}
	t.Skipf("no IPv6 loopback: %v", err)
}

// A dual-stack destination whose IPv6 address refuses for a moment (a peer just becoming
// ready): within RetryRefused the dialer waits for the labelled IPv6 path rather than settling
// on IPv4, which would carry the connection unlabelled for its whole life; without it, it falls
// back at once.
func TestDialerRetriesRefusedIPv6BeforeIPv4(t *testing.T) {
	v4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer v4.Close()
	port := v4.Addr().(*net.TCPAddr).Port
	v6addr := fmt.Sprintf("[::1]:%d", port)
	if probe, err := net.Listen("tcp6", v6addr); err != nil {
		skipWithoutIPv6(t, err)
	} else {
		probe.Close() // free on IPv6 too, and refusing now
	}
	orig := resolveAddrs
	resolveAddrs = func(context.Context, string, string) ([]netip.AddrPort, error) {
		return []netip.AddrPort{netip.MustParseAddrPort(v6addr), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}, nil
	}
	defer func() { resolveAddrs = orig }()
	go func() {
		for {
			c, err := v4.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	base, _ := scitag.Label(2, 16)

	impatient := &Dialer{Label: func() uint32 { return base }, Timeout: 5 * time.Second}
	c, err := impatient.DialContext(context.Background(), "tcp", "dual.example:0")
	if err != nil {
		t.Fatal(err)
	}
	if ap := netip.MustParseAddrPort(c.RemoteAddr().String()); !ap.Addr().Is4() {
		t.Errorf("without RetryRefused: connected to %s, want the IPv4 fallback", ap)
	}
	c.Close()

	var retries int
	patient := &Dialer{Label: func() uint32 { return base }, Timeout: 5 * time.Second, RetryRefused: 3 * time.Second,
		OnRetry: func(string) { retries++ }}
	listening := make(chan net.Listener, 1)
	go func() {
		time.Sleep(400 * time.Millisecond)
		ln, err := net.Listen("tcp6", v6addr)
		if err != nil {
			t.Error(err)
		}
		listening <- ln
	}()
	start := time.Now()
	c, err = patient.DialContext(context.Background(), "tcp", "dual.example:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v6 := <-listening; v6 != nil {
		defer v6.Close()
	}
	if ap := netip.MustParseAddrPort(c.RemoteAddr().String()); !ap.Addr().Is6() {
		t.Errorf("with RetryRefused: connected to %s after %v, want the IPv6 (labelled) address once it listens", ap, time.Since(start))
	}
	if retries == 0 {
		t.Error("no retry reported")
	}
	if st := patient.LastStatus(); st == nil || st.Reason == ReasonIPv4Path {
		t.Errorf("status %+v, want the labelled path", st)
	}
}

// Every segment the dialer sends carries the tag's label; an ordinary dial's do not.
func TestDialerMarksEverySegment(t *testing.T) {
	wire.RequirePrivileged(t)
	atlasDebug, _ := scitag.Label(2, 9) // 65572, the label iperf3 --flowlabel uses in the notes
	capture, err := wire.Start("lo")
	if err != nil {
		t.Fatal(err)
	}

	ln, got := sink(t)
	d := &Dialer{Label: func() uint32 { return atlasDebug }, Timeout: 5 * time.Second}
	c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*net.TCPConn); !ok {
		t.Fatalf("dialer returned %T, want *net.TCPConn (keeps splice)", c)
	}
	marked := netip.MustParseAddrPort(c.LocalAddr().String())
	send(t, c, 4<<20)
	if n := <-got; n != 4<<20 {
		t.Fatalf("sink read %d bytes", n)
	}
	if s := d.LastStatus(); s == nil || !s.Marked || s.Reason != ReasonMarked {
		t.Fatalf("status %+v, want marked", s)
	}

	ln2, got2 := sink(t)
	plain, err := net.Dial("tcp6", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	unmarked := netip.MustParseAddrPort(plain.LocalAddr().String())
	send(t, plain, 1<<20)
	<-got2

	packets := capture.Stop()
	server := netip.MustParseAddrPort(ln.Addr().String())
	data, syn := 0, 0
	for _, p := range wire.Between(packets, marked, server) {
		if p.FlowLabel&scitag.Mask != atlasDebug {
			t.Fatalf("segment %+v carries label %#05x, want %#05x", p, p.FlowLabel, atlasDebug)
		}
		if p.SYN {
			syn++
		}
		if p.PayloadLen > 0 {
			data++
		}
	}
	if syn == 0 || data == 0 {
		t.Fatalf("captured %d SYNs and %d data segments of the marked connection; want both", syn, data)
	}
	server2 := netip.MustParseAddrPort(ln2.Addr().String())
	plainPackets := wire.Between(packets, unmarked, server2)
	if len(plainPackets) == 0 {
		t.Fatal("captured nothing of the unmarked connection")
	}
	for _, p := range plainPackets {
		if p.FlowLabel&scitag.Mask == atlasDebug {
			t.Fatalf("an unmarked connection's segment carries the tag: %+v", p)
		}
	}
}

// Entropy varies the five entropy bits per connection and never the tag bits.
func TestDialerEntropyPerConnection(t *testing.T) {
	wire.RequirePrivileged(t)
	base, _ := scitag.Label(2, 16)
	// As the proxy labels a tunnel with entropy on (proxy.nextLabel).
	allowBit19 := !KernelReservesBit19()
	d := &Dialer{Label: func() uint32 { return scitag.WithEntropy(base, rand.Uint32(), allowBit19) }, Timeout: 5 * time.Second}
	labels := map[uint32]bool{}
	for i := 0; i < 16; i++ {
		ln, got := sink(t)
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s := d.LastStatus()
		if !s.Marked || s.Label&scitag.Mask != base {
			t.Fatalf("status %+v", s)
		}
		if KernelReservesBit19() && s.Label&scitag.Bit19 != 0 {
			t.Fatalf("bit 19 set although flowlabel_state_ranges=1: %#05x", s.Label)
		}
		labels[s.Label] = true
		c.Close()
		<-got
	}
	if len(labels) < 2 {
		t.Fatalf("16 connections used %d distinct labels; entropy is not per connection", len(labels))
	}
}

// An IPv4 destination cannot be labelled: the connection is still made and the status says why.
func TestDialerIPv4FallsBack(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	d := &Dialer{Label: func() uint32 { return 65600 }}
	c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s := d.LastStatus(); s == nil || s.Marked || s.Reason != ReasonIPv4Path {
		t.Fatalf("status %+v, want IPv4Path", s)
	}
}

// A refused connection and a cancelled dial return errors promptly, leaking nothing.
func TestDialerErrors(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		skipWithoutIPv6(t, err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	d := &Dialer{Label: func() uint32 { return 65600 }, Timeout: 2 * time.Second}
	if _, err := d.DialContext(context.Background(), "tcp", addr); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.DialContext(ctx, "tcp", "[::1]:9"); err == nil {
		t.Fatal("dial with a cancelled context succeeded")
	}
}

// A label the kernel refuses (bit 19 set while net.ipv6.flowlabel_state_ranges=1 reserves it:
// ERANGE) does not stop the connection: it is made unmarked and the status says why.
func TestDialerRefusedLabelFallsBack(t *testing.T) {
	wire.RequirePrivileged(t)
	ns := netns.New(t, "fl")
	ns.Run(t, "sysctl", "-qw", "net.ipv6.flowlabel_state_ranges=1")
	// Sockets belong to the namespace of the thread that creates them.
	ns.Do(t, func() { dialRefusedLabel(t) })
}

func dialRefusedLabel(t *testing.T) {
	ln, got := sink(t)
	base, _ := scitag.Label(2, 16)
	d := &Dialer{Label: func() uint32 { return base | scitag.Bit19 }, Timeout: 5 * time.Second}
	c, st, err := d.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("the connection was not made: %v", err)
	}
	send(t, c, 1<<20)
	if n := <-got; n != 1<<20 {
		t.Fatalf("sink read %d bytes", n)
	}
	if st.Marked || st.Reason != ReasonLabelOutOfRange || !strings.Contains(st.Message, "unmarked") {
		t.Fatalf("status %+v, want unmarked with reason %s", st, ReasonLabelOutOfRange)
	}
	if last := d.LastStatus(); last == nil || last.Reason != ReasonLabelOutOfRange {
		t.Fatalf("LastStatus %+v", last)
	}
}
