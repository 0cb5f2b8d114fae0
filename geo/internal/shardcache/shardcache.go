// Package shardcache is a bounded map split into independently locked
// shards, so that request-path lookups never contend on one global lock.
package shardcache

import (
	"hash/maphash"
	"sync"
)

const shardCount = 32

// Cache maps K to V and holds at most about its capacity entries. When a
// shard is full an arbitrary entry is dropped: the callers cache values they
// can recompute, so precise LRU order is not worth its bookkeeping.
type Cache[K comparable, V any] struct {
	seed     maphash.Seed
	perShard int
	shards   [shardCount]shard[K, V]
}

type shard[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

// New returns a cache holding up to capacity entries (at least one per shard).
func New[K comparable, V any](capacity int) *Cache[K, V] {
	c := &Cache[K, V]{seed: maphash.MakeSeed(), perShard: max(1, capacity/shardCount)}
	for i := range c.shards {
		c.shards[i].m = make(map[K]V)
	}
	return c
}

func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	return &c.shards[maphash.Comparable(c.seed, k)%shardCount]
}

// Get returns the value stored for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	v, ok := s.m[k]
	s.mu.RUnlock()
	return v, ok
}

// Put stores v for k, evicting another entry of the same shard when full.
func (c *Cache[K, V]) Put(k K, v V) {
	c.Update(k, func(V, bool) V { return v })
}

// Update replaces the value for k with f(old, found), under the shard's lock.
func (c *Cache[K, V]) Update(k K, f func(old V, found bool) V) {
	s := c.shard(k)
	s.mu.Lock()
	old, found := s.m[k]
	if !found && len(s.m) >= c.perShard {
		for victim := range s.m {
			delete(s.m, victim)
			break
		}
	}
	s.m[k] = f(old, found)
	s.mu.Unlock()
}

// Range calls f for every entry, one shard locked at a time, until f
// returns false.
func (c *Cache[K, V]) Range(f func(K, V) bool) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for k, v := range s.m {
			if !f(k, v) {
				s.mu.RUnlock()
				return
			}
		}
		s.mu.RUnlock()
	}
}

// Len counts the entries.
func (c *Cache[K, V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
