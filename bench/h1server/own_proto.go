package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
)

// serveOwn serves h with a bare HTTP/1.1 loop over http.ReadRequest (GETs
// of small responses only: the body is buffered and sent with its length),
// to weigh a server loop of our own against net/http's. With watch, a
// goroutine per request reads ahead to notice the client leaving (what
// net/http's background read is for) and, when the next request arrives,
// serves it itself, so no goroutine waits for another.
func serveOwn(cfg *tls.Config, h http.Handler, watch bool) string {
	ln := listen()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s := &sconn{c: tls.Server(c, cfg.Clone()), h: h, watch: watch}
			s.br = bufio.NewReader(s.c)
			s.bw = bufio.NewWriter(s.c)
			go s.serve()
		}
	}()
	return ln.Addr().String()
}

type sconn struct {
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	h     http.Handler
	watch bool
}

// ownW buffers a response so the loop can send it with Content-Length.
type ownW struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *ownW) Header() http.Header { return w.h }
func (w *ownW) WriteHeader(c int) {
	if w.status == 0 {
		w.status = c
	}
}
func (w *ownW) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return w.body.Write(b)
}

func (s *sconn) serve() {
	for {
		req, err := http.ReadRequest(s.br)
		if err != nil {
			s.c.Close()
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		req = req.WithContext(ctx)
		req.RemoteAddr = s.c.RemoteAddr().String()
		var done chan struct{}
		if s.watch {
			done = make(chan struct{})
			go s.watcher(cancel, done)
		}
		w := &ownW{h: make(http.Header)}
		s.h.ServeHTTP(w, req)
		if w.status == 0 {
			w.status = 200
		}
		s.bw.WriteString("HTTP/1.1 ")
		s.bw.WriteString(strconv.Itoa(w.status))
		s.bw.WriteString(" ")
		s.bw.WriteString(http.StatusText(w.status))
		s.bw.WriteString("\r\n")
		w.h.Del("Content-Length")
		w.h.Write(s.bw)
		s.bw.WriteString("Content-Length: ")
		s.bw.WriteString(strconv.Itoa(w.body.Len()))
		s.bw.WriteString("\r\n\r\n")
		s.bw.Write(w.body.Bytes())
		s.bw.Flush()
		cancel()
		if s.watch {
			close(done)
			return
		}
	}
}

func (s *sconn) watcher(cancel func(), done chan struct{}) {
	_, err := s.br.Peek(1)
	if err != nil {
		cancel()
	}
	<-done
	if err != nil {
		s.c.Close()
		return
	}
	s.serve()
}

func (w *ownW) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = 200
	}
	return w.body.ReadFrom(r)
}
