// Package admin serves the node's operator API: a read-only page at /,
// status, routes, services, config (secrets redacted), reload and
// Prometheus metrics, behind a bearer token when the listener is not on
// loopback, and without one only to loopback Host names and same-origin
// state changes.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"perigee/loopback"
)

// indexHTML is the read-only page at /: status, services, routes and the
// latest decisions, read from the JSON endpoints beside it.
//
//go:embed index.html
var indexHTML []byte

// Node is what the admin API reads and drives.
type Node interface {
	Status() any
	Routes() any
	Services() any
	Config() any
	Reload() error
}

// API is the admin HTTP handler; more endpoints may be mounted with Handle.
type API struct {
	mux   *http.ServeMux
	token string
	// want is the digest of the Authorization header the token makes:
	// comparing digests, not the headers, keeps the token's length out
	// of the timing, which ConstantTimeCompare shows by returning at once
	// when the lengths differ.
	want [sha256.Size]byte
}

// New builds the API. An empty token means no authentication (loopback only,
// which config validation enforces).
func New(n Node, metrics http.Handler, token string) *API {
	a := &API{mux: http.NewServeMux(), token: token, want: sha256.Sum256([]byte("Bearer " + token))}
	a.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(indexHTML)
	})
	a.HandleJSON("GET /status", n.Status)
	a.HandleJSON("GET /routes", n.Routes)
	a.HandleJSON("GET /services", n.Services)
	a.HandleJSON("GET /config", func() any { return Redact(n.Config()) })
	a.mux.Handle("GET /metrics", metrics)
	// Profiles of the running node, behind the same token as the rest.
	a.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	a.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	a.mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Reload(); err != nil {
			WriteJSON(w, http.StatusUnprocessableEntity, map[string]string{"result": "rejected, old config still serving", "error": err.Error()})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"result": "reloaded"})
	})
	return a
}

// Handle mounts another endpoint, e.g. "GET /members".
func (a *API) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// HandleJSON mounts an endpoint that answers with the JSON of what get returns.
func (a *API) HandleJSON(pattern string, get func() any) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusOK, get()) })
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Without a token only loopback clients reach the API; a web page they
	// open could still, through DNS rebinding (its own name resolving to
	// 127.0.0.1) or a cross-origin form. Both show in the request: the Host
	// is the page's name, the Origin the page's.
	if a.token == "" && !loopback.Host(r.Host) {
		WriteJSON(w, http.StatusForbidden, map[string]string{"error": "admin API without a token answers only Host 127.0.0.1, [::1] or localhost"})
		return
	}
	// A proxy on this host (another node's, whose backend is this
	// listener, or an operator's nginx) is loopback too, and passes on
	// whoever reached it. What it adds says so.
	if a.token == "" && proxied(r.Header) {
		WriteJSON(w, http.StatusForbidden, map[string]string{"error": "admin API without a token answers only callers on this host, not requests a proxy passed on"})
		return
	}
	// A page elsewhere can make a browser GET too (an <img>): of a profile
	// or a trace, that costs the node for as long as the page asks.
	// Browsers say where a request comes from; the API's own page is
	// same-origin, an address typed in is none.
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		WriteJSON(w, http.StatusForbidden, map[string]string{"error": "request from another site's page refused"})
		return
	}
	if o := r.Header.Get("Origin"); o != "" && r.Method != http.MethodGet && r.Method != http.MethodHead &&
		o != "http://"+r.Host && o != "https://"+r.Host {
		WriteJSON(w, http.StatusForbidden, map[string]string{"error": "cross-origin request refused"})
		return
	}
	if a.token != "" {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], a.want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="perigee-admin"`)
			WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
	}
	a.mux.ServeHTTP(w, r)
}

// proxied reports whether h carries what proxies add to a request they
// pass on: Via (RFC 9110), X-Forwarded-For or Forwarded.
func proxied(h http.Header) bool {
	for _, k := range [...]string{"Via", "X-Forwarded-For", "Forwarded"} {
		if len(h[k]) > 0 {
			return true
		}
	}
	return false
}

// WriteJSON writes v as indented JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
