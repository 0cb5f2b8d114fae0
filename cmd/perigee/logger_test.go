package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// multi gathers errors as hashicorp/go-multierror does.
type multi []error

func (m multi) Error() string          { return "1 error occurred:\n\t* " + m[0].Error() + "\n\n" }
func (m multi) WrappedErrors() []error { return m }

func TestLogsAreReadable(t *testing.T) {
	var buf bytes.Buffer
	log, sink, err := newLogger("json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "deadline", 30*time.Second, "err", multi{errors.New("dial tcp: refused"), errors.New("timeout")})
	closeLog(sink)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["deadline"] != "30s" || rec["err"] != "dial tcp: refused; timeout" {
		t.Fatalf("got %v", rec)
	}
	if strings.Contains(buf.String(), "error occurred") {
		t.Fatalf("multierror framing in %s", buf.String())
	}
}
