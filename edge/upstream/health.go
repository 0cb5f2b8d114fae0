package upstream

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// checkLoop probes every backend each interval. A backend changes state
// after `rise` passes or `fall` failures in a row; the very first probe
// decides at once, so a dead backend is not served for fall×interval after
// start. A backend discovery adds is probed at once (checkNow) rather
// than at the next tick. Each backend's probe runs on its own, and one
// still running skips its turn: a backend that never answers holds no
// other's verdict.
func (s *Service) checkLoop(ctx context.Context, client *http.Client) {
	h := s.cfg.Health
	// A check is judged by its own answer (a 3xx passes): a redirect
	// followed would send the checker wherever a backend names.
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var (
		mu      sync.Mutex
		probing = map[*Backend]bool{}
		judged  = map[*Backend]bool{} // probed before: the first probe decides at once
		running sync.WaitGroup
	)
	defer running.Wait()
	t := time.NewTicker(h.Interval.D())
	defer t.Stop()
	for tick := true; ; {
		mu.Lock()
		current := make(map[*Backend]bool, len(judged))
		for _, b := range s.Backends() {
			current[b] = true
			if probing[b] || !tick && !b.unchecked.Load() {
				continue
			}
			probing[b] = true
			running.Add(1)
			go func() {
				defer running.Done()
				ok := probe(ctx, &c, b.URL.Scheme+"://"+b.Addr+h.Path, h.Timeout.D())
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				decisive := !judged[b]
				judged[b] = true
				delete(probing, b)
				mu.Unlock()
				s.record(b, ok, decisive)
			}()
		}
		for b := range judged {
			if !current[b] {
				delete(judged, b) // backends discovery took away are forgotten
			}
		}
		mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			tick = true
		case <-s.checkNow:
			tick = false // only the unchecked: the others keep their rhythm
		}
	}
}

func probe(ctx context.Context, client *http.Client, url string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "perigee-health")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func (s *Service) record(b *Backend, ok, decisive bool) {
	h := s.cfg.Health
	// An unchecked backend's first check decides alone, even if this loop
	// judged it before it went and came back.
	decisive = decisive || b.unchecked.Load()
	b.mu.Lock()
	if ok {
		b.passes, b.fails = b.passes+1, 0
	} else {
		b.passes, b.fails = 0, b.fails+1
	}
	up := b.checkUp.Load()
	flip := (up && !ok && (decisive || b.fails >= h.Fall)) || (!up && ok && (decisive || b.passes >= h.Rise))
	b.mu.Unlock()
	if flip {
		b.checkUp.Store(ok)
	}
	first := b.unchecked.Swap(false) // after checkUp: never healthy on a failed check
	if !flip && !first {
		return
	}
	s.log.Info("backend health changed", "backend", b.Addr, "healthy", ok)
	s.refresh()
}
