package edge

import (
	"io"
	"net/http"
	"testing"
)

// The router places a request by its host with the port and one trailing
// dot dropped, and the backend receives the host as the client spelled
// it. A spelling the router cannot place, but a backend may read as the
// protected name (nginx takes "priv.example:80:80" as priv.example), would
// reach the any-host route's service as that name: it is refused with 400
// over every protocol. The spellings the router does place still reach
// their route.
func TestHostsTheRouterCannotPlaceAreRefused(t *testing.T) {
	svc := func(name string) string {
		return serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		}))
	}
	n := startNode(t, listenAny+`services:
  pub: {backends: [{url: "`+svc("pub")+`"}]}
  priv: {backends: [{url: "`+svc("priv")+`"}]}
routes:
  - {name: pub, match: {path_prefix: /}, service: pub}
  - {name: priv, match: {host: priv.example, path_prefix: /}, service: priv}
`)
	cases := []struct{ host, want string }{
		{"priv.example", "priv"},
		{"PRIV.Example.", "priv"},
		{"priv.example:8443", "priv"},
		{"priv.example.:", "priv"},
		{"pub.example", "pub"},
		{"127.0.0.1:8443", "pub"},
		{"[::1]:8443", "pub"},
		{"my_host.example", "pub"},
		{"priv.example:80:80", "400"},
		{"priv.example:x", "400"},
		{"priv.example..", "400"},
		{".priv.example", "400"},
		{"priv..example", "400"},
		{"priv%2eexample", "400"},
		{"priv.example,pub.example", "400"},
		{"priv.example;x", "400"},
		{"*.priv.example", "400"},
		{"priv.example]", "400"},
		{"[priv.example]", "400"},
		{"[::1", "400"},
	}
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			for _, c := range cases {
				req, _ := http.NewRequest("GET", "https://"+n.Addrs().HTTPS+"/", nil)
				req.Host = c.host
				resp, err := pc.client.Do(req)
				if err != nil {
					t.Errorf("Host %q: %v", c.host, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := string(b)
				if resp.StatusCode != http.StatusOK {
					got = resp.Status[:3]
				}
				if got != c.want {
					t.Errorf("Host %q: got %s, want %s", c.host, got, c.want)
				}
			}
		})
	}
}
