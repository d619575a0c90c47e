package sampler

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// withNetRaw runs open (the AF_PACKET socket's creation, the one step that needs CAP_NET_RAW)
// with that capability effective, when the process holds it only as permitted.
//
// That is how a non-root sidecar holds it: Kubernetes puts NET_RAW in the container's bounding
// set, and the file capability on the image's binary (cap_net_raw=p, without the effective bit)
// makes it permitted at exec. Without the effective bit the same binary also starts in
// containers whose bounding set lacks NET_RAW (the proxy container, a sidecar with sampling
// off), where the kernel would refuse to exec a binary whose effective file capability it
// cannot grant. Capabilities are per thread, so the raise, the call and the drop happen on one
// locked thread. Root (effective already) and processes without the capability are unchanged.
func withNetRaw[T any](open func() (T, error)) (T, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // version 3: two 32-bit words; NET_RAW (13) is in the first
	const netRaw = 1 << unix.CAP_NET_RAW
	if unix.Capget(&hdr, &data[0]) != nil || data[0].Permitted&netRaw == 0 || data[0].Effective&netRaw != 0 {
		return open()
	}
	data[0].Effective |= netRaw
	if unix.Capset(&hdr, &data[0]) != nil {
		return open() // fails with EPERM like any process without the capability
	}
	defer func() {
		data[0].Effective &^= netRaw
		_ = unix.Capset(&hdr, &data[0])
	}()
	return open()
}
