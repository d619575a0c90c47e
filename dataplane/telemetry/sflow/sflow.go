// Package sflow is the sFlow version 5 wire format (sflow.org, "sFlow Version 5", July 2004):
// a decoder for the analyzer and an encoder for the sampler, both for the parts SciTunnel uses —
// flow samples and expanded flow samples with sampled-header records, counter samples with
// generic interface counters — skipping every other sample and record type by its length, as
// the specification asks.
//
// The decoder is our own rather than goflow2's (github.com/netsampler/goflow2/v2/decoders/sflow):
// goflow2 allocates for every datagram, sample and record (interfaces, slices, bytes.Buffers),
// which caps an analyzer at a few hundred thousand samples per second per core, and it rejects
// datagrams with sample types it does not know instead of skipping them. This decoder parses in
// place without allocating (the results alias the datagram and reuse the Decoder's slices).
// goflow2 stays in the tests as the oracle: both must decode the test vectors and the fuzz corpus
// the same way (decode_differential_test.go and the fuzz target).
//
// No maintained Go sFlow encoder exists, hence encode.go.
package sflow

import "net/netip"

// Version is the only datagram version this package speaks.
const Version = 5

// Agent address types.
const (
	AddressIPv4 = 1
	AddressIPv6 = 2
)

// Sample types (enterprise 0, so the whole 32-bit type word equals the format).
const (
	SampleFlow             = 1
	SampleCounters         = 2
	SampleExpandedFlow     = 3
	SampleExpandedCounters = 4
)

// Record types used here (enterprise 0).
const (
	// RecordSampledHeader is flow record 1: the first bytes of the sampled packet.
	RecordSampledHeader = 1
	// RecordIfCounters is counter record 1: generic interface counters (RFC 2233).
	RecordIfCounters = 1
)

// Header protocols of a sampled header (sFlow's header_protocol enumeration).
const (
	HeaderEthernet = 1
	HeaderIPv4     = 11
	HeaderIPv6     = 12
)

// Interface values in flow samples.
const (
	// InterfaceInternal means the packet came from, or went to, the device itself.
	InterfaceInternal = 0x3FFFFFFF
	// InterfaceFormatIndex: the value is an ifIndex (format 0).
	InterfaceFormatIndex = 0
)

// Unknown is what sFlow counters carry when the agent does not know the value.
const Unknown32 = 0xFFFFFFFF

// Datagram is one decoded sFlow datagram. Slices alias the Decoder and the input bytes and are
// valid until the Decoder's next Decode.
type Datagram struct {
	AgentAddress   netip.Addr
	SubAgentID     uint32
	SequenceNumber uint32
	// Uptime of the agent in milliseconds.
	Uptime uint32
	// NumSamples is the sample count the datagram declares (all types, skipped ones too).
	NumSamples uint32

	FlowSamples    []FlowSample
	CounterSamples []CounterSample
	// SkippedSamples counts samples of types this package does not interpret, skipped by length.
	SkippedSamples int
}

// FlowSample is a flow sample (format 1) or an expanded flow sample (format 3); both are
// represented in the expanded form.
type FlowSample struct {
	Expanded       bool
	SequenceNumber uint32
	// SourceIDClass: 0 ifIndex, 1 smonVlanDataSource, 2 entPhysicalEntry.
	SourceIDClass uint32
	SourceIDIndex uint32
	// SamplingRate N: one packet in N was sampled.
	SamplingRate uint32
	// SamplePool is the total number of packets that could have been sampled.
	SamplePool uint32
	// Drops counts samples the agent lost for lack of resources.
	Drops uint32

	InputFormat, Input   uint32
	OutputFormat, Output uint32

	// NumRecords is the record count the sample declares.
	NumRecords uint32
	// Headers are the sample's sampled-header records.
	Headers []SampledHeader
	// SkippedRecords counts records of other types, skipped by length.
	SkippedRecords int
}

// SampledHeader is flow record 1.
type SampledHeader struct {
	// Protocol of the first header: HeaderEthernet, HeaderIPv4, HeaderIPv6, ...
	Protocol uint32
	// FrameLength is the packet's original length (including what was stripped).
	FrameLength uint32
	// Stripped is the number of bytes removed before the header was taken (e.g. a 4-byte FCS).
	Stripped uint32
	// Header holds the packet's first bytes.
	Header []byte
}

// CounterSample is a counters sample (format 2) or an expanded one (format 4).
type CounterSample struct {
	Expanded       bool
	SequenceNumber uint32
	SourceIDClass  uint32
	SourceIDIndex  uint32
	NumRecords     uint32
	// Interface holds the generic interface counters when HasInterface.
	Interface    IfCounters
	HasInterface bool
	// SkippedRecords counts other records (and further if_counters records), skipped by length.
	SkippedRecords int
}

// IfCounters is counter record 1, generic interface counters. Unknown values are Unknown32
// (or all ones for the 64-bit fields).
type IfCounters struct {
	Index     uint32
	Type      uint32 // IANAifType: 6 ethernetCsmacd, 24 softwareLoopback
	Speed     uint64 // bits per second
	Direction uint32 // 0 unknown, 1 full-duplex, 2 half-duplex, 3 in, 4 out
	// Status: bit 0 admin up, bit 1 operational up.
	Status uint32

	InOctets         uint64
	InUcastPkts      uint32
	InMulticastPkts  uint32
	InBroadcastPkts  uint32
	InDiscards       uint32
	InErrors         uint32
	InUnknownProtos  uint32
	OutOctets        uint64
	OutUcastPkts     uint32
	OutMulticastPkts uint32
	OutBroadcastPkts uint32
	OutDiscards      uint32
	OutErrors        uint32
	Promiscuous      uint32
}

// ifCountersLen is the XDR size of IfCounters.
const ifCountersLen = 88
