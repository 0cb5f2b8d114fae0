package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgNode is any element of the plot, with the attributes the test reads.
type svgNode struct {
	XMLName  xml.Name
	Class    string    `xml:"class,attr"`
	Width    string    `xml:"width,attr"`
	Height   string    `xml:"height,attr"`
	FontSize string    `xml:"font-size,attr"`
	Text     string    `xml:",chardata"`
	Children []svgNode `xml:",any"`
}

func (n svgNode) all(class string) []svgNode {
	var out []svgNode
	if strings.Contains(" "+n.Class+" ", " "+class+" ") {
		out = append(out, n)
	}
	for _, c := range n.Children {
		out = append(out, c.all(class)...)
	}
	return out
}

// The plot of a day's replay shows, per service, load, capacity and
// failures against round numbers, the replica count, a marker for every
// decision, and times of day in round steps; it is sized for a laptop
// screen. Chromium renders it, and a script in the page checks that no
// two labels overlap and none leaves the picture.
func TestPlotShowsDecisionsCapacityAndFailures(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "plot.svg")
	var out bytes.Buffer
	opt := Options{Policy: "../predictive.lua", Trace: "../traces/flash_sale.csv", Plot: plot}
	res, err := Simulate(context.Background(), opt, &out)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePlot(opt, res, &out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	var svg svgNode
	if err := xml.Unmarshal(b, &svg); err != nil {
		t.Fatalf("plot is not well-formed XML: %v", err)
	}
	w, _ := strconv.Atoi(svg.Width)
	fs, _ := strconv.Atoi(svg.FontSize)
	if w < 1000 || w > 1366 || fs < 13 {
		t.Errorf("plot %s px wide with %s px text; want 1000..1366 wide and at least 13 px text", svg.Width, svg.FontSize)
	}
	for _, class := range []string{"load", "capacity", "failed", "replicas"} {
		if n := len(svg.all(class)); n != len(res.Series) {
			t.Errorf("%d %s lines for %d services", n, class, len(res.Series))
		}
	}
	if n := len(svg.all("decision")); n != len(res.Decisions) || n == 0 {
		t.Errorf("%d decision markers for %d decisions", n, len(res.Decisions))
	}
	if len(svg.all("rejected")) != 0 || len(svg.all("up")) == 0 || len(svg.all("down")) == 0 {
		t.Errorf("markers up %d, down %d, rejected %d; the flash sale scales both ways and validation refuses nothing",
			len(svg.all("up")), len(svg.all("down")), len(svg.all("rejected")))
	}
	if len(svg.all("legend")) == 0 {
		t.Error("no legend")
	}
	roundTicks(t, "load axis", svg.all("tick-rps"))
	roundTicks(t, "replica axis", svg.all("tick-replicas"))
	clock := regexp.MustCompile(`^(Mon |Tue |Wed |Thu |Fri |Sat |Sun )?([0-2]\d):([0-5]\d)$`)
	times := svg.all("tick-time")
	if len(times) < 4 || len(times) > 13*len(res.Series) {
		t.Errorf("%d time ticks", len(times))
	}
	var mins []int
	for _, tk := range times {
		m := clock.FindStringSubmatch(tk.Text)
		if m == nil {
			t.Fatalf("time tick %q is not a time of day", tk.Text)
		}
		h, _ := strconv.Atoi(m[2])
		mm, _ := strconv.Atoi(m[3])
		mins = append(mins, 60*h+mm)
	}
	if len(mins) < 2 {
		t.Fatalf("time ticks %v", mins)
	}
	if step := mins[1] - mins[0]; step <= 0 || !contains([]int{1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720}, step) || mins[0]%step != 0 {
		t.Errorf("time ticks %v are not round steps", mins)
	}
	inChromium(t, plot)
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// roundTicks checks labels run 0, s, 2s, ... for s one of 1, 2 or 5 times
// a power of ten.
func roundTicks(t *testing.T, what string, ticks []svgNode) {
	t.Helper()
	if len(ticks) < 3 {
		t.Errorf("%s: %d ticks", what, len(ticks))
		return
	}
	var vals []float64
	for _, tk := range ticks {
		v, err := strconv.ParseFloat(strings.TrimSpace(tk.Text), 64)
		if err != nil {
			t.Errorf("%s: tick %q is not a number", what, tk.Text)
			return
		}
		vals = append(vals, v)
	}
	step := vals[1] - vals[0]
	mant := step / math.Pow(10, math.Floor(math.Log10(step)))
	if vals[0] != 0 || !(math.Abs(mant-1) < 1e-9 || math.Abs(mant-2) < 1e-9 || math.Abs(mant-5) < 1e-9) {
		t.Errorf("%s: ticks %v are not round", what, vals)
	}
}

// inChromium loads the plot in a page whose script measures every label,
// and saves a screenshot to $PERIGEE_SCREENSHOTS for a person to look at.
func inChromium(t *testing.T, plot string) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Log("chromium not installed (Debian package chromium): the plot is not rendered")
		return
	}
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(t.TempDir(), "plot.html")
	html := `<!doctype html><html><body style="margin:0">` + string(svg) + `<pre id="result"></pre><script>
const svg = document.querySelector("svg"), box = svg.getBoundingClientRect();
const texts = [...svg.querySelectorAll("text")].map(t => ({s: t.textContent, r: t.getBoundingClientRect()}));
const overlaps = [], outside = [];
for (let i = 0; i < texts.length; i++) {
  const a = texts[i].r;
  if (a.left < box.left || a.right > box.right || a.top < box.top || a.bottom > box.bottom) outside.push(texts[i].s);
  for (let j = i + 1; j < texts.length; j++) {
    const b = texts[j].r;
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) overlaps.push(texts[i].s + " / " + texts[j].s);
  }
}
document.getElementById("result").textContent = JSON.stringify({texts: texts.length, overlaps, outside, width: box.width, height: box.height});
</script></body></html>`
	if err := os.WriteFile(page, []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + t.TempDir(), "--hide-scrollbars"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dom, err := exec.CommandContext(ctx, bin, append(flags, "--dump-dom", "file://"+page)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	_, rest, _ := strings.Cut(string(dom), `<pre id="result">`)
	js, _, _ := strings.Cut(rest, "</pre>")
	var r struct {
		Texts             int
		Overlaps, Outside []string
		Width, Height     float64
	}
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("page result %q: %v", js, err)
	}
	if r.Texts == 0 || len(r.Overlaps) > 0 || len(r.Outside) > 0 {
		t.Errorf("rendered %d labels: overlapping %q, outside the picture %q", r.Texts, r.Overlaps, r.Outside)
	}
	if dir := os.Getenv("PERIGEE_SCREENSHOTS"); dir != "" {
		shot := filepath.Join(dir, "policy-plot.png")
		size := fmt.Sprintf("--window-size=%.0f,%.0f", r.Width, r.Height)
		if err := exec.CommandContext(ctx, bin, append(flags, size, "--screenshot="+shot, "file://"+plot)...).Run(); err != nil {
			t.Fatalf("chromium --screenshot: %v", err)
		}
		t.Logf("screenshot: %s", shot)
	}
}
