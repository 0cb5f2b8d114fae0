package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"perigee/telemetry"
	"perigee/telemetry/ship"
)

// TestDashboardInHeadlessChromium opens the dashboard in Debian's chromium
// and reads the page through the DevTools protocol: it must show the fleet
// of this run, then, without a reload, a node that starts reporting later.
func TestDashboardInHeadlessChromium(t *testing.T) {
	a := startAggregator(t, nil)
	runShipper(t, a, "node-a", tokenA, "eu-west")
	page := openInChromium(t, a.url("/"))

	type view struct {
		Nodes, Regions []string
		Decisions      int
		Refreshes      string
		Totals         string
	}
	// Until the page has loaded, the expression throws: that reads as an
	// empty view and the polling goes on.
	read := func() view {
		var v view
		_ = page.eval(t, `JSON.stringify({
			nodes: [...document.querySelectorAll("#nodes tr")].map(r => r.dataset.node),
			regions: [...document.querySelectorAll("#map .region")].map(g => g.dataset.region),
			decisions: document.querySelectorAll("#decisions tr").length,
			refreshes: document.body.dataset.refreshes,
			totals: document.getElementById("totals").textContent})`, &v)
		return v
	}
	eventually(t, "the dashboard to show node-a on the map with its decisions", func() bool {
		v := read()
		return slices.Contains(v.Nodes, "node-a") && slices.Contains(v.Regions, "eu-west") && v.Decisions > 0
	})
	first := read()
	runShipper(t, a, "node-b", tokenB, "ap-southeast")
	eventually(t, "the open page to show node-b", func() bool {
		v := read()
		return slices.Contains(v.Nodes, "node-b") && slices.Contains(v.Regions, "ap-southeast")
	})
	if last := read(); last.Refreshes == first.Refreshes || !strings.Contains(last.Totals, "2 nodes") {
		t.Fatalf("page did not refresh: first %+v, last %+v", first, last)
	}
}

// openInChromium opens url in Debian's headless chromium, which the test
// stops at its end, and returns its page.
func openInChromium(t *testing.T, url string) *cdpPage {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (Debian package chromium); .ci/run installs it")
	}
	profile := t.TempDir()
	browser := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+profile, "--ignore-certificate-errors", "--remote-debugging-port=0",
		"--remote-allow-origins=*", url)
	if testing.Verbose() {
		browser.Stderr = os.Stderr
	}
	if err := browser.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = browser.Process.Kill(); _ = browser.Wait() })
	return devtoolsPage(t, profile)
}

func runShipper(t *testing.T, a *agg, node, token, region string) {
	s := newShipper(t, a, node, token, func(c *ship.Config) { c.Region = region })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	go func() {
		for i := 1; ctx.Err() == nil; i++ {
			smp := sample(node, i)
			smp.Region = region
			s.AddSample(smp)
			s.AddDecision(telemetry.Decision{Time: time.Now(), Region: region, Policy: "demo", Action: "scale",
				Service: "api", Value: float64(i%5 + 1), Reason: "p99 above target", Applied: true})
			time.Sleep(100 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// cdpPage is one page of a browser driven over the DevTools protocol.
type cdpPage struct {
	ws *websocket.Conn
	id int
}

func devtoolsPage(t *testing.T, profile string) *cdpPage {
	var port string
	eventually(t, "chromium's DevTools port", func() bool {
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		port, _, _ = strings.Cut(string(b), "\n")
		return err == nil && port != ""
	})
	var wsURL string
	eventually(t, "a page target", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		if json.NewDecoder(resp.Body).Decode(&targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	ws, err := websocket.Dial(wsURL, "", "http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &cdpPage{ws: ws}
}

// eval runs a JavaScript expression that returns a JSON string and decodes
// it into v. A broken connection fails the test; a script error is returned.
func (p *cdpPage) eval(t *testing.T, expr string, v any) error {
	t.Helper()
	p.id++
	msg := map[string]any{"id": p.id, "method": "Runtime.evaluate", "params": map[string]any{"expression": expr, "returnByValue": true}}
	if err := websocket.JSON.Send(p.ws, msg); err != nil {
		t.Fatal(err)
	}
	_ = p.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var reply struct {
			ID     int `json:"id"`
			Result struct {
				Result struct {
					Value string `json:"value"`
				} `json:"result"`
				ExceptionDetails any `json:"exceptionDetails"`
			} `json:"result"`
			Error any `json:"error"`
		}
		if err := websocket.JSON.Receive(p.ws, &reply); err != nil {
			t.Fatal(err)
		}
		if reply.ID != p.id {
			continue // an event, or an answer to an earlier call
		}
		if reply.Error != nil || reply.Result.ExceptionDetails != nil {
			return fmt.Errorf("evaluate: %v %v", reply.Error, reply.Result.ExceptionDetails)
		}
		if err := json.Unmarshal([]byte(reply.Result.Result.Value), v); err != nil {
			return fmt.Errorf("evaluate result %q: %w", reply.Result.Result.Value, err)
		}
		return nil
	}
}
