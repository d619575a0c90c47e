// Command pause is the local cluster's pod sandbox process (what registry.k8s.io/pause is
// elsewhere; we cannot pull images). It holds the pod's namespaces open by sleeping, and as
// PID 1 of a pod that shares its process namespace it reaps orphaned children so they do not
// linger as zombies. SIGTERM or SIGINT ends it with status 0.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// One SIGCHLD can stand for several exits: reap until none is left.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
