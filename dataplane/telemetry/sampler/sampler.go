// Package sampler is the sidecar's sFlow v5 agent: it samples the pod's interfaces 1-in-N inside
// the kernel (classic BPF random sampling on AF_PACKET sockets, read in batches from TPACKET_V3
// rings), keeps the first bytes of each sampled packet, weights it by the packet's full original
// length (so offload super-frames count for what they carry), and sends standard sFlow datagrams
// (flow samples with sampled headers, and interface counter samples every polling interval) to
// the local analyzer and to any external collectors, over IPv4 or IPv6. It needs CAP_NET_RAW.
package sampler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Sampler.
type Config struct {
	// Interfaces to sample; empty means every interface that is up, except loopback.
	Interfaces []string
	// SamplingRate N samples 1 in N packets.
	SamplingRate uint32
	// HeaderBytes kept of each sampled packet. Default 128 (256 with TransportHeadersOnly).
	HeaderBytes uint32
	// TransportHeadersOnly cuts each sampled header where the payload begins, after the
	// transport header (sflow.HeadersLength): collectors still get addresses, ports and the
	// flow label, and no byte of the data an unencrypted leg carries.
	TransportHeadersOnly bool
	// PollingInterval between interface counter samples. Default 20s.
	PollingInterval time.Duration
	// FlushInterval bounds how long a sample waits for its datagram to fill. Default 1s.
	FlushInterval time.Duration
	// Collectors receive the datagrams ("host:port"; names are re-resolved every minute).
	Collectors []string
	// AgentAddress identifies this agent in datagrams; default: the first global address of
	// the sampled interfaces (IPv4 first), else 0.0.0.0.
	AgentAddress netip.Addr
	SubAgentID   uint32
	Log          *slog.Logger
}

// Sampler is a running agent. Stats may be read concurrently.
type Sampler struct {
	cfg     Config
	log     *slog.Logger
	sockets []*socket
	sources []*dataSource
	start   time.Time

	samples   chan sample
	datagrams atomic.Uint64
	sendErrs  atomic.Uint64
}

// dataSource is one interface as an sFlow data source.
type dataSource struct {
	sock    *socket
	pool0   uint64 // packet count at start: the pool counts from there
	flowSeq atomic.Uint32
	ctrSeq  uint32
	sampled atomic.Uint64
	drops   atomic.Uint32 // cumulative kernel drops

	// The reader's last read of the interface's packet count, since pool0 (see stampPools).
	readCount   uint64
	lastDropLog time.Time

	poolCurrent uint64 // the last pool the exporter reported: it never goes back
}

type sample struct {
	src *dataSource
	pkt packet
}

// Stats is what the sampler has done so far.
type Stats struct {
	SamplingRate  uint32
	Interfaces    []InterfaceStats
	DatagramsSent uint64
	SendErrors    uint64
}

// InterfaceStats is one interface's share.
type InterfaceStats struct {
	Name    string
	Samples uint64
	// KernelDrops counts sampled packets the kernel dropped because the receive ring was full.
	KernelDrops uint32
}

