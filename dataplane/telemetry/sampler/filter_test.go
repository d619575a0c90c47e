package sampler

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

func TestFilter(t *testing.T) {
	raw, err := Filter(1000, 128, true)
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("does not disassemble")
	}
	want := []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 4},
		bpf.LoadExtension{Num: bpf.ExtRand},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: 1000},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 1},
		bpf.RetConstant{Val: 128},
		bpf.RetConstant{Val: 0},
	}
	if len(prog) != len(want) {
		t.Fatalf("program %v", prog)
	}
	for i := range want {
		if prog[i] != want[i] {
			t.Errorf("instruction %d: %#v, want %#v", i, prog[i], want[i])
		}
	}
	// 1-in-1 needs no random number; the VM (which knows no extensions) can run it.
	raw, _ = Filter(1, 64, false)
	vm, err := bpf.NewVM(mustDisassemble(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := vm.Run(make([]byte, 1500)); err != nil || n != 64 {
		t.Errorf("1-in-1 keeps %d bytes (%v), want 64", n, err)
	}
	if _, err := Filter(0, 128, false); err == nil {
		t.Error("rate 0 accepted")
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("does not disassemble")
	}
	return prog
}

func TestInsertVLAN(t *testing.T) {
	frame := []byte{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x86, 0xDD, 0x60, 0, 0, 0}
	got := insertVLAN(frame, 0x8100, 100, 20)
	want := []byte{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0, 100, 0x86, 0xDD, 0x60, 0}
	if string(got) != string(want) {
		t.Errorf("got %x, want %x", got, want)
	}
}

func TestHeaderProtocol(t *testing.T) {
	for _, c := range []struct {
		hatype, ethertype uint16
		want              uint32
	}{
		{unix.ARPHRD_ETHER, unix.ETH_P_IPV6, sflow.HeaderEthernet},
		{unix.ARPHRD_LOOPBACK, unix.ETH_P_IP, sflow.HeaderEthernet},
		{unix.ARPHRD_NONE, unix.ETH_P_IPV6, sflow.HeaderIPv6},
		{unix.ARPHRD_NONE, unix.ETH_P_IP, sflow.HeaderIPv4},
		{unix.ARPHRD_NONE, unix.ETH_P_ARP, 0},
	} {
		if got := headerProtocol(c.hatype, c.ethertype); got != c.want {
			t.Errorf("hatype %d ethertype %#x: %d, want %d", c.hatype, c.ethertype, got, c.want)
		}
	}
}

func TestInterfaceCounters(t *testing.T) {
	dir := t.TempDir()
	old := sysClassNet
	sysClassNet = dir
	defer func() { sysClassNet = old }()
	files := map[string]string{
		"statistics/rx_bytes": "1000000000000", "statistics/rx_packets": "1000", "statistics/multicast": "10",
		"statistics/rx_dropped": "1", "statistics/rx_errors": "2", "statistics/tx_bytes": "5000",
		"statistics/tx_packets": "50", "statistics/tx_dropped": "3", "statistics/tx_errors": "4",
		"type": "1", "speed": "10000", "duplex": "full", "flags": "0x1103", "operstate": "up",
	}
	for name, v := range files {
		p := filepath.Join(dir, "eth0", name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := interfaceCounters("eth0", 7)
	want := sflow.IfCounters{Index: 7, Type: 6, Speed: 10e9, Direction: 1, Status: 3,
		InOctets: 1e12, InUcastPkts: 990, InMulticastPkts: 10, InBroadcastPkts: sflow.Unknown32, InDiscards: 1, InErrors: 2,
		InUnknownProtos: sflow.Unknown32, OutOctets: 5000, OutUcastPkts: 50, OutMulticastPkts: sflow.Unknown32,
		OutBroadcastPkts: sflow.Unknown32, OutDiscards: 3, OutErrors: 4, Promiscuous: 1}
	if c != want {
		t.Errorf("counters\n%+v\nwant\n%+v", c, want)
	}
	if n := packetCount("eth0", false); n != 1050 {
		t.Errorf("pool count %d, want 1050", n)
	}
	if n := packetCount("eth0", true); n != 1000 {
		t.Errorf("loopback pool count %d, want rx only, 1000", n)
	}
}
