package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"perigee/telemetry"
	"perigee/telemetry/ship"
)

// TestDashboardInHeadlessChromium opens the dashboard in Debian's chromium
// and reads the page through the DevTools protocol: before any node
// reports, each table says it is empty; then it must show the fleet of this
// run, then, without a reload, a node that starts reporting later; every
// chart has a time axis, a unit and a legend; and a node's page shows that
// node only. Screenshots go to $PERIGEE_SCREENSHOTS for a person to check.
func TestDashboardInHeadlessChromium(t *testing.T) {
	a := startAggregator(t, nil)
	page := openInChromium(t, a.url("/"))

	type chart struct {
		Unit, Legend string
		TimeTicks    []string
		ValueTicks   []string
	}
	type view struct {
		Title          string
		Nodes, Regions []string
		Links          []string
		Decisions      int
		DecisionNodes  []string
		Refreshes      string
		Totals         string
		Empty          []string
		Charts         map[string]chart
		Redirects      []string // the nodes' 3xx/s cells
		MapShown       bool
	}
	// Until the page has loaded, the expression throws: that reads as an
	// empty view and the polling goes on.
	read := func() view {
		var v view
		_ = page.eval(t, `JSON.stringify({
			title: document.getElementById("title").textContent,
			nodes: [...document.querySelectorAll("#nodes tr")].map(r => r.dataset.node),
			regions: [...document.querySelectorAll("#map .region")].map(g => g.dataset.region),
			links: [...document.querySelectorAll("#nodes tr a")].map(a => a.getAttribute("href")),
			redirects: (i => [...document.querySelectorAll("#nodes tr")].map(r => r.cells[i].textContent))(
				[...document.querySelectorAll("thead th")].findIndex(th => th.textContent === "3xx/s")),
			decisions: document.querySelectorAll("#decisions tr").length,
			decisionNodes: [...document.querySelectorAll("#decisions tr")].map(r => r.cells[1].textContent),
			refreshes: document.body.dataset.refreshes,
			totals: document.getElementById("totals").textContent,
			empty: [...document.querySelectorAll("td.empty")].map(td => td.textContent),
			mapShown: !document.getElementById("regions").hidden,
			charts: Object.fromEntries([...document.querySelectorAll("svg.chart")].map(svg => {
				const texts = [...svg.querySelectorAll("text")].map(t => t.textContent);
				return [svg.id, {unit: texts[0], legend: texts.slice(1, 3).join(" "),
					timeTicks: [...svg.querySelectorAll("text.time")].map(t => t.textContent),
					valueTicks: [...svg.querySelectorAll("text.value")].map(t => t.textContent)}];
			}))})`, &v)
		return v
	}
	eventually(t, "the empty dashboard to say its tables are empty", func() bool {
		v := read()
		return v.Refreshes != "" && v.Refreshes != "0"
	})
	if v := read(); !slices.Contains(v.Empty, "no node has reported yet") || !slices.Contains(v.Empty, "no scaling decisions yet") {
		t.Fatalf("empty tables without an empty state: %+v", v.Empty)
	}
	page.screenshot(t, "dashboard-empty")

	runShipper(t, a, "node-a", tokenA, "eu-west")
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
	last := read()
	if last.Refreshes == first.Refreshes || !strings.Contains(last.Totals, "2 nodes") {
		t.Fatalf("page did not refresh: first %+v, last %+v", first, last)
	}
	want := map[string]chart{
		"chart-rps":    {Unit: "req/s", Legend: "served (non-3xx) redirects (3xx)"},
		"chart-status": {Unit: "resp/s", Legend: "1xx 2xx"},
		"chart-lat":    {Unit: "ms", Legend: "p50 p99"},
		"chart-err":    {Unit: "% of resp.", Legend: "5xx or failed"},
		"chart-cpu":    {Unit: "cores", Legend: "cores busy"},
	}
	for id, w := range want {
		c := last.Charts[id]
		if c.Unit != w.Unit || !strings.HasPrefix(c.Legend, w.Legend) {
			t.Errorf("%s: unit %q, legend %q; want %q, %q", id, c.Unit, c.Legend, w.Unit, w.Legend)
		}
		if len(c.TimeTicks) < 2 || !roundTimes(c.TimeTicks) {
			t.Errorf("%s: time ticks %v, want round minutes (HH:MM, a multiple of 5)", id, c.TimeTicks)
		}
		if len(c.ValueTicks) < 2 || !increasing(c.ValueTicks) {
			t.Errorf("%s: value ticks %v, want distinct rising numbers", id, c.ValueTicks)
		}
	}
	if len(last.Empty) != 0 {
		t.Errorf("full tables still say they are empty: %v", last.Empty)
	}
	if len(last.Redirects) == 0 || slices.Contains(last.Redirects, "") {
		t.Errorf("the nodes' 3xx/s: %q, want a rate for each", last.Redirects)
	}
	if !slices.Contains(last.Links, "?node=node-a") {
		t.Fatalf("nodes are not links to their page: %v", last.Links)
	}
	page.screenshot(t, "dashboard-fleet")

	page.navigate(t, a.url("/?node=node-b"))
	eventually(t, "node-b's page with its decisions", func() bool {
		v := read()
		return v.Title == "Perigee node node-b" && v.Decisions > 0
	})
	v := read()
	if !slices.Equal(v.Nodes, []string{"node-b"}) || v.MapShown || !strings.Contains(v.Totals, "ap-southeast") {
		t.Errorf("node page shows %+v", v)
	}
	for _, n := range v.DecisionNodes {
		if n != "node-b" {
			t.Errorf("node-b's page lists a decision of %s", n)
		}
	}
	page.screenshot(t, "dashboard-node")

	page.navigate(t, a.url("/?node=nobody"))
	eventually(t, "an unknown node's page", func() bool {
		v := read()
		return v.Title == "Perigee node nobody" && v.Refreshes == "1"
	})
	if v := read(); !slices.Contains(v.Empty, "node nobody has not reported to this aggregator") {
		t.Errorf("unknown node: %+v", v.Empty)
	}
}

