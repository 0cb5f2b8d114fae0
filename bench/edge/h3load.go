package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/telemetry"
)

// h3load is the HTTP/3 counterpart of h2load -c -m: conns QUIC connections,
// each with streams requests in flight at all times, for dur. Requests cut
// short by the end of the run are not counted.
func h3load(ctx context.Context, url string, conns, streams int, dur time.Duration) (result, error) {
	transports := make([]*http3.Transport, conns)
	for i := range transports {
		// One transport holds one QUIC connection per host, so conns
		// transports make conns connections.
		transports[i] = &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		defer transports[i].Close()
		// Connect before the clock starts: handshakes are not what we measure.
		if err := h3get(ctx, transports[i], url); err != nil {
			return result{}, fmt.Errorf("h3load connect: %w", err)
		}
	}

	var (
		hist     telemetry.Histogram
		ok, bad  atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	runCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	start := time.Now()
	for _, tr := range transports {
		for range streams {
			wg.Go(func() {
				for runCtx.Err() == nil {
					t0 := time.Now()
					err := h3get(runCtx, tr, url)
					switch {
					case runCtx.Err() != nil:
						// cut short by the end of the run
					case err != nil:
						bad.Add(1)
						errOnce.Do(func() { firstErr = err })
					default:
						hist.Observe(time.Since(t0))
						ok.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}
	if ok.Load() == 0 {
		return result{}, fmt.Errorf("h3load: no request succeeded: %w", firstErr)
	}
	snap := hist.Snapshot()
	return result{
		rps:    float64(ok.Load()) / elapsed.Seconds(),
		p50:    snap.Quantile(0.50),
		p99:    snap.Quantile(0.99),
		errors: bad.Load(),
	}, nil
}

// h3get does one GET and reads the whole answer; anything but 200 is an
// error.
func h3get(ctx context.Context, tr *http3.Transport, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
