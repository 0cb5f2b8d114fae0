package lograte

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Within a window the burst goes out and the rest is counted; the first
// line of the next window carries that count, once.
func TestBurstThenCountedUntilTheNextWindow(t *testing.T) {
	l := New(3, time.Second)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if ok, attrs := l.Allow(t0.Add(time.Duration(i) * time.Millisecond)); !ok || attrs != nil {
			t.Fatalf("line %d of the burst: ok %v, attrs %v", i, ok, attrs)
		}
	}
	for i := range 5 {
		if ok, _ := l.Allow(t0.Add(500 * time.Millisecond)); ok {
			t.Fatalf("line %d past the burst went out", i)
		}
	}
	if ok, attrs := l.Allow(t0.Add(time.Second)); !ok || !slices.Equal(attrs, []any{"dropped_before", 5}) {
		t.Fatalf("the next window's first line: ok %v, attrs %v; want true, dropped_before 5", ok, attrs)
	}
	if ok, attrs := l.Allow(t0.Add(time.Second + time.Millisecond)); !ok || attrs != nil {
		t.Fatalf("the count went out twice: ok %v, attrs %v", ok, attrs)
	}
}

// However many goroutines log at once, no more than the burst goes out in
// a window and every line is either let through or counted.
func TestConcurrentLinesAreAllAccountedFor(t *testing.T) {
	l := New(10, time.Hour)
	now := time.Now()
	var mu sync.Mutex
	let := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if ok, _ := l.Allow(now); ok {
					mu.Lock()
					let++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if let != 10 {
		t.Fatalf("%d lines let through in one window, want 10", let)
	}
	if _, attrs := l.Allow(now.Add(time.Hour)); !slices.Equal(attrs, []any{"dropped_before", 8000 - 10}) {
		t.Fatalf("%v counted, want dropped_before %d", attrs, 8000-10)
	}
}
