package flowlabel

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The accepting end of a TCP connection cannot choose its own flow label, but the kernel can
// make it mirror the label of the SYN it answered ("reflection"), so the data it sends back
// carries the dialer's tag. Two switches do that, both per network namespace or finer:
//
//   - the sysctl net.ipv6.flowlabel_reflect (bit 0): every accepted TCP socket in the
//     namespace reflects; a pod sets it in its own namespace;
//   - IPV6_FL_F_REFLECT on a listening socket: the connections it accepts reflect. The kernel
//     allows it only when net.ipv6.flowlabel_consistency is 0.

// Reflection says how this end's accepted connections get the dialer's label.
type Reflection string

const (
	// ReflectBySysctl: net.ipv6.flowlabel_reflect is on in this network namespace.
	ReflectBySysctl Reflection = "sysctl"
	// ReflectByListener: the listeners set IPV6_FL_F_REFLECT.
	ReflectByListener Reflection = "listener"
	// ReflectOff: accepted connections send with the kernel's own (random) labels.
	ReflectOff Reflection = "off"
)

const sysctlConsistency = "/proc/sys/net/ipv6/flowlabel_consistency"

// flagReflect is IPV6_FL_F_REFLECT from linux/in6.h.
const flagReflect = 4

// ListenerReflectionAllowed reports whether net.ipv6.flowlabel_consistency is 0 here, the
// kernel's condition for IPV6_FL_F_REFLECT.
func ListenerReflectionAllowed() bool { return readSysctl(sysctlConsistency) == "0" }

// DetectReflection says which reflection this network namespace offers, preferring the sysctl
// (it needs nothing from the listeners), and why when it offers none.
func DetectReflection() (Reflection, string) {
	switch {
	case ReflectionOn():
		return ReflectBySysctl, "net.ipv6.flowlabel_reflect is on: accepted connections mirror the dialer's flow label"
	case ListenerReflectionAllowed():
		return ReflectByListener, "net.ipv6.flowlabel_consistency is 0: the listeners reflect the dialer's flow label (IPV6_FL_F_REFLECT)"
	}
	return ReflectOff, "net.ipv6.flowlabel_reflect is off and net.ipv6.flowlabel_consistency is on in this network namespace: " +
		"data sent on accepted connections leaves with the kernel's own labels; set net.ipv6.flowlabel_reflect=1 " +
		"(in Kubernetes: the pod's securityContext.sysctls, allowed by the kubelet's --allowed-unsafe-sysctls)"
}

// ReflectAccepted sets IPV6_FL_F_REFLECT on a listening IPv6 TCP socket: each connection it
// accepts afterwards sends with the flow label of the SYN it answered.
func ReflectAccepted(c syscall.RawConn) error {
	var opErr error
	err := c.Control(func(fd uintptr) {
		req := flowLabelReq{action: flActionGet, flags: flagReflect}
		opErr = setsockopt(int(fd), unix.IPPROTO_IPV6, optFlowLabelMgr, unsafe.Pointer(&req), unsafe.Sizeof(req))
	})
	if err != nil {
		return err
	}
	if opErr != nil {
		return fmt.Errorf("IPV6_FLOWLABEL_MGR with IPV6_FL_F_REFLECT: %w", opErr)
	}
	return nil
}
