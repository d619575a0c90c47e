package main

import (
	"context"
	"fmt"
	"runtime/debug"
)

// version is set at link time by the Makefile and the image build (-X main.version=...).
var version = "dev"

func init() {
	register("version", "print the build version", func(context.Context, []string) int {
		rev := ""
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					rev = " " + s.Value
				}
			}
		}
		fmt.Printf("scitunnel %s%s\n", version, rev)
		return 0
	})
}
