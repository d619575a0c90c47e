package flowlabel

import (
	"os"
	"strings"
)

// Sysctls read from the calling process's network namespace.
const (
	sysctlStateRanges = "/proc/sys/net/ipv6/flowlabel_state_ranges"
	sysctlReflect     = "/proc/sys/net/ipv6/flowlabel_reflect"
)

// KernelReservesBit19 reports whether net.ipv6.flowlabel_state_ranges is 1: the kernel then
// keeps labels with bit 19 set for itself and refuses them with ERANGE.
func KernelReservesBit19() bool { return readSysctl(sysctlStateRanges) == "1" }

// ReflectionOn reports whether net.ipv6.flowlabel_reflect has bit 0 set in this network
// namespace: accepted TCP connections then send with the label of the SYN they answered, so
// data flowing back to a labelled dialer is labelled too.
func ReflectionOn() bool {
	v := readSysctl(sysctlReflect)
	return v != "" && (v[len(v)-1]-'0')&1 == 1
}

func readSysctl(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
