package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/edge/samplebackend"
	"perigee/units"
)

// gostackCmd, as the first argument, makes this binary the gostack
// target instead of the harness: the Go stack perigee's listeners are built
// on, answering the sample backend's handler itself. It is the ceiling for
// perigee on each protocol: what net/http's HTTPS server (HTTP/1.1 and
// HTTP/2) and quic-go's http3.Server cost per request before any proxying.
const gostackCmd = "gostack-serve"

// gostackArgv is the command line that runs the gostack target on addr.
func gostackArgv(o options, addr, cert, key string) ([]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("gostack: find this binary: %w", err)
	}
	return []string{self, gostackCmd, "-listen", addr, "-cert", cert, "-key", key, "-size", strconv.Itoa(o.size)}, nil
}

// gostackVersion names what the gostack target runs, for the report's head.
func gostackVersion() string {
	quicGo := "quic-go (version unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/quic-go/quic-go" {
				quicGo = "quic-go " + m.Version
			}
		}
	}
	return fmt.Sprintf("net/http (%s) and %s http3.Server", runtime.Version(), quicGo)
}

// serveGostack serves HTTPS on TCP (ALPN h2, http/1.1, as perigee's HTTPS
// listener) and HTTP/3 on UDP at the same address, both with the sample
// backend's handler, until the process is stopped. Nothing is logged.
func serveGostack(args []string) error {
	fs := flag.NewFlagSet(gostackCmd, flag.ContinueOnError)
	addr := fs.String("listen", "", "host:port, on TCP and UDP")
	certFile := fs.String("cert", "", "certificate PEM")
	keyFile := fs.String("key", "", "key PEM")
	size := fs.Int("size", 64, "response body bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("gostack: %w", err)
	}
	tlsConf := func(protos ...string) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: protos}
	}
	h := samplebackend.Handler(samplebackend.Options{Name: "bench", Size: units.ByteSize(*size)})

	tcp, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("gostack: %w", err)
	}
	udp, err := net.ListenPacket("udp", *addr)
	if err != nil {
		return fmt.Errorf("gostack: %w", err)
	}
	https := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf("h2", "http/1.1"),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	h3 := &http3.Server{
		Handler:    h,
		TLSConfig:  tlsConf(), // http3 adds ALPN h3
		QUICConfig: &quic.Config{Allow0RTT: false},
	}
	errc := make(chan error, 2)
	go func() { errc <- https.ServeTLS(tcp, "", "") }()
	go func() { errc <- h3.Serve(udp) }()
	return fmt.Errorf("gostack: a listener stopped: %w", <-errc)
}
