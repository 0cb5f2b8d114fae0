package guestconfig

import (
	"strings"
	"testing"
)

type config struct {
	Keys   []string `json:"keys"`
	Header string   `json:"header"`
	Nested struct {
		Mode string `json:"mode"`
	} `json:"nested"`
}

// A config whose members say two things is refused: encoding/json matches
// names without regard to case and keeps the last of a repeated member,
// so {"keys":["a"],"Keys":[]} read as no keys, whatever the operator saw
// first.
func TestAConfigThatSaysTwoThingsIsRefused(t *testing.T) {
	for raw, want := range map[string]string{
		`{"keys":["a"],"keys":[]}`:                   `member "keys" given twice`,
		`{"keys":["a"],"Keys":[]}`:                   `member "Keys" given twice`,
		`{"header":"x","HEADER":"y"}`:                `member "HEADER" given twice`,
		"{\"keys\":[\"a\"],\"\u212aeys\":[]}":        `given twice`, // KELVIN SIGN folds to k
		`{"nested":{"mode":"a","Mode":"b"}}`:         `member "Mode" given twice`,
		`{"keys":["a"]} {"keys":[]}`:                 "data after the config's JSON value",
		`{"kes":["a"]}`:                              `unknown field "kes"`,
		`{"keys":["a"],"nested":{"mode":"a"},"x":1}`: `unknown field "x"`,
	} {
		var c config
		if err := Decode([]byte(raw), &c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", raw, err, want)
		}
	}
	var c config
	// Members of different objects may share a name.
	if err := Decode([]byte(`{"keys":["a","a"],"header":"h","nested":{"mode":"m"}}`), &c); err != nil || c.Header != "h" || c.Nested.Mode != "m" {
		t.Fatalf("%+v, %v", c, err)
	}
	if err := Decode([]byte("  \n"), &c); err != nil {
		t.Fatalf("an empty config: %v", err)
	}
}

// A header name from a config is a token (RFC 9110 5.1), or the default.
func TestHeaderName(t *testing.T) {
	for given, want := range map[string]string{"": "x-def", "X-Key": "X-Key", "x_key!#$%&'*+.^`|~0": "x_key!#$%&'*+.^`|~0"} {
		if got, err := HeaderName("header", given, "x-def"); got != want || err != nil {
			t.Errorf("%q: %q, %v; want %q", given, got, err, want)
		}
	}
	for _, bad := range []string{"x key", ":authority", "x-key:", "x\r\nevil", "x\x00", "ключ", "x\"y", "(x)"} {
		if _, err := HeaderName("header", bad, "x-def"); err == nil || !strings.Contains(err.Error(), "header: ") {
			t.Errorf("%q: accepted (%v)", bad, err)
		}
	}
}
