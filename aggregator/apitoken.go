package aggregator

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

	"perigee/files"
)

// The API, /metrics and what the dashboard reads show the whole fleet, on
// the address every node must reach to ship: api_token_file guards them.
// Ingest keeps the nodes' own tokens, and the dashboard's page, which
// holds no data, loads without one and sends the token it is given in its
// URL's fragment (never sent to the server, so never in a log).

// dashboardPage is what the dashboard's page is made of.
var dashboardPage = map[string]bool{"/": true, "/index.html": true, "/app.js": true, "/app.css": true}

// readAPIToken reads the API's bearer token from path.
func readAPIToken(path string) ([32]byte, error) {
	tok, err := files.ReadToken(path)
	if err != nil {
		return [32]byte{}, fmt.Errorf("api_token_file: %w", err)
	}
	if len(tok) < 16 {
		return [32]byte{}, fmt.Errorf("api_token_file %s: the token is shorter than 16 characters", path)
	}
	return sha256.Sum256([]byte(tok)), nil
}

// guardAPI answers 401 to a request for anything but ingest and the
// dashboard's page that does not carry the API token; every path not
// named there needs it, so a spelling the mux would route (or redirect)
// elsewhere cannot skip it.
func guardAPI(want [32]byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/ingest" || (r.Method == http.MethodGet || r.Method == http.MethodHead) && dashboardPage[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="perigee aggregator"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "this aggregator's API needs its token: Authorization: Bearer <the token of api_token_file>; open the dashboard as /#token=<token>"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
