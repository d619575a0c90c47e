package sampler

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// sysClassNet is where Linux publishes interface counters; a container sees its own network
// namespace's interfaces there.
var sysClassNet = "/sys/class/net"

// readUint reads one number from an interface's sysfs file; ok is false when it is missing or
// not a non-negative number (veth has no speed, for instance).
func readUint(iface, file string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(sysClassNet, iface, file))
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 64)
	return v, err == nil
}

func readString(iface, file string) string {
	b, _ := os.ReadFile(filepath.Join(sysClassNet, iface, file))
	return strings.TrimSpace(string(b))
}

// packetCount is the number of packets that passed the interface in the directions the sampler
// sees: the sample pool's source.
func packetCount(iface string, loopback bool) uint64 {
	rx, _ := readUint(iface, "statistics/rx_packets")
	if loopback {
		return rx
	}
	tx, _ := readUint(iface, "statistics/tx_packets")
	return rx + tx
}

// IANAifType values.
const (
	ifTypeOther            = 1
	ifTypeEthernetCsmacd   = 6
	ifTypeSoftwareLoopback = 24
)

// Linux ARPHRD_* values (see the interface's sysfs "type").
const (
	arphrdEther    = 1
	arphrdLoopback = 772
)

// interfaceCounters reads the generic interface counters sFlow carries. Linux does not split
// broadcast from multicast, nor count unknown protocols or outgoing multicast per interface:
// those are sent as unknown (2^32-1), as the sFlow specification asks.
func interfaceCounters(iface string, index int) sflow.IfCounters {
	u32 := func(file string) uint32 {
		v, ok := readUint(iface, "statistics/"+file)
		if !ok {
			return sflow.Unknown32
		}
		return uint32(v)
	}
	u64 := func(file string) uint64 {
		v, ok := readUint(iface, "statistics/"+file)
		if !ok {
			return ^uint64(0)
		}
		return v
	}
	c := sflow.IfCounters{
		Index:            uint32(index),
		Type:             ifTypeOther,
		InOctets:         u64("rx_bytes"),
		InMulticastPkts:  u32("multicast"),
		InBroadcastPkts:  sflow.Unknown32,
		InDiscards:       u32("rx_dropped"),
		InErrors:         u32("rx_errors"),
		InUnknownProtos:  sflow.Unknown32,
		OutOctets:        u64("tx_bytes"),
		OutUcastPkts:     u32("tx_packets"),
		OutMulticastPkts: sflow.Unknown32,
		OutBroadcastPkts: sflow.Unknown32,
		OutDiscards:      u32("tx_dropped"),
		OutErrors:        u32("tx_errors"),
	}
	if rx, ok := readUint(iface, "statistics/rx_packets"); ok {
		mc, _ := readUint(iface, "statistics/multicast")
		c.InUcastPkts = uint32(rx - min(mc, rx))
	} else {
		c.InUcastPkts = sflow.Unknown32
	}
	switch t, _ := readUint(iface, "type"); t {
	case arphrdEther:
		c.Type = ifTypeEthernetCsmacd
	case arphrdLoopback:
		c.Type = ifTypeSoftwareLoopback
	}
	if mbps, ok := readUint(iface, "speed"); ok && mbps < 1<<32 {
		c.Speed = mbps * 1_000_000
	}
	switch readString(iface, "duplex") {
	case "full":
		c.Direction = 1
	case "half":
		c.Direction = 2
	}
	if flags, ok := readUint(iface, "flags"); ok {
		if flags&0x1 != 0 { // IFF_UP
			c.Status |= 1
		}
		if flags&0x100 != 0 { // IFF_PROMISC
			c.Promiscuous = 1
		}
	}
	if s := readString(iface, "operstate"); s == "up" || s == "unknown" && c.Type == ifTypeSoftwareLoopback {
		c.Status |= 2
	}
	return c
}
