// Command pingpong measures the round-trip time of small messages over TCP: the latency a
// tunnel adds to request/response traffic, which a throughput benchmark cannot show.
//
//	pingpong -serve [::1]:7000               echo server
//	pingpong -connect [::1]:7000 -n 20000    prints "median_us p99_us"
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"
)

func main() {
	serve := flag.String("serve", "", "run the echo server on this address")
	connect := flag.String("connect", "", "measure against this address")
	n := flag.Int("n", 20000, "round trips")
	size := flag.Int("size", 1024, "message size in bytes")
	flag.Parse()
	switch {
	case *serve != "":
		ln, err := net.Listen("tcp", *serve)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	case *connect != "":
		c, err := net.Dial("tcp", *connect)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		msg := make([]byte, *size)
		buf := make([]byte, *size)
		rtts := make([]time.Duration, 0, *n)
		for i := 0; i < *n+100; i++ {
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if i >= 100 { // warm-up rounds are not counted
				rtts = append(rtts, time.Since(start))
			}
		}
		slices.Sort(rtts)
		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
		fmt.Printf("%.1f %.1f\n", us(rtts[len(rtts)/2]), us(rtts[len(rtts)*99/100]))
	default:
		flag.Usage()
		os.Exit(2)
	}
}
