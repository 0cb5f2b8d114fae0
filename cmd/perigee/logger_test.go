package main

import (
	"bytes"
	"encoding/json"
	"errors"
	stdlog "log"
	"log/slog"
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

// What libraries write to Go's default loggers (the log package, and
// slog.Default where a part was given no logger) goes through the same
// sink: written straight to stderr it would block on a reader that
// stopped, as the node's own lines did.
func TestDefaultLoggersGoThroughTheSink(t *testing.T) {
	defer slog.SetDefault(slog.Default())
	var buf bytes.Buffer
	_, sink, err := newLogger("json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	stdlog.Print("from the log package")
	slog.Default().Warn("from slog.Default")
	closeLog(sink)
	for _, want := range []string{`"msg":"from the log package"`, `"msg":"from slog.Default"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the sink got no %s: %q", want, buf.String())
		}
	}
}
