package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/internal/pki"
)

// iperf3 runs one client through entry and returns the receiver's rate in Gbit/s.
func (b *bench) iperf3(entry string, streams int) (float64, error) {
	host, port, err := splitPort(entry)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Duration(b.seconds+30)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iperf3", "-6", "-c", host, "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(b.seconds), "-O", "1", "-P", strconv.Itoa(streams), "-J").Output()
	var report struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &report); jerr != nil {
		return 0, fmt.Errorf("iperf3: %v %v", err, jerr)
	}
	if report.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", report.Error)
	}
	return report.End.SumReceived.BitsPerSecond / 1e9, nil
}

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat. It is 100 on every Linux
// architecture Go supports (the kernel fixes it for the ABI), so no sysconf call is needed.
const clockTicks = 100

// processTreeCPU returns user+system CPU seconds of pid, its reaped children (cutime, cstime)
// and its live descendants (socat forks one child per connection).
func processTreeCPU(pid int) float64 {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, ok := statFields(p); ok {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], p)
		}
	}
	var ticks float64
	var walk func(p int)
	walk = func(p int) {
		f, ok := statFields(p)
		if !ok {
			return
		}
		// Fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
		for _, i := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseFloat(f[i], 64)
			ticks += v
		}
		for _, c := range children[p] {
			walk(c)
		}
	}
	walk(pid)
	return ticks / clockTicks
}

// statFields returns /proc/PID/stat's fields after the parenthesised command name.
func statFields(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	return f, len(f) > 14
}

// waitListening polls /proc/net/tcp6 for a listening socket on port, without connecting (a
// probe connection would reach iperf3's server as a bogus test).
func waitListening(port int, timeout time.Duration) error {
	want := fmt.Sprintf(":%04X", port)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, table := range []string{"/proc/net/tcp6", "/proc/net/tcp"} {
			f, err := os.Open(table)
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
					f.Close()
					return nil
				}
			}
			f.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("nothing listening")
}

func splitPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}

// echoServer answers the ping-pong: it writes back every message it reads.
type echoServer struct {
	ln   net.Listener
	addr string
}

func startEcho() (*echoServer, error) {
	ln, err := net.Listen("tcp6", loopbackAnyPort)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, pingSize)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return &echoServer{ln: ln, addr: ln.Addr().String()}, nil
}

func (e *echoServer) close() { e.ln.Close() }

const pingSize = 1024

// pingPong sends rounds 1 KiB messages through entry one at a time, each waiting for its echo,
// and returns the median and 99th percentile round-trip times.
func pingPong(ctx context.Context, entry string, rounds int) (p50, p99 time.Duration, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", entry)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Duration(rounds)*10*time.Millisecond + 10*time.Second))
	msg := make([]byte, pingSize)
	reply := make([]byte, pingSize)
	const warmup = 200
	rtts := make([]time.Duration, 0, rounds)
	for i := range rounds + warmup {
		msg[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return 0, 0, err
		}
		if reply[0] != msg[0] {
			return 0, 0, fmt.Errorf("round %d: echo out of order", i)
		}
		if i >= warmup {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], rtts[len(rtts)*99/100], nil
}

// certFiles are the PEM files the TLS paths use: one CA, a server certificate for the
// terminating ends (also as one bundle for haproxy) and a client certificate for ours.
type certFiles struct {
	ca, serverCert, serverKey, serverBundle, clientCert, clientKey string
}

const clientID = "spiffe://bench.local/client"

func makeCerts(dir string) (certFiles, error) {
	now := time.Now()
	ca, err := pki.NewCA("bench CA", now)
	if err != nil {
		return certFiles{}, err
	}
	server, err := ca.Issue(pki.LeafRequest{CommonName: "localhost", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv6loopback}, Server: true, Lifetime: 24 * time.Hour}, now)
	if err != nil {
		return certFiles{}, err
	}
	client, err := ca.Issue(pki.LeafRequest{CommonName: "client", URIs: []string{clientID}, Lifetime: 24 * time.Hour}, now)
	if err != nil {
		return certFiles{}, err
	}
	f := certFiles{
		ca: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "server.crt"), serverKey: filepath.Join(dir, "server.key"),
		serverBundle: filepath.Join(dir, "server.pem"), clientCert: filepath.Join(dir, "client.crt"), clientKey: filepath.Join(dir, "client.key"),
	}
	for path, data := range map[string][]byte{
		f.ca: ca.CertPEM, f.serverCert: server.CertPEM, f.serverKey: server.KeyPEM,
		f.serverBundle: append(append([]byte{}, server.CertPEM...), server.KeyPEM...),
		f.clientCert:   client.CertPEM, f.clientKey: client.KeyPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return certFiles{}, err
		}
	}
	return f, nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }
