package wasm

import (
	"context"
	"fmt"
	"sort"
)

// Set is the named transforms of one configuration generation. A reload
// loads the next Set from the previous one, keeping what did not change,
// swaps it in, then releases the previous Set: old instances finish their
// requests and are closed after the last one.
type Set struct {
	byName map[string]*Transform
}

// LoadSet loads specs, reusing prev's transforms whose module, config and
// limits are unchanged (prev may be nil). On error nothing new is left
// running and prev is untouched, so it keeps serving.
func (h *Host) LoadSet(ctx context.Context, specs []Spec, prev *Set) (*Set, error) {
	s := &Set{byName: make(map[string]*Transform, len(specs))}
	for _, spec := range specs {
		if _, dup := s.byName[spec.Name]; dup {
			s.Release()
			return nil, fmt.Errorf("transform %q defined twice", spec.Name)
		}
		if old, ok := prev.Get(spec.Name); ok && old.Same(spec) && old.Retain() {
			s.byName[spec.Name] = old
			continue
		}
		t, err := h.Load(ctx, spec)
		if err != nil {
			s.Release()
			return nil, err
		}
		s.byName[spec.Name] = t
	}
	return s, nil
}

// Get returns the named transform. A nil Set has none.
func (s *Set) Get(name string) (*Transform, bool) {
	if s == nil {
		return nil, false
	}
	t, ok := s.byName[name]
	return t, ok
}

// Chain builds a chain from transform names, in order.
func (s *Set) Chain(names ...string) (*Chain, error) {
	ts := make([]*Transform, 0, len(names))
	for _, n := range names {
		t, ok := s.Get(n)
		if !ok {
			return nil, fmt.Errorf("no transform named %q", n)
		}
		ts = append(ts, t)
	}
	return NewChain(ts...), nil
}

// Names lists the set's transforms, sorted.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Stats returns each transform's figures by name.
func (s *Set) Stats() map[string]Stats {
	out := make(map[string]Stats, len(s.Names()))
	for _, n := range s.Names() {
		out[n] = s.byName[n].Stats()
	}
	return out
}

// Release drops the set's reference on each transform.
func (s *Set) Release() {
	if s == nil {
		return
	}
	for _, t := range s.byName {
		t.Release()
	}
}
