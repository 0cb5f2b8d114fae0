package edge

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// A client's Connection header names headers that end at the node (RFC
// 9110 7.6.1). It cannot name away what the node and the route's
// transforms set for the backend: X-Perigee-Country, a transform's
// header. A header it names of its own is dropped, as a hop's.
func TestConnectionCannotStripWhatTheNodeSets(t *testing.T) {
	db := demoDB(t)
	seen := make(chan http.Header, 1)
	n := startNode(t, listenAny+`geo:
  database: "`+db+`"
  trusted_proxies: ["127.0.0.0/8"]
transforms:
  addheader: {module: "`+exampleModule(t, "addheader")+`", config: "X-Added: yes"}
services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api, transforms: [addheader]}
`)
	for _, nominated := range []string{"X-Perigee-Country", "x-added", "X-Client-Hop, X-Added", "keep-alive, X-Perigee-Country"} {
		c, err := tls.Dial("tcp", n.Addrs().HTTPS, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		// From a Frankfurt address, through a trusted proxy.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 85.214.0.1\r\nX-Client-Hop: 1\r\nConnection: %s\r\n\r\n", nominated)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("Connection: %s: %v %v", nominated, resp, err)
		}
		h := <-seen
		if got := h.Get("X-Perigee-Country"); got != "DE" {
			t.Errorf("Connection: %s: the backend got X-Perigee-Country %q, want DE", nominated, got)
		}
		if got := h.Get("X-Added"); got != "yes" {
			t.Errorf("Connection: %s: the backend got X-Added %q, want the transform's yes", nominated, got)
		}
		if got := h.Get("X-Client-Hop"); got != "" && nominated == "X-Client-Hop, X-Added" {
			t.Errorf("Connection: %s: the backend got the client's hop-by-hop X-Client-Hop", nominated)
		}
	}
}
