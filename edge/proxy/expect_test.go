package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The node answers a client's Expect: 100-continue itself (when it starts
// reading the body) and does not pass it on: relaying the backend's 100
// as well gave a client two of them whenever the backend's came after the
// transport's one-second wait, and the backend gets the body at once.
func TestExpectContinueIsAnsweredByTheNodeAlone(t *testing.T) {
	var expect, body string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		expect = r.Header.Get("Expect")
		b, _ := io.ReadAll(r.Body)
		body = string(b)
	}))
	t.Cleanup(backend.Close)
	_, front := h2Front(t, "http1", nil, backend.URL, Stream{})

	conn, err := tls.Dial("tcp", strings.TrimPrefix(front, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("first answer %q (%v), want 100 Continue", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // the empty line ending the 100
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "hello"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || body != "hello" || expect != "" {
		t.Fatalf("final %d; backend read %q with Expect %q; want 200, \"hello\", no Expect", resp.StatusCode, body, expect)
	}
}
