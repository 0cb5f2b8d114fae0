package geo

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"perigee/geo/rtt"
	"perigee/via"
)

// SteeredHeader marks a request another node forwarded here, so it is served
// rather than steered again (two nodes with different views could otherwise
// pass a request back and forth).
const SteeredHeader = "Perigee-Steered"

// altSvcMaxAge is how long clients may use an advertised alternative;
// short, so a node that goes away stops being advertised soon.
const altSvcMaxAge = 60

// Steer wraps a route's handler with its steering mode. In every mode,
// including off, it samples the RTT of directly connected clients for the
// learner (see rtt.ConnContext).
func (rt *Router) Steer(mode SteerMode, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := rt.client(r).Addr
		rt.observe(r, client)
		if mode == SteerOff || mode == "" || r.Header.Get(SteeredHeader) != "" || !client.IsValid() {
			next.ServeHTTP(w, r)
			return
		}
		d := rt.DecideHere(client)
		switch mode {
		case SteerRedirect:
			// The target is spliced after the node's URL, so only a path
			// may be: an opaque one ("x:@evil.example") or "*" would
			// choose the userinfo, the host name or the port.
			if !d.Self && r.URL.Opaque == "" && (r.URL.Path == "" || strings.HasPrefix(r.URL.Path, "/")) {
				rt.Count("redirect", d.Reason)
				http.Redirect(w, r, strings.TrimSuffix(d.Best.PublicURL, "/")+r.URL.RequestURI(), rt.cfg.RedirectCode)
				return
			}
		case SteerAltSvc:
			if v := altSvc(d); v != "" {
				rt.Count("alt-svc", d.Reason)
				w.Header().Add("Alt-Svc", v)
				next.ServeHTTP(w, r)
				return
			}
		case SteerProxy:
			if target, ok := rt.spillTarget(d); ok {
				if p := rt.proxyTo(target); p != nil {
					rt.Count("proxy", d.Reason)
					r.Header.Set(SteeredHeader, rt.fleet.Self().ID)
					p.ServeHTTP(w, r)
					return
				}
			}
		}
		rt.Count("serve", d.Reason)
		next.ServeHTTP(w, r)
	})
}

// client is who sent r, as the node resolved it.
func (rt *Router) client(r *http.Request) Client {
	if rt.cfg.Client != nil {
		return rt.cfg.Client(r)
	}
	return ResolveClient(r, rt.cfg.Trusted)
}

// observe feeds the learner the connection's RTT when the peer is the client
// itself: through a proxy the RTT would be the proxy's.
func (rt *Router) observe(r *http.Request, client netip.Addr) {
	if rt.learner == nil {
		return
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || peer.Addr().Unmap() != client {
		return
	}
	if d, ok := rtt.Sample(r.Context(), time.Now(), rt.cfg.SampleEvery); ok {
		rt.learner.Observe(client, d)
	}
}

// altSvc advertises the best node as an HTTP/3 alternative. Its
// certificate must also cover this origin's name, as Alt-Svc requires.
func altSvc(d Decision) string {
	if d.Self {
		return ""
	}
	u, err := url.Parse(d.Best.PublicURL)
	if err != nil || u.Scheme != "https" || !isHost(u.Hostname()) {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return `h3="` + net.JoinHostPort(u.Hostname(), port) + `"; ma=` + strconv.Itoa(altSvcMaxAge)
}

// isHost reports whether h is an IP address without a zone or a DNS host
// name: Go's URL parser takes quotes and commas in a host, and the host is
// written into Alt-Svc's quoted alt-authority.
func isHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	if h == "" {
		return false
	}
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// spillTarget picks where proxy steering forwards: to the client's best node
// when this one cannot take the client, or when the detour through the
// mesh to it (self→node RTT plus its queue) beats queueing here by
// SpillMargin.
func (rt *Router) spillTarget(d Decision) (Node, bool) {
	if d.Self || d.Best.PublicURL == "" {
		return Node{}, false
	}
	self := rt.fleet.Self()
	i := byIDPos(d.Candidates, self.ID)
	if i < 0 {
		return Node{}, false
	}
	here := d.Candidates[i]
	if here.Excluded != "" {
		return d.Best, true
	}
	hop := d.Best.RTTFromSelf
	if hop <= 0 {
		hop = rt.modelRTT(rt.nodePlace(self), rt.nodePlace(d.Best))
	}
	var there time.Duration
	if j := byIDPos(d.Candidates, d.Best.ID); j >= 0 {
		there = d.Candidates[j].LoadPenalty
	}
	return d.Best, hop+there+rt.cfg.SpillMargin < here.LoadPenalty
}

// proxyTo returns the reverse proxy for a node, built once per public URL.
func (rt *Router) proxyTo(n Node) *httputil.ReverseProxy {
	if p, ok := rt.proxies.Get(n.PublicURL); ok {
		return p
	}
	target, err := url.Parse(n.PublicURL)
	if err != nil || target.Host == "" {
		rt.cfg.Log.Warn("geo: node has an unusable public URL", "node", n.ID, "url", n.PublicURL)
		return nil
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// The target should see the client, not this node nor the
			// proxies in front of it; it must trust this node's address.
			// A client this node could not resolve is unknown there too
			// (RFC 7239's word): the trusted hop it hid behind would be
			// taken for it.
			if c := rt.client(pr.In); c.Known {
				pr.Out.Header.Set("X-Forwarded-For", c.Addr.String())
			} else {
				pr.Out.Header.Set("X-Forwarded-For", "unknown")
			}
			// As every proxy must (RFC 9110 7.6.3): a node that finds its
			// own name there (a route's loop guard, the admin API) knows the
			// request went through it.
			pr.Out.Header.Add("Via", via.Hop(pr.In.ProtoMajor, pr.In.ProtoMinor, rt.fleet.Self().ID))
		},
		Transport: rt.cfg.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rt.cfg.Log.Warn("geo: proxy to node failed", "node", n.ID, "err", err)
			http.Error(w, "upstream node unavailable", http.StatusBadGateway)
		},
	}
	var kept *httputil.ReverseProxy
	rt.proxies.Update(n.PublicURL, func(old *httputil.ReverseProxy, found bool) *httputil.ReverseProxy {
		if kept = p; found {
			kept = old
		}
		return kept
	})
	return kept
}
