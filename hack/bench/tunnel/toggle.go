package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/test/onoff"
)

// toggleResult is what samplerToggle measured at one stream count.
type toggleResult struct {
	streams int
	onoff.Result
	sidecarCPU float64 // CPU seconds the sidecar used while on, its start-ups left out
	pairCPU    float64 // CPU seconds the tunnel pair used over the whole run
}

// samplerToggle measures what the sFlow sidecar costs the TLS pair's throughput: one iperf3 run
// of total length through the pair while the sidecar is started and stopped every phase
// (package onoff says why separate runs cannot measure it here).
func (b *bench) samplerToggle(total, phase time.Duration, streams int) (toggleResult, error) {
	res := toggleResult{streams: streams}
	tls, _ := pathByName("scitunnel-tls")
	pair, err := b.start(tls, b.iperf, "toggle-"+strconv.Itoa(streams))
	if err != nil {
		return res, err
	}
	defer pair.stop()
	cpu0 := pair.cpu()

	ctx, cancel := context.WithTimeout(b.ctx, total+30*time.Second)
	defer cancel()
	host, port, _ := splitPort(pair.entry)
	args := append([]string{"-6", "-c", host, "-p", strconv.Itoa(port), "-P", strconv.Itoa(streams)}, onoff.IperfArgs(total)...)
	iperf := exec.CommandContext(ctx, "iperf3", args...)

	var sidecar *exec.Cmd
	on := func() error {
		var err error
		if sidecar, err = b.startSidecar("toggle"); err != nil {
			if sidecar != nil {
				_ = sidecar.Process.Kill()
				_ = sidecar.Wait()
			}
			return err
		}
		res.sidecarCPU -= processTreeCPU(sidecar.Process.Pid) // its start-up is not what it costs while on
		return nil
	}
	off := func() error {
		res.sidecarCPU += processTreeCPU(sidecar.Process.Pid)
		_ = sidecar.Process.Signal(os.Interrupt)
		_ = sidecar.Wait()
		return nil
	}
	res.Result, err = onoff.Measure(ctx, iperf, total, phase, on, off)
	if sidecar != nil && sidecar.ProcessState == nil {
		_ = off() // the run failed while the sidecar was on
	}
	res.pairCPU = pair.cpu() - cpu0
	return res, err
}

func printToggle(results []toggleResult, total, phase time.Duration, sidecarArgs []string) {
	if len(results) == 0 {
		return
	}
	fmt.Println()
	sampler := "sampler 1-in-1000 on lo"
	if len(sidecarArgs) > 0 {
		sampler += ", then " + strings.Join(sidecarArgs, " ")
	}
	fmt.Printf("sampler toggled every %s within one %s iperf3 run through the TLS pair (%s):\n", phase, total, sampler)
	fmt.Printf("%3s %6s %8s %14s %8s %12s %10s %10s %22s\n", "P", "pairs", "on/off", "95% interval", "median", "phase range", "on Gbit/s", "off Gbit/s", "sidecar CPU x pair's")
	for _, r := range results {
		share := "-"
		if r.pairCPU > 0 && r.OnShare > 0 {
			share = fmt.Sprintf("%.2f%%", 100*r.sidecarCPU/(r.pairCPU*r.OnShare))
		}
		fmt.Printf("%3d %6d %7.3fx %6.3f..%6.3f %7.3fx %5.2f..%5.2f %10.2f %10.2f %22s\n", r.streams, r.Pairs, r.Mean, r.CILo, r.CIHi,
			r.Median, r.Lo, r.Hi, r.OnGbps, r.OffGbps, share)
	}
}
