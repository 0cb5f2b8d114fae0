package edge

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The node's own response headers share one allocation; adding to one
// must not write into the other.
func TestOwnHeadersDoNotShareAValue(t *testing.T) {
	n := &Node{listeners: &listeners{altSvc: `h3=":443"; ma=86400`}}
	r := &http.Request{TLS: &tls.ConnectionState{}, ProtoMajor: 2}
	h := http.Header{}
	n.setOwnHeaders(h, r, "id-1")
	h.Add("X-Request-Id", "id-2")
	if got := h.Values("Alt-Svc"); len(got) != 1 || got[0] != `h3=":443"; ma=86400` {
		t.Fatalf("Alt-Svc %q after adding a request id", got)
	}
	if got := h.Values("X-Request-Id"); len(got) != 2 || got[0] != "id-1" {
		t.Fatalf("X-Request-Id %q", got)
	}
	for _, r := range []*http.Request{{ProtoMajor: 1}, {TLS: &tls.ConnectionState{}, ProtoMajor: 3}} {
		h := http.Header{}
		n.setOwnHeaders(h, r, "id-3")
		if h.Get("Alt-Svc") != "" || h.Get("X-Request-Id") != "id-3" {
			t.Errorf("proto %d, TLS %v: %v", r.ProtoMajor, r.TLS != nil, h)
		}
	}
}

// deadlineWriter records the read deadlines a handler sets on its
// connection.
type deadlineWriter struct {
	http.ResponseWriter
	deadlines []time.Time
}

func (w *deadlineWriter) SetReadDeadline(t time.Time) error {
	w.deadlines = append(w.deadlines, t)
	return nil
}

// A transport may still be reading the request body on its own goroutine
// when the handler returns. By then the connection may serve the next
// request (HTTP/1.1), so a late read must not set its deadline.
func TestSlowBodySetsNoDeadlineAfterTheHandlerReturned(t *testing.T) {
	w := &deadlineWriter{ResponseWriter: httptest.NewRecorder()}
	b := &slowBody{ReadCloser: io.NopCloser(strings.NewReader("abc")), rc: *http.NewResponseController(w), idle: time.Second}
	var p [1]byte
	if _, err := b.Read(p[:]); err != nil || len(w.deadlines) != 1 {
		t.Fatalf("read while serving: %v, deadlines %v", err, w.deadlines)
	}
	b.finish()
	if n, err := b.Read(p[:]); n != 0 || err == nil {
		t.Errorf("read after the handler returned: %d, %v", n, err)
	}
	if len(w.deadlines) != 1 {
		t.Errorf("deadlines set after the handler returned: %v", w.deadlines[1:])
	}
}

// The node owns X-Request-Id and Alt-Svc on its answers. A backend's were
// added after the node's: clients saw two request ids, the first the
// node's, and a backend's Alt-Svc (its own port, another host, "clear")
// told clients where to reach the gateway's origin, past it, or stopped
// its HTTP/3 advertisement. Now the client sees the node's only, and over
// HTTP/3, where the node advertises nothing, no Alt-Svc at all.
func TestBackendCannotSetTheNodesOwnHeaders(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "backend-id")
		w.Header().Add("Alt-Svc", `h3="backend.example:443"; ma=86400`)
		w.Header().Add("Alt-Svc", "clear")
		io.WriteString(w, "ok")
	}))))
	for _, pc := range allClients(t) {
		resp, body := get(t, pc.client, "https://"+n.Addrs().HTTPS+"/")
		if body != "ok" {
			t.Fatalf("%s: %q", pc.name, body)
		}
		if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] == "backend-id" {
			t.Errorf("%s: X-Request-Id %q, want the node's only", pc.name, ids)
		}
		alt := resp.Header.Values("Alt-Svc")
		want := []string{n.listeners.altSvc}
		if resp.ProtoMajor == 3 {
			want = nil
		}
		if strings.Join(alt, "|") != strings.Join(want, "|") {
			t.Errorf("%s: Alt-Svc %q, want %q", pc.name, alt, want)
		}
	}
}
