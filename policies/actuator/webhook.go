package actuator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// WebhookSpec describes an HTTP endpoint that scales.
type WebhookSpec struct {
	URL     string
	Secret  string        // HMAC-SHA256 key for the X-Perigee-Signature header
	Timeout time.Duration // of one Scale including retries; default 30s
	// Attempts and Backoff shape retries: the wait starts at Backoff and
	// doubles. Defaults 5 and 200ms.
	Attempts int
	Backoff  time.Duration
}

// WebhookBody is the JSON a webhook receives.
type WebhookBody struct {
	Service  string    `json:"service"`
	Replicas int       `json:"replicas"`
	Reason   string    `json:"reason"`
	Term     uint64    `json:"term"` // the leadership term; also in TermHeader
	Time     time.Time `json:"time"`
}

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body;
// TermHeader the leadership term of the decision, which a receiver should
// never see decrease: it may refuse a write under a lower term than one it
// has accepted.
const (
	SignatureHeader = "X-Perigee-Signature"
	TermHeader      = "X-Perigee-Term"
)

// Sign returns the signature header value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Webhook POSTs each scale as signed JSON and retries failures that may
// pass on a second try (network errors, 429 and 5xx).
type Webhook struct {
	service  string
	spec     WebhookSpec
	client   *http.Client
	log      *slog.Logger
	replicas atomic.Int64
}

// NewWebhook checks the spec.
func NewWebhook(service string, spec WebhookSpec, log *slog.Logger) (*Webhook, error) {
	u, err := url.Parse(spec.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook actuator %s: url %q must be http(s)://host/...", service, spec.URL)
	}
	if spec.Secret == "" {
		return nil, fmt.Errorf("webhook actuator %s: a secret is required to sign requests", service)
	}
	if spec.Timeout == 0 {
		spec.Timeout = 30 * time.Second
	}
	if spec.Attempts <= 0 {
		spec.Attempts = 5
	}
	if spec.Backoff <= 0 {
		spec.Backoff = 200 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Webhook{service: service, spec: spec, client: &http.Client{Timeout: 10 * time.Second, CheckRedirect: noRedirects},
		log: log.With("service", service, "actuator", "webhook")}, nil
}

// Scale sends the request, retrying with backoff while the term is held.
func (w *Webhook) Scale(ctx context.Context, r Request) error {
	ctx, cancel := context.WithTimeout(ctx, w.spec.Timeout)
	defer cancel()
	body, err := json.Marshal(WebhookBody{Service: w.service, Replicas: r.Replicas, Reason: r.Reason, Term: r.Term, Time: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("webhook actuator %s: %w", w.service, err)
	}
	sig := Sign([]byte(w.spec.Secret), body)
	wait := w.spec.Backoff
	var last error
	for attempt := 1; attempt <= w.spec.Attempts; attempt++ {
		if attempt > 1 && !r.held() {
			return fmt.Errorf("webhook actuator %s: term %d: %w (last: %v)", w.service, r.Term, ErrDeposed, last)
		}
		retry, err := w.post(ctx, body, sig, r.Term)
		if err == nil {
			w.replicas.Store(int64(r.Replicas))
			w.log.Info("scaled", "replicas", r.Replicas, "reason", r.Reason, "term", r.Term, "attempt", attempt)
			return nil
		}
		last = err
		if !retry || attempt == w.spec.Attempts {
			break
		}
		w.log.Warn("webhook failed; retrying", "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("webhook actuator %s: %w (last: %v)", w.service, ctx.Err(), last)
		case <-time.After(wait):
		}
		wait *= 2
	}
	return fmt.Errorf("webhook actuator %s: %w", w.service, last)
}

// post sends once and says whether a failure is worth retrying.
func (w *Webhook) post(ctx context.Context, body []byte, sig string, term uint64) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.spec.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, sig)
	req.Header.Set(TermHeader, strconv.FormatUint(term, 10))
	resp, err := w.client.Do(req)
	if err != nil {
		return ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, answerInError))
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	retry := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return retry, fmt.Errorf("status %s: %s", strconv.Itoa(resp.StatusCode), bytes.TrimSpace(msg))
}

// noRedirects makes a redirect the answer: a scale write is for the
// endpoint configured, and following one would re-send a signed body or a
// token elsewhere, or (after a 302) count a GET there as the write.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Replicas is the count last accepted by the endpoint.
func (w *Webhook) Replicas() int { return int(w.replicas.Load()) }

// Close has nothing to release.
func (w *Webhook) Close(context.Context) error { return nil }
