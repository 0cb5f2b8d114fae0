package wasm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"perigee/units"
)

// A transport may read a request's body on a goroutine of its own (the
// HTTP/2 one, net/http's), and go on reading it after the backend
// answered and the handler returned: ReverseProxy's Close does not stop a
// Read already under way. Through a proxy-wasm filter with a body
// callback, that late Read must not touch the request's exchange or
// instance, by then another request's: it ends the body instead.
func TestProxyWasmBodyReadAfterTheLayerReturned(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Settings: Settings{ABI: ABIProxyWasm, Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	late := make(chan error, 1)
	early := NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Late") == "" {
			io.Copy(w, r.Body)
			return
		}
		// What the transport's body goroutine does: a Read begun while
		// the backend answers, which returns after the handler did.
		body := r.Body
		started := make(chan struct{})
		go func() {
			defer func() {
				if p := recover(); p != nil {
					late <- fmt.Errorf("late Read panicked: %v", p)
				}
			}()
			close(started)
			_, err := body.Read(make([]byte, 64))
			late <- err
		}()
		<-started
		io.WriteString(w, "answered early")
	}))

	src, feed := io.Pipe()
	req := httptest.NewRequest("POST", "/early", src)
	req.Header.Set("X-Late", "1")
	rec := httptest.NewRecorder()
	early.ServeHTTP(rec, req)
	if rec.Body.String() != "answered early" {
		t.Fatalf("first request: %d %q", rec.Code, rec.Body)
	}

	// Another request takes the pooled exchange and the only instance,
	// and its body is being read when the first one's late Read wakes.
	next, nextFeed := io.Pipe()
	req2 := httptest.NewRequest("POST", "/second", next)
	rec2 := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); early.ServeHTTP(rec2, req2) }()
	nextFeed.Write([]byte("second's "))
	feed.Write([]byte("first's late bytes"))
	if err := <-late; err == nil || strings.Contains(err.Error(), "panicked") {
		t.Errorf("a Read after the layer returned: %v, want the body ended", err)
	}
	nextFeed.Write([]byte("body"))
	nextFeed.Close()
	<-done
	if rec2.Code != 200 || rec2.Body.String() != "second's body" {
		t.Errorf("second request: %d %q, want its own body back", rec2.Code, rec2.Body)
	}
}

// An interim 1xx head (103 Early Hints) from the rest of the chain goes to
// the client at once, through a transform that holds the response and
// through a proxy-wasm filter, and the response's own head follows with
// its own status and headers. Both writers took the 103 for the
// response's head: the client got the final headers on a 103, then a 200.
func TestInterimHeadsPassTransforms(t *testing.T) {
	h := newTestHost(t)
	hold := loadT(t, h, Spec{Name: "hold", Wasm: wat(t, `(module
  (import "http_handler" "enable_features" (func $enable (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64) (drop (call $enable (i32.const 2))) (i64.const 1))
  (func (export "handle_response") (param i32 i32)))`)})
	pw := loadProxyTest(t, h, ABIProxyWasm)
	hinted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		delete(w.Header(), "Link")
		w.Header().Set("X-Final", "yes")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "final")
	})
	for _, c := range []struct {
		name  string
		chain *Chain
	}{{"buffered http-wasm", NewChain(hold)}, {"proxy-wasm", NewChain(pw)}} {
		name, chain := c.name, c.chain
		var hints []textproto.MIMEHeader
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h)
			return nil
		}})
		req, _ := http.NewRequestWithContext(ctx, "GET", serve(t, chain.Then(hinted)), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Final") != "yes" || string(body) != "final" {
			t.Errorf("%s: %d, X-Final %q, %q; want the 404 with its headers", name, resp.StatusCode, resp.Header.Get("X-Final"), body)
		}
		if len(hints) != 1 || hints[0].Get("Link") == "" || hints[0].Get("X-Final") != "" {
			t.Errorf("%s: interim heads %v, want one with the Link only", name, hints)
		}
	}
}
