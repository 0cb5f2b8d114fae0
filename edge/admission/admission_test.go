package admission

import (
	"testing"
	"time"
)

func TestOpenGateAdmitsEverything(t *testing.T) {
	var g Gate
	for range 1000 {
		if _, ok := g.Admit(time.Now()); !ok {
			t.Fatal("open gate refused a request")
		}
	}
}

func TestTokenBucket(t *testing.T) {
	var g Gate
	g.SetLimit(10, 5)
	t0 := time.Now()
	admitted := 0
	for range 20 {
		if _, ok := g.Admit(t0); ok {
			admitted++
		}
	}
	if admitted != 5 {
		t.Fatalf("burst of 5 admitted %d", admitted)
	}
	v, ok := g.Admit(t0)
	if ok || v.Status != 429 || v.RetryAfter <= 0 || v.RetryAfter > 100*time.Millisecond {
		t.Fatalf("over the limit: %+v %v", v, ok)
	}
	if _, ok := g.Admit(t0.Add(100 * time.Millisecond)); !ok {
		t.Fatal("a token should have refilled after 100ms at 10/s")
	}
	g.SetLimit(0, 0)
	if _, ok := g.Admit(t0); !ok {
		t.Fatal("lifted limit still refuses")
	}
}

func TestShedding(t *testing.T) {
	var g Gate
	g.SetShed(0.5)
	refused := 0
	for range 4000 {
		if v, ok := g.Admit(time.Now()); !ok {
			refused++
			if v.Status != 503 || v.RetryAfter == 0 {
				t.Fatalf("shed verdict %+v", v)
			}
		}
	}
	if refused < 1700 || refused > 2300 {
		t.Fatalf("shed %d of 4000 at 50%%", refused)
	}
	g.SetShed(7) // clamped to 1
	if g.Shed() != 1 {
		t.Fatalf("shed share %v, want clamped to 1", g.Shed())
	}
	if _, ok := g.Admit(time.Now()); ok {
		t.Fatal("a request passed full shedding")
	}
}

func TestGatesOutliveLookups(t *testing.T) {
	var gs Gates
	gs.Get("api").SetShed(0.3)
	if gs.Get("api").Shed() != 0.3 || gs.Get("other").Shed() != 0 {
		t.Fatal("gates not kept per route")
	}
}
