//go:build e2e

package e2e_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The pod network as the host sees it. The local cluster's pods hang off the bridge localbr0
// through veth pairs; capturing the host end of a pod's veth sees exactly the frames the pod's
// own eth0 sees (the same skbs, offload super-frames included), which is what the sFlow
// sidecar samples inside the pod.

// captureIface is the interface to capture pod traffic on, or "" when this machine cannot see
// the pod network (another cluster): E2E_CAPTURE_IFACE, else the local cluster's bridge.
func captureIface() string {
	if i := os.Getenv("E2E_CAPTURE_IFACE"); i != "" {
		return i
	}
	if _, err := os.Stat("/sys/class/net/localbr0"); err == nil {
		return "localbr0"
	}
	return ""
}

// podVeth finds the host end of a pod's veth: among the bridge's ports, the one whose peer's
// network namespace holds the pod's address on eth0.
func podVeth(pod corev1.Pod) (string, error) {
	out, err := exec.Command("ip", "-o", "link", "show", "master", "localbr0").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip link: %v: %s", err, out)
	}
	re := regexp.MustCompile(`^\d+: ([^@:]+)@\S+ .* link-netns (\S+)`)
	for _, line := range strings.Split(string(out), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		addrs, err := exec.Command("ip", "-n", m[2], "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			continue
		}
		for _, ip := range pod.Status.PodIPs {
			if strings.Contains(string(addrs), " "+ip.IP+"/") {
				return m[1], nil
			}
		}
	}
	return "", fmt.Errorf("no veth on localbr0 leads to pod %s (%v)", pod.Name, pod.Status.PodIPs)
}

// capture is a running tcpdump writing a pcap file.
type capture struct {
	cmd    *exec.Cmd
	file   string
	stderr *strings.Builder
}

// startCapture records the first 128 bytes of every IPv6 frame on iface into file, and returns
// once tcpdump listens.
func startCapture(ctx context.Context, iface, file string) (*capture, error) {
	c := &capture{file: file, stderr: &strings.Builder{}}
	c.cmd = exec.CommandContext(ctx, "tcpdump", "-i", iface, "-s", "128", "-B", "16384", "-w", file, "ip6")
	c.cmd.Stderr = c.stderr
	c.cmd.Cancel = func() error { return c.cmd.Process.Signal(os.Interrupt) }
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(c.stderr.String(), "listening on"); {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("tcpdump on %s did not start: %s", iface, c.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c, nil
}

// stop ends the capture and returns how many packets the kernel dropped (which would make the
// capture an undercount).
func (c *capture) stop() (dropped int, err error) {
	_ = c.cmd.Process.Signal(os.Interrupt)
	_ = c.cmd.Wait()
	m := regexp.MustCompile(`(\d+) packets? dropped by kernel`).FindStringSubmatch(c.stderr.String())
	if m == nil {
		return 0, fmt.Errorf("tcpdump reported no drop count: %s", c.stderr.String())
	}
	return strconv.Atoi(m[1])
}

// wireTotals are the frames of one flow label in a capture.
type wireTotals struct {
	Frames uint64
	Bytes  uint64 // original frame lengths, as the sampler weighs them
	// SumSquares of the frame lengths: the variance of a 1-in-N byte estimate is
	// (N-1) * SumSquares.
	SumSquares float64
}

// pcapLabelBytes sums the IPv6 frames of a classic pcap file (Ethernet link type) whose flow
// label, entropy bits masked, is label.
func pcapLabelBytes(file string, label, mask uint32) (wireTotals, error) {
	var t wireTotals
	f, err := os.Open(file)
	if err != nil {
		return t, err
	}
	defer f.Close()
	head := make([]byte, 24)
	if _, err := io.ReadFull(f, head); err != nil {
		return t, fmt.Errorf("pcap header: %w", err)
	}
	var order binary.ByteOrder
	switch binary.LittleEndian.Uint32(head) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		order = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return t, errors.New("not a pcap file")
	}
	if lt := order.Uint32(head[20:]); lt != 1 {
		return t, fmt.Errorf("pcap link type %d, want 1 (Ethernet)", lt)
	}
	rec := make([]byte, 16)
	data := make([]byte, 65536)
	for {
		if _, err := io.ReadFull(f, rec); err != nil {
			if errors.Is(err, io.EOF) {
				return t, nil
			}
			return t, fmt.Errorf("pcap record: %w", err)
		}
		incl, orig := order.Uint32(rec[8:]), order.Uint32(rec[12:])
		if int(incl) > len(data) {
			return t, fmt.Errorf("pcap record of %d bytes", incl)
		}
		pkt := data[:incl]
		if _, err := io.ReadFull(f, pkt); err != nil {
			return t, fmt.Errorf("pcap record: %w", err)
		}
		off := 12
		for off+2 <= len(pkt) && binary.BigEndian.Uint16(pkt[off:]) == 0x8100 { // VLAN tags
			off += 4
		}
		if off+2+4 > len(pkt) || binary.BigEndian.Uint16(pkt[off:]) != 0x86dd {
			continue
		}
		if binary.BigEndian.Uint32(pkt[off+2:])&0xfffff&mask != label {
			continue
		}
		t.Frames++
		t.Bytes += uint64(orig)
		t.SumSquares += float64(orig) * float64(orig)
	}
}
