package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary act as the pause program when re-executed by a test.
func TestMain(m *testing.M) {
	if os.Getenv("PAUSE_TEST_RUN_MAIN") == "1" {
		if os.Getenv("PAUSE_TEST_ORPHANS") == "1" {
			// Stand in for PID 1: orphans of our descendants are reparented to us. Then leave
			// a direct child (sh, never waited for by Go) and an orphan (sleep) to reap.
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				os.Exit(4)
			}
			if err := exec.Command("sh", "-c", "sleep 0.5 &").Start(); err != nil {
				os.Exit(5)
			}
		}
		main()
		os.Exit(3) // main only returns if the signal channel closed: not expected
	}
	os.Exit(m.Run())
}

// caught reports whether pid has a handler installed for sig (SigCgt in /proc/PID/status).
func caught(t *testing.T, pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

func TestSleepsUntilSIGTERMThenExitsZero(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PAUSE_TEST_RUN_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Signal only once the handler is installed, else SIGTERM's default action would kill it.
	deadline := time.Now().Add(10 * time.Second)
	for !caught(t, cmd.Process.Pid, syscall.SIGTERM) {
		if time.Now().After(deadline) {
			t.Fatal("pause never installed its SIGTERM handler")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("pause exited without a signal: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// A SIGCHLD (no child to reap) must not end it.
	if err := cmd.Process.Signal(syscall.SIGCHLD); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("pause exited on SIGCHLD: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pause exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("pause ignored SIGTERM")
	}
}

// children lists pid's children as pid -> state letter (R, S, Z...), from /proc/*/stat.
func children(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		cpid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out[cpid] = f[0]
		}
	}
	return out
}

func TestReapsChildrenAndOrphans(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PAUSE_TEST_RUN_MAIN=1", "PAUSE_TEST_ORPHANS=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("pause exited with %v, want status 0", err)
		}
	}()
	pid := cmd.Process.Pid

	// First the orphaned sleep must show up as our child (else the test proves nothing), then
	// every child must be gone: exited and reaped, not a zombie.
	sawOrphan := false
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids := children(t, pid)
		if len(kids) > 0 {
			sawOrphan = true
		}
		if sawOrphan && len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("children of pause after 10 s: %v (pid: state; Z = unreaped zombie); saw any: %v", kids, sawOrphan)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
