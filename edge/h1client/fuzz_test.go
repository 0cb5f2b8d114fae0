package h1client

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzResponse feeds what a backend might send to the exchange and the
// body reader, whole and a byte at a time. Neither may panic, both must
// agree, and a connection may go back to the pool only after a response
// whose end its framing fixed (a length or the last chunk) and when every
// byte sent was part of it: anything else would be read as the next
// request's answer. Seeds: testdata/fuzz/FuzzResponse.
func FuzzResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		whole := exchangeOver(t, data, head, len(data)+1)
		byByte := exchangeOver(t, data, head, 1)
		if whole.summary() != byByte.summary() {
			t.Fatalf("outcome depends on how the bytes arrive:\nwhole:   %s\nbyte by byte: %s", whole.summary(), byByte.summary())
		}
		if !byByte.reusable {
			return
		}
		resp := byByte.resp
		switch {
		case resp.Close:
			t.Fatal("pooled after a response that asked to close")
		case head || resp.StatusCode == 204 || resp.StatusCode == 304:
		case resp.TransferEncoding == nil && resp.ContentLength != int64(len(byByte.body)):
			t.Fatalf("pooled after a body of %d bytes, with Content-Length %d", len(byByte.body), resp.ContentLength)
		}
	})
}

type outcome struct {
	err      error
	resp     *http.Response
	body     []byte
	bodyErr  error
	reusable bool // pooled, with every byte sent consumed
}

func (o outcome) summary() string {
	if o.err != nil {
		return "error"
	}
	s := o.resp.Status + " body " + string(o.body)
	if o.bodyErr != nil {
		s += " body error"
	}
	if o.reusable {
		s += " reusable"
	}
	return s
}

// exchangeOver runs one GET (or HEAD) on a connection that answers with
// data, chunk bytes per read.
func exchangeOver(t *testing.T, data []byte, head bool, chunk int) outcome {
	tr := New(Options{MaxResponseHeaderBytes: 4 << 10}, nil)
	p := tr.pool("backend:80")
	nc := &scripted{data: data, chunk: chunk}
	c := newConn(nc, p)
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	req, _ := http.NewRequest(method, "http://backend/", nil)
	resp, _, err := tr.exchange(context.Background(), c, req, Timeouts{})
	if err != nil {
		return outcome{err: err}
	}
	body, bodyErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	pooled := p.pop() != nil
	return outcome{resp: resp, body: body, bodyErr: bodyErr, reusable: pooled && nc.off == len(data)}
}

// scripted is a connection whose peer sends data, at most chunk bytes a
// read, then EOF; what is written to it goes nowhere.
type scripted struct {
	data  []byte
	off   int
	chunk int
}

func (s *scripted) Read(p []byte) (int, error) {
	if s.off == len(s.data) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), s.chunk)], s.data[s.off:])
	s.off += n
	return n, nil
}

func (s *scripted) Write(p []byte) (int, error)      { return len(p), nil }
func (s *scripted) Close() error                     { return nil }
func (s *scripted) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *scripted) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *scripted) SetDeadline(time.Time) error      { return nil }
func (s *scripted) SetReadDeadline(time.Time) error  { return nil }
func (s *scripted) SetWriteDeadline(time.Time) error { return nil }

// TestFraming pins the answers to the inputs that confuse framing.
func TestFraming(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		want        string // outcome summary
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "200 OK body ok reusable"},
		{"chunked with a trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", "200 OK body ok reusable"},
		{"both TE and CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "error"},
		{"both, CL after TE, other case", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n2\r\nok\r\n0\r\n\r\n", "error"},
		{"CL in an interim head only", "HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "200 OK body ok reusable"},
		{"CL folded into another field", "HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "200 OK body ok reusable"},
		{"conflicting CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "error"},
		{"repeated equal CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "200 OK body ok reusable"},
		{"signed CL", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "error"},
		{"TE other than chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "error"},
		{"TE on HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok", "error"},
		{"TE on HTTP/1.0 without CL", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nok", "200 OK body ok"},
		{"bare LF in the head", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "200 OK body ok reusable"},
		{"bare LF in a chunk line", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", "200 OK body  body error"},
		{"huge chunk-size line", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + string(bytes.Repeat([]byte("0"), 5000)) + "2\r\nok\r\n0\r\n\r\n", "200 OK body  body error"},
		{"chunk size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nok\r\n0\r\n\r\n", "200 OK body  body error"},
		{"no length: until close", "HTTP/1.1 200 OK\r\n\r\nok", "200 OK body ok"},
		{"bytes after the response", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", "200 OK body ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{1, len(tc.reply) + 1} {
				if got := exchangeOver(t, []byte(tc.reply), false, chunk).summary(); got != tc.want {
					t.Errorf("read %d bytes at a time: %q, want %q", chunk, got, tc.want)
				}
			}
		})
	}
}
