// Package firefly announces flows as scitags fireflies: a JSON document (firefly.schema.json,
// version 1, in dataplane/scitag/registry) behind an RFC 5424 syslog header, sent over UDP to
// port 10514 of collectors and, optionally, of the flow's peer — as flowd does.
package firefly

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"
)

// Port is the scitags convention for firefly receivers.
const Port = 10514

// Message is a firefly, field names as in the schema.
type Message struct {
	Version   int       `json:"version"`
	Lifecycle Lifecycle `json:"flow-lifecycle"`
	FlowID    FlowID    `json:"flow-id"`
	Context   Context   `json:"context"`
	Usage     *Usage    `json:"usage,omitempty"`
}

type Lifecycle struct {
	State       string `json:"state"` // start, ongoing, end
	StartTime   string `json:"start-time"`
	EndTime     string `json:"end-time,omitempty"`
	CurrentTime string `json:"current-time,omitempty"`
}

type FlowID struct {
	AFI      string `json:"afi"` // ipv4, ipv6
	SrcIP    string `json:"src-ip"`
	DstIP    string `json:"dst-ip"`
	Protocol string `json:"protocol"` // tcp, udp
	SrcPort  uint16 `json:"src-port"`
	DstPort  uint16 `json:"dst-port"`
}

type Context struct {
	ExperimentID int    `json:"experiment-id"`
	ActivityID   int    `json:"activity-id"`
	Application  string `json:"application,omitempty"`
}

type Usage struct {
	Received uint64 `json:"received"`
	Sent     uint64 `json:"sent"`
}

// Flow is what the sender needs to know about a connection.
type Flow struct {
	Src, Dst     netip.AddrPort
	Protocol     string // "tcp" or "udp"
	ExperimentID int
	ActivityID   int
	Start        time.Time
}

// queueSize bounds the announcements waiting to be sent; beyond it they are dropped.
const queueSize = 1024

// Sender sends fireflies from its own goroutine: announcing a flow costs the data path one
// JSON encoding and a channel send, never a name lookup or a blocked socket. When announcements
// pile up (an unreachable collector whose name takes long to resolve), they are dropped and
// counted rather than delaying connections.
type Sender struct {
	Collectors  []string // "host:port"
	ToPeer      bool
	Application string
	Log         *slog.Logger
	// OnDrop, when set, is called for each announcement dropped because the queue was full (on
	// the announcing goroutine, so it must be cheap: the proxy counts it in its metrics).
	OnDrop func()

	once     sync.Once
	hostname string
	queue    chan outgoing
	done     chan struct{}

	mu     sync.Mutex // guards closed against sends on the closed queue
	closed bool
}

type outgoing struct {
	line    []byte
	targets []string
}

func (s *Sender) init() {
	s.once.Do(func() {
		s.hostname, _ = os.Hostname()
		if s.hostname == "" {
			s.hostname = "-"
		}
		s.queue = make(chan outgoing, queueSize)
		s.done = make(chan struct{})
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			s.logger().Warn("fireflies disabled: no UDP socket", "err", err)
			s.closed = true
			close(s.done)
			return
		}
		go s.loop(c)
	})
}

func (s *Sender) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Start announces the beginning of a flow.
func (s *Sender) Start(f Flow) { s.send(f, "start", time.Time{}, nil) }

// End announces the end of a flow with its byte counts.
func (s *Sender) End(f Flow, end time.Time, sent, received uint64) {
	s.send(f, "end", end, &Usage{Sent: sent, Received: received})
}

func (s *Sender) send(f Flow, state string, end time.Time, usage *Usage) {
	if s == nil {
		return
	}
	s.init()
	msg := Build(f, state, end, time.Now(), usage, s.Application)
	line, err := Frame(msg, s.hostname, time.Now())
	if err != nil {
		s.logger().Warn("firefly not sent", "err", err)
		return
	}
	targets := append([]string(nil), s.Collectors...)
	if s.ToPeer {
		targets = append(targets, net.JoinHostPort(f.Dst.Addr().String(), strconv.Itoa(Port)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.queue <- outgoing{line: line, targets: targets}:
	default:
		if s.OnDrop != nil {
			s.OnDrop()
		}
	}
}

func (s *Sender) loop(conn *net.UDPConn) {
	defer close(s.done)
	defer conn.Close()
	for o := range s.queue {
		for _, t := range o.targets {
			addr, err := net.ResolveUDPAddr("udp", t)
			if err != nil {
				s.logger().Warn("firefly collector unresolvable", "collector", t, "err", err)
				continue
			}
			_ = conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := conn.WriteToUDP(o.line, addr); err != nil {
				s.logger().Debug("firefly not sent", "collector", t, "err", err)
			}
		}
	}
}

// Close sends what is queued (waiting at most a second) and releases the socket. Later
// announcements are ignored.
func (s *Sender) Close() {
	if s == nil {
		return
	}
	s.init()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(time.Second):
	}
}

// Build makes the JSON document for one lifecycle event.
func Build(f Flow, state string, end, now time.Time, usage *Usage, application string) Message {
	afi := "ipv6"
	if f.Src.Addr().Unmap().Is4() {
		afi = "ipv4"
	}
	m := Message{
		Version: 1,
		Lifecycle: Lifecycle{
			State:       state,
			StartTime:   stamp(f.Start),
			CurrentTime: stamp(now),
		},
		FlowID: FlowID{
			AFI: afi, Protocol: f.Protocol,
			SrcIP: f.Src.Addr().Unmap().String(), DstIP: f.Dst.Addr().Unmap().String(),
			SrcPort: f.Src.Port(), DstPort: f.Dst.Port(),
		},
		Context: Context{ExperimentID: f.ExperimentID, ActivityID: f.ActivityID, Application: application},
		Usage:   usage,
	}
	if state == "end" {
		m.Lifecycle.EndTime = stamp(end)
	}
	return m
}

// Frame renders the syslog line: "<134>1 TIMESTAMP HOST scitunnel - firefly-json - {json}".
// PRI 134 is local0.info; the reference collector drops messages without this header.
func Frame(m Message, hostname string, now time.Time) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "<134>1 %s %s scitunnel - firefly-json - %s", stamp(now), hostname, body), nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000+00:00") }
