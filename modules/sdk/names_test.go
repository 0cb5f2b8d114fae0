package sdk

import "testing"

func TestValidHeaderName(t *testing.T) {
	for _, ok := range []string{"x-key", "X_Key", "!#$%&'*+-.^_`|~09az"} {
		if !ValidHeaderName(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "x key", ":authority", "x:", "x\r\n", "x\x00", "x\x7f", "ключ", `x"y`, "(x)", "a/b", "a@b", "{x}"} {
		if ValidHeaderName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
