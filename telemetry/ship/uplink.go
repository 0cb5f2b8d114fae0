package ship

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// IngestPath is where the aggregator accepts batches.
const IngestPath = "/v1/ingest"

// ContentType marks a request body as one wire frame.
const ContentType = "application/vnd.perigee.batch"

// attemptTimeout bounds one post; a batch is at most a few MiB.
const attemptTimeout = 15 * time.Second

// outcome is what the shipper does with a batch after one attempt.
type outcome int

const (
	acked     outcome = iota // stored or already stored: forget it
	refused                  // the aggregator will never take it: drop, count and log
	retryable                // try again later
)

// uplink posts frames to an aggregator over HTTPS, moving to HTTP/3 once
// the aggregator advertises it with Alt-Svc and back to TCP if QUIC fails
// (UDP is often filtered where TCP is not). Given several aggregators, it
// stays with one while it answers and moves to the next when an attempt
// fails.
type uplink struct {
	urls  []string
	cur   atomic.Int64 // index in urls of the aggregator in use
	token string
	tcp   *http.Client
	h3    *http.Client
	useH3 atomic.Bool
	proto atomic.Value // string: protocol of the last answered request
}

func newUplink(bases []string, token string, tlsConf *tls.Config) *uplink {
	tr := &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: true, IdleConnTimeout: time.Minute}
	// A vanished aggregator sends nothing back over UDP: short QUIC
	// timeouts notice it in seconds, not at the 30s default.
	quicConf := &quic.Config{HandshakeIdleTimeout: 3 * time.Second, MaxIdleTimeout: 10 * time.Second, KeepAlivePeriod: 3 * time.Second}
	u := &uplink{
		token: token,
		tcp:   &http.Client{Transport: tr, Timeout: attemptTimeout},
		h3:    &http.Client{Transport: &http3.Transport{TLSClientConfig: tlsConf.Clone(), QUICConfig: quicConf}, Timeout: attemptTimeout},
	}
	for _, b := range bases {
		u.urls = append(u.urls, strings.TrimRight(b, "/")+IngestPath)
	}
	u.proto.Store("")
	return u
}

func tlsConfig(caFile string, insecure bool) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // opt-in, for development only
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

// send makes one attempt. The error explains a refusal or a failure; after
// a failure the next attempt goes to the next aggregator, if there is one.
func (u *uplink) send(ctx context.Context, frame []byte) (outcome, error) {
	i := u.cur.Load()
	url := u.urls[i]
	out, err := u.sendTo(ctx, url, frame)
	if out == retryable && ctx.Err() == nil && len(u.urls) > 1 {
		// Its HTTP/3 advertisement was its own.
		u.useH3.Store(false)
		u.cur.CompareAndSwap(i, (i+1)%int64(len(u.urls)))
		err = fmt.Errorf("%s: %w; moving to the next aggregator", url, err)
	}
	return out, err
}

func (u *uplink) sendTo(ctx context.Context, url string, frame []byte) (outcome, error) {
	if u.useH3.Load() {
		out, err := u.post(ctx, u.h3, url, frame)
		if out != retryable || ctx.Err() != nil {
			return out, err
		}
		// QUIC did not get through: TCP for now, until the next Alt-Svc.
		u.useH3.Store(false)
	}
	return u.post(ctx, u.tcp, url, frame)
}

func (u *uplink) post(ctx context.Context, c *http.Client, url string, frame []byte) (outcome, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(frame))
	if err != nil {
		return refused, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("Authorization", "Bearer "+u.token)
	resp, err := c.Do(req)
	if err != nil {
		return retryable, fmt.Errorf("post batch: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	u.proto.Store(resp.Proto)
	if strings.Contains(resp.Header.Get("Alt-Svc"), "h3=") {
		u.useH3.Store(true)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return acked, nil
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		// The aggregator answers these about the batch itself (malformed,
		// corrupt, too large, older than retention): it will never take
		// these bytes, and resending them would hold up every later batch.
		return refused, fmt.Errorf("aggregator refused batch: %s: %s", resp.Status, bytes.TrimSpace(msg))
	default:
		// Anything else can change: a credential fixed, an aggregator
		// upgraded (unknown dictionary), a proxy or a busy aggregator out
		// of the way. Keep the batch.
		return retryable, fmt.Errorf("aggregator: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
}

func (u *uplink) close() {
	u.tcp.CloseIdleConnections()
	if t, ok := u.h3.Transport.(*http3.Transport); ok {
		_ = t.Close()
	}
}
