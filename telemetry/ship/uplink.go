package ship

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/files"
)

// IngestPath is where the aggregator accepts batches.
const IngestPath = "/v1/ingest"

// ContentType marks a request body as one wire frame.
const ContentType = "application/vnd.perigee.batch"

// attemptTimeout bounds one post; a batch is at most a few MiB.
const attemptTimeout = 15 * time.Second

// TimeHeader carries the aggregator's clock on every answer to IngestPath,
// in unix milliseconds: a node learns its own clock's offset from it.
const TimeHeader = "Perigee-Time"

// offsetTolerance is how far a measured offset may move from the one in
// use before it replaces it: below it is the noise of the round trip, and
// a steady offset keeps batch times from jittering with it.
const offsetTolerance = time.Second

// probeTimeout bounds the request that learns the offset at start.
const probeTimeout = 3 * time.Second

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
	clock func() time.Time
	// offset is the node clock minus the aggregator's, in nanoseconds,
	// once an answer has carried TimeHeader (offsetKnown).
	offset      atomic.Int64
	offsetKnown atomic.Bool
}

func newUplink(bases []string, token string, tlsConf *tls.Config, clock func() time.Time) *uplink {
	tr := &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: true, IdleConnTimeout: time.Minute}
	// A vanished aggregator sends nothing back over UDP: short QUIC
	// timeouts notice it in seconds, not at the 30s default.
	quicConf := &quic.Config{HandshakeIdleTimeout: 3 * time.Second, MaxIdleTimeout: 10 * time.Second, KeepAlivePeriod: 3 * time.Second}
	u := &uplink{
		token: token, clock: clock,
		tcp: &http.Client{Transport: tr, Timeout: attemptTimeout, CheckRedirect: noRedirects},
		h3: &http.Client{Transport: &http3.Transport{TLSClientConfig: tlsConf.Clone(), QUICConfig: quicConf}, Timeout: attemptTimeout,
			CheckRedirect: noRedirects},
	}
	for _, b := range bases {
		u.urls = append(u.urls, strings.TrimRight(b, "/")+IngestPath)
	}
	u.proto.Store("")
	return u
}

// noRedirects has a redirect answered like any other answer that is no
// acknowledgement. Followed, it took the batch anywhere, plain http
// included, with the token too when the host name was the same (Go's
// client keeps Authorization across ports and schemes), and whatever
// acknowledged it there had the batch deleted.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func tlsConfig(caFile string, insecure bool) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // opt-in, for development only
	if caFile == "" {
		return conf, nil
	}
	pem, err := files.Read(caFile, 1<<20)
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
// A retryable answer may say when to try again (its Retry-After, not yet
// capped): zero when it did not, or when the next attempt goes to another
// aggregator, about which it said nothing.
func (u *uplink) send(ctx context.Context, frame []byte) (outcome, time.Duration, error) {
	i := u.cur.Load()
	url := u.urls[i]
	out, after, err := u.sendTo(ctx, url, frame)
	if out == retryable && ctx.Err() == nil && len(u.urls) > 1 {
		// Its HTTP/3 advertisement was its own.
		u.useH3.Store(false)
		u.cur.CompareAndSwap(i, (i+1)%int64(len(u.urls)))
		after, err = 0, fmt.Errorf("%s: %w; moving to the next aggregator", url, err)
	}
	return out, after, err
}

func (u *uplink) sendTo(ctx context.Context, url string, frame []byte) (outcome, time.Duration, error) {
	if u.useH3.Load() {
		out, resp, err := u.post(ctx, u.h3, url, frame)
		if resp != nil || out != retryable || ctx.Err() != nil {
			return out, u.waitAsked(out, resp), err
		}
		// QUIC did not get through: TCP for now, until the next Alt-Svc.
		u.useH3.Store(false)
	}
	out, resp, err := u.post(ctx, u.tcp, url, frame)
	return out, u.waitAsked(out, resp), err
}

// waitAsked is how long a retryable answer asks to wait before the next
// attempt; zero for any other outcome, or no answer.
func (u *uplink) waitAsked(out outcome, resp *http.Response) time.Duration {
	if out != retryable || resp == nil {
		return 0
	}
	return retryAfter(resp.Header, u.clock())
}

