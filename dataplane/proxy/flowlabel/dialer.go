// Package flowlabel dials TCP connections whose IPv6 packets carry a chosen flow label, and
// reports whether the labelling is in effect.
//
// Go's net.Dialer cannot do this: the kernel takes a socket's flow label from sin6_flowinfo in
// connect(2), and Go's connect always passes 0. So the dialer makes the socket itself, leases the
// label (IPV6_FLOWLABEL_MGR), turns on IPV6_FLOWINFO_SEND, calls connect(2) with a raw
// sockaddr_in6 carrying the label, waits for the connection through the runtime poller and only
// then hands the descriptor to the net package, so callers get an ordinary *net.TCPConn (which
// keeps io.Copy's splice and sendfile fast paths).
package flowlabel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket option constants from linux/in6.h; golang.org/x/sys/unix does not define them.
const (
	optFlowLabelMgr = 32 // IPV6_FLOWLABEL_MGR
	optFlowInfoSend = 33 // IPV6_FLOWINFO_SEND

	flActionGet  = 0   // IPV6_FL_A_GET
	flShareAny   = 255 // IPV6_FL_S_ANY: any socket in the namespace may reuse the label
	flFlagCreate = 1   // IPV6_FL_F_CREATE
)

// flowLabelReq is struct in6_flowlabel_req (32 bytes).
type flowLabelReq struct {
	dst     [16]byte
	label   uint32 // network byte order
	action  uint8
	share   uint8
	flags   uint16
	expires uint16
	linger  uint16
	_       uint32
}

// Reasons reported in Status.Reason (they become the FlowLabelApplied condition's reason).
const (
	ReasonMarked           = "Marked"
	ReasonIPv4Path         = "IPv4Path"
	ReasonPermissionDenied = "PermissionDenied"
	ReasonLabelOutOfRange  = "LabelOutOfRange"
	ReasonUnsupported      = "Unsupported"
	ReasonUnlabelled       = "Unlabelled" // the dial asked for no label
)

// Status is the outcome of the last dial.
type Status struct {
	Marked  bool
	Reason  string
	Message string
	Label   uint32 // the label of the last marked connection, entropy included
}

// Dialer dials TCP with a flow label. Label is called once per connection so each can get fresh
// entropy bits; a nil Label or one returning 0 dials without marking.
type Dialer struct {
	Label   func() uint32
	Timeout time.Duration
	// KeepAlive as in net.Dialer; 0 means the default 15s, negative disables.
	KeepAlive time.Duration
	// RetryRefused is how long a refused connection is dialed again (50 ms, doubling to 1 s)
	// before Dial gives up, or falls back from a refused IPv6 address to IPv4. A peer that has
	// just become ready refuses for a moment (a Service's endpoints reach kube-proxy, for each
	// IP family on its own, a second or so after the pod is ready; a replaced pod's port is not
	// open yet); an IPv4 fallback then would carry the connection unlabelled for its whole life.
	// 0: no retry. Keep it below Timeout, which bounds the whole Dial.
	RetryRefused time.Duration
	// OnRetry, if set, is told of each retried refusal.
	OnRetry func(address string)

	last atomic.Pointer[Status]
}

// LastStatus returns the outcome of the most recent labelled dial, or nil before any.
func (d *Dialer) LastStatus() *Status { return d.last.Load() }

// DialContext connects to address ("host:port", resolved like net.Dial). IPv6 destinations get
// the label; when marking is impossible (an IPv4 destination, a refused lease) the connection is
// still made, unmarked, and LastStatus says why: the tunnel must keep working.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, _, err := d.Dial(ctx, network, address)
	return c, err
}

// Dial is DialContext that also returns how this connection was marked.
func (d *Dialer) Dial(ctx context.Context, network, address string) (net.Conn, Status, error) {
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	var label uint32
	if d.Label != nil {
		label = d.Label() & 0xFFFFF
	}
	retryUntil := time.Now().Add(d.RetryRefused)
	backoff := 50 * time.Millisecond
	for {
		retrying := time.Now().Add(backoff).Before(retryUntil)
		c, st, err := d.dialOnce(ctx, network, address, label, retrying)
		if err == nil || !retrying || !errors.Is(err, syscall.ECONNREFUSED) {
			return c, st, err
		}
		if d.OnRetry != nil {
			d.OnRetry(address)
		}
		select {
		case <-ctx.Done():
			return nil, Status{}, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// dialOnce tries the destination's addresses, IPv6 first. holdIPv4 leaves IPv4 untried after a
// refused IPv6 address (the refusal is returned, to be retried).
func (d *Dialer) dialOnce(ctx context.Context, network, address string, label uint32, holdIPv4 bool) (net.Conn, Status, error) {
	if label == 0 || !strings.HasPrefix(network, "tcp") {
		c, err := d.plain().DialContext(ctx, network, address)
		return c, Status{Reason: ReasonUnlabelled}, err
	}
	addrs, err := resolveAddrs(ctx, network, address)
	if err != nil {
		return nil, Status{}, err
	}
	var firstErr error
	for _, ap := range addrs {
		if holdIPv4 && firstErr != nil && errors.Is(firstErr, syscall.ECONNREFUSED) && (ap.Addr().Is4() || ap.Addr().Is4In6()) {
			break
		}
		var c net.Conn
		var st Status
		if ap.Addr().Is4() || ap.Addr().Is4In6() {
			st = Status{Reason: ReasonIPv4Path, Message: fmt.Sprintf("destination %s is IPv4: IPv4 has no flow label; the connection is unmarked", ap)}
			c, err = d.plain().DialContext(ctx, "tcp", ap.String())
		} else {
			c, st, err = d.dialLabelled(ctx, ap, label)
		}
		if err == nil {
			d.last.Store(&st)
			return c, st, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, Status{}, firstErr
}

func (d *Dialer) plain() *net.Dialer {
	return &net.Dialer{KeepAlive: d.KeepAlive}
}

// resolveAddrs is resolve; a variable so tests can give a name both families.
var resolveAddrs = resolve

// resolve returns the destination addresses, IPv6 first: the labelled path is preferred.
func resolve(ctx context.Context, network, address string) ([]netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, network, portStr)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip, uint16(port))}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, resolverNetwork(network), host)
	if err != nil {
		return nil, err
	}
	var v6, v4 []netip.AddrPort
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if ap.Addr().Is6() {
			v6 = append(v6, ap)
		} else {
			v4 = append(v4, ap)
		}
	}
	return append(v6, v4...), nil
}

