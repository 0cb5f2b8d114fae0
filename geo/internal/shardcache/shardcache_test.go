package shardcache

import (
	"sync"
	"testing"
)

func TestCacheStaysBoundedAndKeepsRecentPut(t *testing.T) {
	c := New[int, int](64)
	for i := range 10000 {
		c.Put(i, i*2)
		if v, ok := c.Get(i); !ok || v != i*2 {
			t.Fatalf("just-put %d: %d %v", i, v, ok)
		}
	}
	if n := c.Len(); n > 64 || n < 32 {
		t.Fatalf("len %d outside bound", n)
	}
	seen := 0
	c.Range(func(k, v int) bool {
		if v != k*2 {
			t.Errorf("%d -> %d", k, v)
		}
		seen++
		return seen < 5
	})
	if seen != 5 {
		t.Errorf("range did not stop: %d", seen)
	}
}

func TestUpdateIsAtomicUnderConcurrency(t *testing.T) {
	c := New[string, int](1024)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Update("k", func(old int, _ bool) int { return old + 1 })
			}
		}()
	}
	wg.Wait()
	if v, _ := c.Get("k"); v != 8000 {
		t.Fatalf("got %d, want 8000", v)
	}
}
