package ship_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// An aggregator's redirect is not followed. The shipper's client followed
// it: to any URL, plain http included, where Go's client sends the
// Authorization header along when the host name is the same (ports and
// scheme aside), so the node's token and its batch went out in clear
// text; and whatever answered there with {"status":"stored"} had the batch
// deleted as delivered (a 302 or 303 even turned the POST into a GET).
// A redirect is now an answer like any other that is no acknowledgement:
// the batch is kept, and the next aggregator gets it.
func TestShipperFollowsNoRedirect(t *testing.T) {
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound, http.StatusSeeOther} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			var mu sync.Mutex
			var caught []string // what reached the redirect's target
			catcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				caught = append(caught, r.Method+" "+r.Header.Get("Authorization"))
				mu.Unlock()
				fmt.Fprintln(w, `{"status":"stored"}`)
			}))
			t.Cleanup(catcher.Close)
			redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, catcher.URL+r.URL.Path, status)
			}))
			t.Cleanup(redirector.Close)
			deliveredPast(t, redirector.URL)

			mu.Lock()
			defer mu.Unlock()
			if len(caught) > 0 {
				t.Fatalf("the redirect was followed over plain http: %q", caught)
			}
		})
	}
}