func resolverNetwork(network string) string {
	switch network {
	case "tcp4":
		return "ip4"
	case "tcp6":
		return "ip6"
	}
	return "ip"
}

// dialLabelled does the socket sequence described in the package comment. If the kernel
// refuses the label, it falls back to an unmarked dial and says why.
func (d *Dialer) dialLabelled(ctx context.Context, dst netip.AddrPort, label uint32) (net.Conn, Status, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, Status{}, os.NewSyscallError("socket", err)
	}
	if reason, err := leaseLabel(fd, dst.Addr(), label); err != nil {
		unix.Close(fd)
		st := Status{Reason: reason, Message: fmt.Sprintf("the kernel refused flow label %#05x for %s: %v; the connection is unmarked", label, dst, err)}
		c, err := d.plain().DialContext(ctx, "tcp", dst.String())
		return c, st, err
	}
	// os.NewFile registers a non-blocking descriptor with the runtime poller, so waiting for the
	// connection parks the goroutine instead of a thread, and deadlines work.
	f := os.NewFile(uintptr(fd), "flowlabel-dial")
	defer f.Close() // net.FileConn below dups the descriptor
	if err := connectWithLabel(ctx, f, dst, label); err != nil {
		return nil, Status{}, err
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, Status{}, err
	}
	if tc, ok := c.(*net.TCPConn); ok && d.KeepAlive >= 0 {
		// As net.Dialer does: without a period the kernel would wait two hours, far longer than
		// the idle timeouts of the firewalls and NATs a long, quiet stream crosses.
		period := d.KeepAlive
		if period == 0 {
			period = 15 * time.Second
		}
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(period)
	}
	return c, Status{Marked: true, Reason: ReasonMarked, Label: label, Message: fmt.Sprintf("connections carry flow label %#05x", label)}, nil
}

func leaseLabel(fd int, dst netip.Addr, label uint32) (reason string, err error) {
	req := flowLabelReq{dst: dst.As16(), label: htonl(label), action: flActionGet, share: flShareAny, flags: flFlagCreate}
	if err := setsockopt(fd, unix.IPPROTO_IPV6, optFlowLabelMgr, unsafe.Pointer(&req), unsafe.Sizeof(req)); err != nil {
		return classify(err), fmt.Errorf("IPV6_FLOWLABEL_MGR: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, optFlowInfoSend, 1); err != nil {
		return classify(err), fmt.Errorf("IPV6_FLOWINFO_SEND: %w", err)
	}
	return "", nil
}

func classify(err error) string {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return ReasonPermissionDenied
	case errors.Is(err, unix.ERANGE), errors.Is(err, unix.EINVAL):
		return ReasonLabelOutOfRange
	}
	return ReasonUnsupported
}

// connectWithLabel calls connect(2) with sin6_flowinfo = label and waits for the handshake.
func connectWithLabel(ctx context.Context, f *os.File, dst netip.AddrPort, label uint32) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(dst.Port()), Flowinfo: htonl(label), Addr: dst.Addr().As16()}
	if z := dst.Addr().Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.Scope_id = uint32(ifi.Index)
		}
	}
	var connectErr error
	if err := rc.Control(func(fd uintptr) {
		_, _, e := unix.Syscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
		if e != 0 {
			connectErr = e
		}
	}); err != nil {
		return err
	}
	if connectErr == nil {
		return nil
	}
	if !errors.Is(connectErr, unix.EINPROGRESS) {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: os.NewSyscallError("connect", connectErr)}
	}
	// Wait for writability; a deadline from ctx bounds the wait and cancellation cuts it short.
	if dl, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var soErr error
	waitErr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			soErr = err
			return true
		}
		if v != 0 {
			soErr = syscall.Errno(v)
			return true
		}
		if _, err := unix.Getpeername(int(fd)); err != nil {
			return false // still connecting: park until writable
		}
		return true
	})
	if waitErr != nil {
		if ctx.Err() != nil {
			waitErr = ctx.Err()
		}
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: waitErr}
	}
	if soErr != nil {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: os.NewSyscallError("connect", soErr)}
	}
	_ = f.SetWriteDeadline(time.Time{})
	return nil
}

func setsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func htonl(v uint32) uint32 {
	b := [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return *(*uint32)(unsafe.Pointer(&b))
}

func htons(v uint16) uint16 {
	b := [2]byte{byte(v >> 8), byte(v)}
	return *(*uint16)(unsafe.Pointer(&b))
}
