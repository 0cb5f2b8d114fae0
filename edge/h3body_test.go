package edge

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go/http3"

	"perigee/certs"
)

// quic-go gives every HTTP/3 request a body, since a stream's end is known
// only by reading it. A GET whose stream ended with its HEADERS frame is
// handed on with none, as HTTP/2's END_STREAM on HEADERS gives: it needs no
// body protections, and h1client writes it itself. A request whose body is
// still to come keeps it, whole; a POST keeps even an empty one, whose
// framing upstream must not depend on when its FIN arrived.
func TestHTTP3RequestsEndedWithTheirHeadersHaveNoBody(t *testing.T) {
	var noBody atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == http.NoBody {
			noBody.Add(1)
		}
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %q %v", r.Method, b, err)
	})
	cert, err := certs.SelfSigned(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newH3Server(&http3.Server{Handler: h}, http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{*cert}}), 0)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(udp)
	t.Cleanup(func() { s.Close() })
	url := "https://" + udp.LocalAddr().String() + "/"
	c := h3Client(t)

	do := func(method string, body io.Reader) string {
		req, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// The client writes HEADERS and FIN in two calls, which usually leave
	// in one packet; one GET in twenty is plenty.
	for range 20 {
		if got := do("GET", nil); got != `GET "" <nil>` {
			t.Fatalf("GET: %s", got)
		}
	}
	if noBody.Load() == 0 {
		t.Fatal("no GET of twenty that ended with its HEADERS was handed on without a body")
	}
	noBody.Store(0)
	for range 20 {
		if got := do("POST", strings.NewReader("abc")); got != `POST "abc" <nil>` {
			t.Fatalf("POST with a body: %s", got)
		}
		if got := do("POST", http.NoBody); got != `POST "" <nil>` {
			t.Fatalf("POST with no body: %s", got)
		}
	}
	if noBody.Load() != 0 {
		t.Fatalf("%d POSTs were handed on without their body", noBody.Load())
	}
}