// roundTimes reports whether every tick is an HH:MM time on a five-minute
// boundary.
func roundTimes(ticks []string) bool {
	for _, tk := range ticks {
		tm, err := time.Parse("15:04", tk)
		if err != nil || tm.Minute()%5 != 0 {
			return false
		}
	}
	return true
}

func increasing(ticks []string) bool {
	prev := math.Inf(-1)
	for _, tk := range ticks {
		v, err := strconv.ParseFloat(tk, 64)
		if err != nil || v <= prev {
			return false
		}
		prev = v
	}
	return true
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
		"--remote-allow-origins=*", "--window-size=1366,900", "--hide-scrollbars", url)
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
			// Of its i answers in the second, a tenth are geo steering's
			// redirects, a twentieth 4xx and a fiftieth 5xx.
			r3, r4, r5 := uint64(i/10), uint64(i/20), uint64(i/50)
			smp.Status = telemetry.StatusClasses{0, uint64(i) - r3 - r4 - r5, r3, r4, r5}
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

// call sends one DevTools command and returns its result. A broken
// connection fails the test; an error answer is returned.
func (p *cdpPage) call(t *testing.T, method string, params map[string]any) (json.RawMessage, error) {
	t.Helper()
	p.id++
	if err := websocket.JSON.Send(p.ws, map[string]any{"id": p.id, "method": method, "params": params}); err != nil {
		t.Fatal(err)
	}
	_ = p.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var reply struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  any             `json:"error"`
		}
		if err := websocket.JSON.Receive(p.ws, &reply); err != nil {
			t.Fatal(err)
		}
		if reply.ID != p.id {
			continue // an event, or an answer to an earlier call
		}
		if reply.Error != nil {
			return nil, fmt.Errorf("%s: %v", method, reply.Error)
		}
		return reply.Result, nil
	}
}

// eval runs a JavaScript expression that returns a JSON string and decodes
// it into v; a script error is returned.
func (p *cdpPage) eval(t *testing.T, expr string, v any) error {
	t.Helper()
	raw, err := p.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return err
	}
	var res struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails any `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("evaluate: %v", res.ExceptionDetails)
	}
	if err := json.Unmarshal([]byte(res.Result.Value), v); err != nil {
		return fmt.Errorf("evaluate result %q: %w", res.Result.Value, err)
	}
	return nil
}

// navigate loads url in the page.
func (p *cdpPage) navigate(t *testing.T, url string) {
	t.Helper()
	if _, err := p.call(t, "Page.navigate", map[string]any{"url": url}); err != nil {
		t.Fatal(err)
	}
}

// screenshot saves the page as name.png in $PERIGEE_SCREENSHOTS, or the
// test's temporary directory, for a person to look at; the test itself
// reads the DOM.
func (p *cdpPage) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("PERIGEE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	raw, err := p.call(t, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true})
	if err != nil {
		t.Fatal(err)
	}
	var shot struct{ Data []byte }
	if err := json.Unmarshal(raw, &shot); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, shot.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
