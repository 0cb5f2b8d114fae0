package admin

import (
	"encoding/json"
	"strings"
	"testing"
)

// A URL can carry a credential where no field name says so: in its
// userinfo (a scale webhook's https://ops:pass@host/, which Go's client
// sends as Basic auth) or in a query parameter named like one.
func TestRedactHidesCredentialsInURLs(t *testing.T) {
	type scale struct {
		URL    string
		Secret string `json:"secret"`
	}
	cfg := map[string]any{
		"services": map[string]any{
			"api": map[string]any{"scale": scale{URL: "https://ops:hunter2@hooks.example/scale?x=1", Secret: "s"}},
			"web": map[string]any{"scale": scale{URL: "https://ghp_TOKEN1234@hooks.example/scale"}},
			"q":   map[string]any{"scale": scale{URL: "https://hooks.example/scale?service=q&access_token=tok5678&api_key=k9"}},
		},
		"node": map[string]any{"public_url": "https://fra-1.example.net:8443/"},
		"acme": map[string]any{"email": "ops@example.net", "dir": "//x:y@host"},
	}
	b, err := json.Marshal(Redact(cfg))
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	for _, secret := range []string{"hunter2", "ops:", "ghp_TOKEN1234", "tok5678", "k9"} {
		if strings.Contains(out, secret) {
			t.Errorf("GET /config shows %q: %s", secret, out)
		}
	}
	for _, kept := range []string{"hooks.example/scale?x=1", "service=q", "https://fra-1.example.net:8443/", `"ops@example.net"`, `"//x:y@host"`} {
		if !strings.Contains(out, kept) {
			t.Errorf("GET /config lost %q: %s", kept, out)
		}
	}
}
