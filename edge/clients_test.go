package edge

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// viaEcho answers with the Via header it received, which names the
// protocol the client used to reach the node: "3 local" for HTTP/3.
var viaEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "via="+r.Header.Get("Via")+"\n")
})

func lookPath(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (Debian package %s; .ci/run installs it)", name, pkg)
	}
	return p
}

// ngtcp2's client, built on another QUIC and HTTP/3 stack, gets an answer.
func TestHTTP3WithNgtcp2Client(t *testing.T) {
	client := lookPath(t, "gtlsclient", "ngtcp2-client")
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, viaEcho)))
	host, port, _ := strings.Cut(n.Addrs().HTTPS, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, client, "--no-quic-dump", "--exit-on-first-stream-close",
		host, port, "https://"+n.Addrs().HTTPS+"/hello").CombinedOutput()
	if err != nil {
		t.Fatalf("gtlsclient: %v\n%s", err, out)
	}
	for _, want := range []string{"Negotiated ALPN is h3", "[:status: 200]", "[via: 3 local]", "via=3 local"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("gtlsclient output lacks %q:\n%s", want, out)
		}
	}
}

// Headless Chromium, forced onto QUIC for the node's origin and told to
// trust its dev certificate by SPKI hash, loads a page over HTTP/3.
func TestHTTP3WithChromium(t *testing.T) {
	chromium := lookPath(t, "chromium", "chromium")
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, viaEcho)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(),
		"--origin-to-force-quic-on="+n.Addrs().HTTPS,
		"--ignore-certificate-errors-spki-list="+n.SPKIHash(),
		"--dump-dom", "https://"+n.Addrs().HTTPS+"/page").Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "via=3 local") {
		t.Fatalf("chromium did not come over HTTP/3; page:\n%s", out)
	}
}
