package aggregator_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"perigee/h2test"
	"perigee/h3serve/h3test"
	"perigee/memtest"
)

// The aggregator's requests carry a token and a few fields, yet its
// listeners took net/http's and quic-go's default of 1 MiB of header a
// request; over HTTP/3 quic-go reads each of a connection's 100 streams'
// header blocks into memory, so that one connection whose streams sent
// 900 KB of a 1 MB HEADERS frame, and never the rest, grew the heap by
// 108 MiB, held until the header deadline. A request's headers are now at
// most 32 KiB: such a frame is refused when its length arrives (7 MiB).
func TestAggregatorBoundsHeaders(t *testing.T) {
	a := startAggregator(t, nil)
	// In many fields: HTTP/2 refuses one field past the bound with a
	// connection error, and a whole list past about twice it too.
	var fields []string
	for i := range 40 { // 40 KiB
		fields = append(fields, fmt.Sprintf("x-big-%d", i), strings.Repeat("a", 1<<10))
	}
	// net/http's HTTP/2 client refuses such a request itself once it has
	// the server's SETTINGS: HTTP/2 gets a raw client.
	h1 := &http.Transport{TLSClientConfig: a.client.Transport.(*http.Transport).TLSClientConfig.Clone(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer h1.CloseIdleConnections()
	h3 := &http3.Transport{TLSClientConfig: h1.TLSClientConfig.Clone()}
	defer h3.Close()
	for name, rt := range map[string]http.RoundTripper{"HTTP/1.1": h1, "HTTP/3": h3} {
		req, _ := http.NewRequest(http.MethodGet, a.url("/metrics"), nil)
		for i := 0; i < len(fields); i += 2 {
			req.Header.Set(fields[i], fields[i+1])
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%s: 40 KiB of headers: %s, want 431", name, resp.Status)
		}
	}
	c := h2test.Dial(t, a.addr)
	hb := c.Block("x", "/metrics", fields...)
	const frame = 16 << 10 // the largest a client may send before the server's SETTINGS
	err := c.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb[:frame], EndStream: true})
	for rest := hb[frame:]; err == nil && len(rest) > 0; rest = rest[min(frame, len(rest)):] {
		err = c.WriteContinuation(1, len(rest) <= frame, rest[:min(frame, len(rest))])
	}
	if err != nil {
		t.Fatal(err)
	}
	var status string
	if err := c.ReadUntil(30*time.Second, func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok {
			status = h.PseudoValue("status")
		}
		return ok
	}); err != nil || status != "431" {
		t.Fatalf("HTTP/2: 40 KiB of headers: status %q, %v; want 431", status, err)
	}

	conn, err := h3test.Dial(h3test.Client(t, "127.0.0.1"), a.addr, http3.NextProtoH3, &quic.Config{KeepAlivePeriod: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	const streams, sent = 90, 900_000
	block := make([]byte, sent) // one for all, outside the measure
	grew := memtest.PeakGrowthDuring(func() {
		for range streams {
			str, err := conn.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			str.Write([]byte{0x01, 0x80, 0x0f, 0x42, 0x40}) // HEADERS of 1,000,000 bytes
			str.SetWriteDeadline(time.Now().Add(5 * time.Second))
			str.Write(block) // and not the rest; refused or not
		}
	})
	t.Logf("%d streams each sending %d KB of a header block: heap peak +%d KiB", streams, sent/1000, grew>>10)
	if grew > 16<<20 {
		t.Fatalf("the heap grew %d MiB while one connection's streams sent %d MB of unfinished header blocks", grew>>20, streams*sent/1_000_000)
	}
}