// New opens a sampling socket on every configured interface. It fails with an error wrapping
// ErrNoNetRaw when the process lacks CAP_NET_RAW.
func New(cfg Config) (*Sampler, error) {
	if cfg.SamplingRate == 0 {
		return nil, errors.New("sampler: sampling rate must be at least 1")
	}
	if cfg.HeaderBytes == 0 {
		cfg.HeaderBytes = 128
		if cfg.TransportHeadersOnly {
			cfg.HeaderBytes = 256 // room for IPv6 extension headers and TCP options
		}
	}
	if cfg.PollingInterval <= 0 {
		cfg.PollingInterval = 20 * time.Second
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ifaces, err := interfaces(cfg.Interfaces)
	if err != nil {
		return nil, err
	}
	s := &Sampler{cfg: cfg, log: cfg.Log, start: time.Now(), samples: make(chan sample, 4096)}
	for _, ifi := range ifaces {
		sock, err := openSocket(ifi, cfg.SamplingRate, cfg.HeaderBytes)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.sockets = append(s.sockets, sock)
		s.sources = append(s.sources, &dataSource{sock: sock, pool0: packetCount(ifi.Name, sock.loopback)})
	}
	if !s.cfg.AgentAddress.IsValid() {
		s.cfg.AgentAddress = agentAddress(ifaces)
	}
	return s, nil
}

// interfaces resolves the configured names, or lists every up, non-loopback interface.
func interfaces(names []string) ([]net.Interface, error) {
	if len(names) > 0 {
		var out []net.Interface
		for _, n := range names {
			ifi, err := net.InterfaceByName(n)
			if err != nil {
				return nil, fmt.Errorf("sampler: interface %q: %w", n, err)
			}
			out = append(out, *ifi)
		}
		return out, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagLoopback == 0 {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("sampler: no interface to sample (none is up besides loopback)")
	}
	return out, nil
}

func agentAddress(ifaces []net.Interface) netip.Addr {
	var v6 netip.Addr
	for _, ifi := range ifaces {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || !p.Addr().IsGlobalUnicast() {
				continue
			}
			if p.Addr().Is4() {
				return p.Addr()
			}
			if !v6.IsValid() {
				v6 = p.Addr()
			}
		}
	}
	if v6.IsValid() {
		return v6
	}
	return netip.IPv4Unspecified()
}

// AgentAddress is the address the datagrams carry.
func (s *Sampler) AgentAddress() netip.Addr { return s.cfg.AgentAddress }

// Close releases the sockets (Run does so when it returns).
func (s *Sampler) Close() {
	for _, sock := range s.sockets {
		sock.Close()
	}
}

// Stats returns the counts so far.
func (s *Sampler) Stats() Stats {
	st := Stats{SamplingRate: s.cfg.SamplingRate, DatagramsSent: s.datagrams.Load(), SendErrors: s.sendErrs.Load()}
	for _, src := range s.sources {
		st.Interfaces = append(st.Interfaces, InterfaceStats{Name: src.sock.iface.Name, Samples: src.sampled.Load(), KernelDrops: src.drops.Load()})
	}
	return st
}

// Run samples until ctx is done, then sends what was sampled before that and closes the sockets.
func (s *Sampler) Run(ctx context.Context) error {
	defer s.Close()
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return fmt.Errorf("sampler: UDP socket: %w", err)
	}
	defer conn.Close()
	var readers sync.WaitGroup
	for _, src := range s.sources {
		readers.Add(1)
		go func() {
			defer readers.Done()
			s.readLoop(ctx, src)
		}()
	}
	// Stopping, the readers take what the rings hold, so nothing sampled is lost.
	context.AfterFunc(ctx, func() {
		for _, sock := range s.sockets {
			if err := sock.detach(); err != nil {
				s.log.Warn("sampler: could not detach from the interface; waiting for the kernel to hand over its last samples",
					"interface", sock.iface.Name, "err", err)
				sock.stopAfter(3 * ringTimeout)
			}
		}
	})
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	s.export(readersDone, conn)
	return nil
}

// readLoop hands src's sampled packets, their pools stamped, to the exporter until the socket
// stops serving.
func (s *Sampler) readLoop(ctx context.Context, src *dataSource) {
	err := src.sock.serve(func(batch []packet) {
		s.stampPools(src, batch)
		for _, p := range batch {
			if p.protocol != 0 { // else not a link type sFlow can describe
				s.samples <- sample{src, p}
			}
		}
	})
	if ctx.Err() == nil { // else Run stopped it on its way out
		s.log.Error("sampler: read failed; this interface is no longer sampled", "interface", src.sock.iface.Name, "err", err)
	}
}

// stampPools reads what the kernel counts for src once per block handed over, and fills in each
// sample's pool and drops. The pool is the packets the interface passed since the sampler
// started, from the kernel's interface counters: PACKET_STATISTICS cannot give it, since the
// socket only ever sees, and counts, the packets the filter kept.
//
// A block holds up to a ring timeout of samples, all taken before this read: counting on from
// the last read, each sample stands for the sampling rate's worth of packets (the filter keeps
// one in rate at random, spread over packets, not time; hsflowd estimates so when the kernel
// gives no count), and no sample's pool passes what the interface has counted by now. The
// estimate is off by at most the packets sampled between a block's hand-over and its read, and
// every read sets it right. (Kernel timestamps would place samples between reads, but a packet
// may carry TCP's monotonic departure time instead of the wall clock.) The counters count skbs
// on veth and loopback, as the tap does; a NIC that counts TSO segments makes the pool larger.
func (s *Sampler) stampPools(src *dataSource, batch []packet) {
	count := max(packetCount(src.sock.iface.Name, src.sock.loopback)-src.pool0, src.readCount)
	for i := range batch {
		batch[i].pool = min(src.readCount+uint64(i+1)*uint64(s.cfg.SamplingRate), count)
	}
	src.readCount = count

	if d, err := src.sock.drops(); err == nil && d > 0 {
		total := src.drops.Add(d)
		// At most one warning a minute: drops come in bursts under load.
		if t := time.Now(); t.Sub(src.lastDropLog) > time.Minute {
			src.lastDropLog = t
			s.log.Warn("sampler: the kernel dropped samples (ring full); the analyzer compensates from the drops field",
				"interface", src.sock.iface.Name, "total", total)
		}
	}
	drops := src.drops.Load()
	for i := range batch {
		batch[i].drops = drops
	}
}
