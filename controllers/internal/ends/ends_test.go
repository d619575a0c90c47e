package ends

import (
	"testing"
)

func TestFormatPorts(t *testing.T) {
	for _, c := range []struct {
		ports []int
		want  string
	}{
		{nil, ""}, {[]int{5100}, "5100"}, {[]int{5100, 5101, 5102}, "5100-5102"}, {[]int{5100, 6000}, "5100,6000"},
		{[]int{5101, 5100}, "5101,5100"},
	} {
		if got := FormatPorts(c.ports); got != c.want {
			t.Errorf("FormatPorts(%v) = %q, want %q", c.ports, got, c.want)
		}
	}
	if got := JoinHostPorts("2001:db8::1", []int{5100, 5101}); got != "[2001:db8::1]:5100-5101" {
		t.Errorf("joinHostPorts IPv6 = %q", got)
	}
}
