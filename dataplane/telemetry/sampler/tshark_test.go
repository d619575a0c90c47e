package sampler

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

// TestTsharkDecodesSampler captures our sampler's datagrams with tshark (dumpcap) while it
// samples a labelled iperf3 stream, and checks that Wireshark's sFlow dissector reads every
// datagram as we meant it: sequence numbers, sampling rates, pools, frame lengths, and the flow
// labels of the sampled packets (0x10024 among them).
func TestTsharkDecodesSampler(t *testing.T) {
	netns.Require(t, "iperf3", "tshark")
	nsA, nsB := twoHosts(t)
	pcap := filepath.Join(t.TempDir(), "sflow.pcapng")
	// Capture on loopback, where the sampler sends to the collector below.
	capture := nsA.Command("tshark", "-i", "lo", "-f", "udp port 6343", "-w", pcap)
	var capErr strings.Builder
	capture.Stderr = &capErr
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = capture.Process.Kill(); _ = capture.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(capErr.String(), "Capturing on") {
		if time.Now().After(deadline) {
			t.Fatalf("tshark did not start capturing: %s", capErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	const rate = 10
	stop := startSampler(t, nsA, childSpec{Interfaces: []string{"sa0"}, Rate: rate,
		Collectors: []string{"[::1]:6343"}, Polling: 500 * time.Millisecond, Flush: 200 * time.Millisecond})
	warmNeighbour(t, nsA, addrB)
	startIperfServer(t, nsB, 5401)
	if out, err := nsA.Command("iperf3", "-6", "-c", addrB.String(), "-p", "5401", "--flowlabel", "65572", "-t", "1", "-b", "1G").CombinedOutput(); err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	time.Sleep(300 * time.Millisecond)
	_ = capture.Process.Signal(syscall.SIGINT)
	_ = capture.Wait()
	if _, err := os.Stat(pcap); err != nil {
		t.Fatalf("no capture: %v\n%s", err, capErr.String())
	}

	outb, err := exec.Command("tshark", "-r", pcap, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
		"-e", "sflow_245.sequence_number", "-e", "sflow.flow_sample.sampling_rate", "-e", "sflow.flow_sample.sample_pool",
		"-e", "sflow_245.header.frame_length", "-e", "ipv6.flow", "-e", "udp.payload").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v", err)
	}
	out := string(outb)
	var d sflow.Decoder
	datagrams, labelled := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			t.Fatalf("tshark line %q", line)
		}
		// The first udp.payload is the datagram itself (sampled UDP packets add more).
		payload, err := hex.DecodeString(strings.Split(f[5], ",")[0])
		if err != nil {
			t.Fatal(err)
		}
		dg, err := d.Decode(payload)
		if err != nil {
			t.Fatalf("captured datagram does not decode: %v", err)
		}
		datagrams++
		var rates, pools, lengths, labels []string
		for _, s := range dg.FlowSamples {
			rates = append(rates, strconv.Itoa(int(s.SamplingRate)))
			pools = append(pools, strconv.Itoa(int(s.SamplePool)))
			h := s.Headers[0]
			lengths = append(lengths, strconv.Itoa(int(h.FrameLength)))
			if p, ok := sflow.ParsePacket(h.Protocol, h.Header); ok && p.IPv6 {
				labels = append(labels, "0x"+leftPad(strconv.FormatUint(uint64(p.FlowLabel), 16), 6))
				if p.FlowLabel == 65572 {
					labelled++
				}
				if inner, ok := icmpv6ErrorInnerLabel(h.Header); ok {
					labels = append(labels, "0x"+leftPad(strconv.FormatUint(uint64(inner), 16), 6))
				}
			}
		}
		want := []string{strconv.Itoa(int(dg.SequenceNumber)), strings.Join(rates, ","), strings.Join(pools, ","), strings.Join(lengths, ",")}
		for i, w := range want {
			if f[i] != w {
				t.Errorf("datagram %d field %d: tshark %q, ours %q", dg.SequenceNumber, i, f[i], w)
			}
		}
		// tshark's first ipv6.flow is the datagram's own IPv6 header (to ::1).
		tl := strings.Split(f[4], ",")[1:]
		if strings.Join(tl, ",") != strings.Join(labels, ",") {
			t.Errorf("datagram %d: tshark labels %v, ours %v", dg.SequenceNumber, tl, labels)
		}
		for _, r := range rates {
			if r != strconv.Itoa(rate) {
				t.Errorf("sampling rate %s", r)
			}
		}
	}
	t.Logf("%d datagrams, %d samples of the 0x10024 stream", datagrams, labelled)
	if datagrams < 3 || labelled < 50 {
		t.Errorf("%d datagrams, %d labelled samples: too few to check", datagrams, labelled)
	}
}

// icmpv6ErrorInnerLabel is the flow label of the packet an ICMPv6 error message quotes, which
// tshark lists as one more ipv6.flow (warmNeighbour's probe to port 9 draws a port unreachable).
func icmpv6ErrorInnerLabel(frame []byte) (uint32, bool) {
	const eth, ip6, icmp = 14, 40, 8
	if len(frame) < eth+ip6+icmp+ip6 || frame[12] != 0x86 || frame[13] != 0xDD || frame[eth+6] != 58 {
		return 0, false // not Ethernet + IPv6 + ICMPv6 (without extension headers)
	}
	if frame[eth+ip6] >= 128 || frame[eth+ip6+icmp]>>4 != 6 {
		return 0, false // an informational message, or no IPv6 packet quoted
	}
	inner := frame[eth+ip6+icmp:]
	return uint32(inner[1]&0x0F)<<16 | uint32(inner[2])<<8 | uint32(inner[3]), true
}

func leftPad(s string, n int) string {
	for len(s) < n {
		s = "0" + s
	}
	return s
}