// retryAfter is the wait an answer's Retry-After asks for (RFC 9110,
// 10.2.3): delta-seconds, or an HTTP-date taken against the answer's
// Date (the node's clock, now, when it has none), which a node whose
// clock is off still reads right. Zero when there is none or it is
// garbage. The value is the sender's: the caller caps it.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > math.MaxInt64/uint64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(secs) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	return max(at.Sub(now), 0)
}

// post posts frame and says what came of it, with the answer when there
// was one (its body read and closed).
func (u *uplink) post(ctx context.Context, c *http.Client, url string, frame []byte) (outcome, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(frame))
	if err != nil {
		return refused, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("Authorization", "Bearer "+u.token)
	resp, err := u.do(c, req)
	if err != nil {
		return retryable, nil, fmt.Errorf("post batch: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	u.proto.Store(resp.Proto)
	if strings.Contains(resp.Header.Get("Alt-Svc"), "h3=") {
		u.useH3.Store(true)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if !acknowledges(msg) {
			// Something else answered in the aggregator's place (a proxy's
			// fixed answer, another server): the batch is stored nowhere.
			return retryable, resp, fmt.Errorf("200 without the aggregator's acknowledgement: %.80q", bytes.TrimSpace(msg))
		}
		return acked, resp, nil
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		if resp.Header.Get(TimeHeader) == "" {
			// Not the aggregator's (each of its answers carries its
			// clock): a proxy's own refusal, its body limit say, says
			// nothing of what the aggregator would take.
			return retryable, resp, fmt.Errorf("%s not from the aggregator: %.80q", resp.Status, bytes.TrimSpace(msg))
		}
		// The aggregator answers these about the batch itself (malformed,
		// corrupt, too large, older than retention): it will never take
		// these bytes, and resending them would hold up every later batch.
		return refused, resp, fmt.Errorf("aggregator refused batch: %s: %s", resp.Status, bytes.TrimSpace(msg))
	default:
		// Anything else can change: a credential fixed, an aggregator
		// upgraded (unknown dictionary), a proxy or a busy aggregator out
		// of the way. Keep the batch.
		return retryable, resp, fmt.Errorf("aggregator: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
}

// acknowledges reports whether an answer's body is the aggregator's
// acknowledgement of a batch: {"status":"stored"}, or "duplicate" for one
// it had stored already (aggregator.handleIngest).
func acknowledges(body []byte) bool {
	var ack struct{ Status string }
	return json.Unmarshal(body, &ack) == nil && (ack.Status == "stored" || ack.Status == "duplicate")
}

// do sends req and learns the clock offset from the answer: the
// aggregator's time against the middle of the round trip on the node's
// clock.
func (u *uplink) do(c *http.Client, req *http.Request) (*http.Response, error) {
	sent := u.clock()
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	ms, perr := strconv.ParseInt(resp.Header.Get(TimeHeader), 10, 64)
	if perr != nil || ms <= 0 {
		return resp, nil // an older aggregator, or a proxy's answer
	}
	received := u.clock()
	measured := sent.Add(received.Sub(sent) / 2).Sub(time.UnixMilli(ms))
	if cur := time.Duration(u.offset.Load()); !u.offsetKnown.Load() || (measured-cur).Abs() > offsetTolerance {
		u.offset.Store(int64(measured.Round(time.Millisecond)))
		u.offsetKnown.Store(true)
	}
	return resp, nil
}

// clockOffset is how far the node's clock is ahead of the aggregator's,
// zero until an answer has said.
func (u *uplink) clockOffset() time.Duration { return time.Duration(u.offset.Load()) }

// probe asks the aggregator in use for its time, so that the first batch
// of a run is already corrected; any answer carries it.
func (u *uplink) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.urls[u.cur.Load()], nil)
	if err != nil {
		return
	}
	if resp, err := u.do(u.tcp, req); err == nil {
		resp.Body.Close()
	}
}

func (u *uplink) close() {
	u.tcp.CloseIdleConnections()
	if t, ok := u.h3.Transport.(*http3.Transport); ok {
		_ = t.Close()
	}
}
