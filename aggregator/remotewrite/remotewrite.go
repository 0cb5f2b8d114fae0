// Package remotewrite sends samples to a Prometheus remote-write endpoint
// (protocol 1.0): a protobuf WriteRequest, snappy block-compressed. The
// message is small enough to encode by hand with protowire.
package remotewrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/snappy"
	"google.golang.org/protobuf/encoding/protowire"
)

// Label is one name/value pair; __name__ holds the metric name.
type Label struct{ Name, Value string }

// Series is one time series with its samples.
type Series struct {
	Labels  []Label
	Samples []Sample
}

// Sample is one value at one time.
type Sample struct {
	Value float64
	Time  time.Time
}

// Encode builds the WriteRequest. Labels are sorted by name, as receivers
// require.
func Encode(series []Series) []byte {
	var req, ts, inner []byte
	for _, s := range series {
		labels := slices.Clone(s.Labels)
		slices.SortFunc(labels, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
		ts = ts[:0]
		for _, l := range labels {
			inner = protowire.AppendTag(inner[:0], 1, protowire.BytesType)
			inner = protowire.AppendString(inner, l.Name)
			inner = protowire.AppendTag(inner, 2, protowire.BytesType)
			inner = protowire.AppendString(inner, l.Value)
			ts = protowire.AppendTag(ts, 1, protowire.BytesType) // TimeSeries.labels
			ts = protowire.AppendBytes(ts, inner)
		}
		for _, smp := range s.Samples {
			inner = protowire.AppendTag(inner[:0], 1, protowire.Fixed64Type)
			inner = protowire.AppendFixed64(inner, math.Float64bits(smp.Value))
			inner = protowire.AppendTag(inner, 2, protowire.VarintType)
			inner = protowire.AppendVarint(inner, uint64(smp.Time.UnixMilli()))
			ts = protowire.AppendTag(ts, 2, protowire.BytesType) // TimeSeries.samples
			ts = protowire.AppendBytes(ts, inner)
		}
		req = protowire.AppendTag(req, 1, protowire.BytesType) // WriteRequest.timeseries
		req = protowire.AppendBytes(req, ts)
	}
	return req
}

// NewClient is the client to push with: it does not follow redirects,
// which would turn a push into a GET that a page may answer 200 (the
// samples acknowledged and written nowhere), or post them to whatever
// host the Location names. A redirect is a failed push that says where it
// pointed.
func NewClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Push posts an encoded WriteRequest with a client from NewClient. A 4xx answer other than 429 means the
// samples will never be accepted: the error wraps ErrRejected, and the
// caller drops them.
func Push(ctx context.Context, c *http.Client, url string, writeRequest []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, writeRequest)))
	if err != nil {
		return fmt.Errorf("remote write: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("remote write: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("remote write: %s: %s", resp.Status, bytes.TrimSpace(msg))
		if loc := resp.Header.Get("Location"); loc != "" {
			err = fmt.Errorf("remote write: %s to %.200q: redirects are not followed, set the URL it names", resp.Status, loc)
		}
		if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests {
			err = fmt.Errorf("%w: %w", ErrRejected, err)
		}
		return err
	}
	return nil
}

// ErrRejected marks an answer that retrying cannot change.
var ErrRejected = errors.New("remote write rejected")

// PushRetry is Push, retried after a network error, a 5xx or a 429 up to
// attempts times in all, waiting backoff and then twice as long each time.
// The bound keeps a slow receiver from piling pushes up: the caller pushes
// fresh values every interval anyway.
func PushRetry(ctx context.Context, c *http.Client, url string, writeRequest []byte, attempts int, backoff time.Duration) error {
	var err error
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(backoff):
			}
			backoff *= 2
		}
		if err = Push(ctx, c, url, writeRequest); err == nil || errors.Is(err, ErrRejected) {
			return err
		}
	}
	return err
}
