// Package scitag encodes scitags experiment/activity pairs into the 20-bit IPv6 flow label and
// back, and resolves names and ids against the scitags registry.
//
// Layout of the label (scitags technical specification, as implemented by flowd and sFlow-RT):
//
//	bit: 19 18 | 17 ............. 9 | 8 | 7 ......... 2 | 1 0
//	      e  e | rev9(experimentId)  | e | activityId     | e e
//
// The experiment id is bit-reversed so that small ids occupy high bits, the activity id is not.
// The five "e" bits carry per-flow entropy and are ignored by analyzers (see Mask).
package scitag

import (
	"errors"
	"fmt"
	"math/bits"
)

const (
	// Mask selects the meaningful bits of a label: label & Mask is the key analyzers map.
	Mask uint32 = 0x3FEFC // 261884
	// EntropyMask selects the five entropy bits (19, 18, 8, 1, 0).
	EntropyMask uint32 = 0xC0103
	// Bit19 must stay clear when net.ipv6.flowlabel_state_ranges=1: the kernel reserves labels
	// with it set for its own automatic labels and refuses them with ERANGE.
	Bit19 uint32 = 1 << 19

	MaxExperimentID = 511 // 9 bits
	MaxActivityID   = 63  // 6 bits
)

// Errors of Label and Registry.Resolve, for errors.Is; the messages say which id or name.
var (
	// ErrOutOfRange: an id the flow label cannot carry.
	ErrOutOfRange = errors.New("id out of the flow label's range")
	// ErrNotInRegistry: a name, or a name beside an id, that the registry does not list.
	ErrNotInRegistry = errors.New("not in the scitags registry")
)

// kindError is an error with its own message that matches one of the sentinel errors above.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

// Label returns the flow label for an experiment/activity pair with all entropy bits zero. Ids
// outside the label's range fail with ErrOutOfRange.
func Label(experimentID, activityID int) (uint32, error) {
	if experimentID < 0 || experimentID > MaxExperimentID {
		return 0, &kindError{ErrOutOfRange, fmt.Sprintf("experiment id %d out of range: the flow label holds 0..%d", experimentID, MaxExperimentID)}
	}
	if activityID < 0 || activityID > MaxActivityID {
		return 0, &kindError{ErrOutOfRange, fmt.Sprintf("activity id %d out of range: the flow label holds 0..%d", activityID, MaxActivityID)}
	}
	return reverse9(uint32(experimentID))<<9 | uint32(activityID)<<2, nil
}

// Split recovers the experiment and activity ids from a label, ignoring entropy bits.
func Split(label uint32) (experimentID, activityID int) {
	return int(reverse9((label >> 9) & 0x1FF)), int((label >> 2) & 0x3F)
}

// WithEntropy spreads the low bits of random over the five entropy positions of label. When
// allowBit19 is false, bit 19 is left clear (see Bit19).
func WithEntropy(label, random uint32, allowBit19 bool) uint32 {
	e := (random&0x3)<<0 | // bits 1,0
		(random>>2&0x1)<<8 | // bit 8
		(random>>3&0x3)<<18 // bits 19,18
	if !allowBit19 {
		e &^= Bit19
	}
	return label&Mask | e
}

// FormatLabel renders a label as sFlow-RT and tcpdump users read it.
func FormatLabel(label uint32) string { return fmt.Sprintf("0x%05x", label) }

func reverse9(v uint32) uint32 { return bits.Reverse32(v) >> (32 - 9) }
