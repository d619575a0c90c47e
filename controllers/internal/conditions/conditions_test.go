package conditions

import "testing"

func TestConditionReasonGuard(t *testing.T) {
	for reason, ok := range map[string]bool{"Marked": true, "IPv4Path": true, "": false, "bad reason": false, "1st": false} {
		if Reason.MatchString(reason) != ok {
			t.Errorf("%q: want valid=%v", reason, ok)
		}
	}
}
