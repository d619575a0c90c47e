package sampler

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Filter assembles the classic BPF program that samples inside the kernel, before a packet is
// ever copied to user space (as host-sflow does): keep one packet in rate, at random, truncated
// to snaplen bytes. With skipOutgoing it first drops packets the host sends, for loopback, where
// every packet passes twice (once out, once in) and would otherwise count double.
//
//	[ld pkttype; jeq #PACKET_OUTGOING, drop]
//	ld rand; mod #rate; jneq #0, drop   (rate > 1)
//	ret #snaplen
//	drop: ret #0
func Filter(rate, snaplen uint32, skipOutgoing bool) ([]bpf.RawInstruction, error) {
	if rate == 0 {
		return nil, fmt.Errorf("sampling rate must be at least 1")
	}
	var prog []bpf.Instruction
	// Jumps are relative, so they are filled in once the program's length is known.
	var toDrop []int
	if skipOutgoing {
		prog = append(prog,
			bpf.LoadExtension{Num: bpf.ExtType},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING})
		toDrop = append(toDrop, len(prog)-1)
	}
	if rate > 1 {
		prog = append(prog,
			bpf.LoadExtension{Num: bpf.ExtRand},
			bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: rate},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0})
		toDrop = append(toDrop, len(prog)-1)
	}
	prog = append(prog, bpf.RetConstant{Val: snaplen}, bpf.RetConstant{Val: 0})
	drop := len(prog) - 1
	for _, i := range toDrop {
		j := prog[i].(bpf.JumpIf)
		j.SkipTrue = uint8(drop - i - 1)
		prog[i] = j
	}
	return bpf.Assemble(prog)
}
