package edge

import (
	"crypto/tls"
	"net/http"
	"testing"
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
