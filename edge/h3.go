package edge

import (
	"crypto/tls"
	"net/http"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/edge/h1client"
	"perigee/h3serve"
)

// newH3Server serves the node's HTTP/3 with h3serve, which resets a stream
// whose headers have not arrived within readHeader, and hands a bodiless
// request whose stream ended with its headers on with no body.
func newH3Server(srv *http3.Server, tlsConf *tls.Config, readHeader time.Duration, opts ...h3serve.Option) *h3serve.Server {
	srv.Handler = noBodyWhenEnded(srv.Handler)
	return h3serve.New(srv, tlsConf, readHeader, opts...)
}

// noBodyWhenEnded gives next what HTTP/2's END_STREAM on HEADERS gives: no
// body. Only for the methods whose empty body an HTTP/1.1 backend receives
// as no body at all, so that what it receives does not depend on when the
// client's FIN arrived. The EOF is read, so that quic-go has no receive
// side left to cancel.
func noBodyWhenEnded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength < 0 && h1client.BodilessMethod(r.Method) && h3serve.EndedWithHeaders(r) {
			var eof [1]byte
			_, _ = r.Body.Read(eof[:])
			r.Body, r.ContentLength = http.NoBody, 0
		}
		next.ServeHTTP(w, r)
	})
}
