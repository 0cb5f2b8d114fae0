package sim

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"perigee/telemetry"
)

// The plot's geometry, in pixels: sized to read on a laptop screen (1366
// wide) without zooming, one panel per service.
const (
	plotWidth               = 1200.0
	panelHeight             = 380.0
	marginLeft, marginRight = 70.0, 70.0
	marginTop, marginBottom = 64.0, 44.0
	fontSize                = 13
)

// Colours, one per kind of line, shared by lines and legend.
const (
	colLoad, colCapacity, colFailed, colReplicas = "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e"
)

// Plot draws, per service, offered load, serving capacity and failed
// requests (left axis, requests/s) and ready replicas (right axis) over
// time of day, with a marker for each policy decision, as an SVG.
func Plot(w io.Writer, res Result) error {
	names := make([]string, 0, len(res.Series))
	for n := range res.Series {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="%d">`+"\n",
		plotWidth, panelHeight*float64(len(names)), fontSize)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	for i, name := range names {
		var ds []telemetry.Decision
		for _, d := range res.Decisions {
			if d.Service == name {
				ds = append(ds, d)
			}
		}
		panel(&b, float64(i)*panelHeight, name, res.Start, res.Series[name], ds)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func panel(b *strings.Builder, y0 float64, name string, start time.Time, pts []Point, ds []telemetry.Decision) {
	left, top := marginLeft, y0+marginTop
	width, height := plotWidth-marginLeft-marginRight, panelHeight-marginTop-marginBottom
	bottom := top + height
	tMin, tMax := pts[0].T, pts[len(pts)-1].T
	if tMax == tMin {
		tMax = tMin + 1
	}
	maxRPS, maxRep := 1.0, 1.0
	for _, p := range pts {
		maxRPS = math.Max(maxRPS, math.Max(p.RPS, p.Failed))
		maxRep = math.Max(maxRep, float64(max(p.Ready, p.Desired)))
	}
	// Capacity may dwarf the load after a scale-up; past twice the load it
	// is clipped, so the load stays readable.
	capTop := maxRPS
	for _, p := range pts {
		capTop = math.Max(capTop, math.Min(p.Capacity, 2*maxRPS))
	}
	rpsStep, rpsTop := niceAxis(capTop)
	repStep, repTop := niceAxis(maxRep)
	repStep = math.Max(repStep, 1)
	repTop = math.Max(repTop, repStep)
	x := func(t float64) float64 { return left + (t-tMin)/(tMax-tMin)*width }
	yRPS := func(v float64) float64 { return bottom - math.Min(v, rpsTop)/rpsTop*height }
	yRep := func(v float64) float64 { return bottom - v/repTop*height }

	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-weight="bold" font-size="15">%s</text>`+"\n", left, y0+22, escape(name))
	legend(b, left, y0+44)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="start" fill="%s">req/s</text>`+"\n", 8.0, top-14, colLoad)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="end" fill="%s">replicas</text>`+"\n", plotWidth-8, top-14, colReplicas)
	for v := 0.0; v <= rpsTop+rpsStep/2; v += rpsStep {
		yy := yRPS(v)
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", left, yy, left+width, yy)
		fmt.Fprintf(b, `<text class="tick-rps" x="%.0f" y="%.1f" text-anchor="end" fill="%s">%s</text>`+"\n", left-6, yy+4, colLoad, number(v))
	}
	for v := 0.0; v <= repTop+repStep/2; v += repStep {
		fmt.Fprintf(b, `<text class="tick-replicas" x="%.0f" y="%.1f" fill="%s">%s</text>`+"\n", left+width+6, yRep(v)+4, colReplicas, number(v))
	}
	step := timeStep(tMax - tMin)
	for t := math.Ceil(tMin/step) * step; t <= tMax; t += step {
		xx := x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e4e4e4"/>`+"\n", xx, top, xx, bottom)
		fmt.Fprintf(b, `<text class="tick-time" x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", xx, bottom+18, clock(start, t, step))
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#666">time of day (%s)</text>`+"\n", left+width/2, bottom+38, start.Location())
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", left, top, width, height)

	line := func(class, colour, extra string, v func(Point) float64, steps bool) {
		var pl strings.Builder
		for j, p := range pts {
			if steps && j > 0 { // hold the previous value until this tick
				fmt.Fprintf(&pl, "%.1f,%.1f ", x(p.T), v(pts[j-1]))
			}
			fmt.Fprintf(&pl, "%.1f,%.1f ", x(p.T), v(p))
		}
		fmt.Fprintf(b, `<polyline class="%s" fill="none" stroke="%s" %s points="%s"/>`+"\n", class, colour, extra, pl.String())
	}
	// Capacity is a shaded area, behind the lines: load above it is
	// overload, and the replica line, which it follows, stays visible.
	var area strings.Builder
	fmt.Fprintf(&area, "%.1f,%.1f ", x(pts[0].T), bottom)
	for j, p := range pts {
		if j > 0 {
			fmt.Fprintf(&area, "%.1f,%.1f ", x(p.T), yRPS(pts[j-1].Capacity))
		}
		fmt.Fprintf(&area, "%.1f,%.1f ", x(p.T), yRPS(p.Capacity))
	}
	fmt.Fprintf(&area, "%.1f,%.1f", x(pts[len(pts)-1].T), bottom)
	fmt.Fprintf(b, `<polygon class="capacity" fill="%s" fill-opacity="0.15" stroke="none" points="%s"/>`+"\n", colCapacity, area.String())
	line("load", colLoad, `stroke-width="1.5"`, func(p Point) float64 { return yRPS(p.RPS) }, false)
	line("failed", colFailed, `stroke-width="1.5"`, func(p Point) float64 { return yRPS(p.Failed) }, false)
	line("replicas", colReplicas, `stroke-width="2"`, func(p Point) float64 { return yRep(float64(p.Ready)) }, true)

	// A decision is a marker above the plot at its time: up or down for a
	// scale against the count it found, a diamond for the other actions,
	// grey when validation refused it. Hover shows the whole decision.
	for _, d := range ds {
		t := d.Time.Sub(start).Seconds()
		xx, yy := x(math.Min(math.Max(t, tMin), tMax)), top-4
		kind, colour := "other", "#555"
		shape := fmt.Sprintf("M%.1f,%.1f l5,-5 l5,5 l-5,5 z", xx-5, yy-5)
		if d.Action == "scale" {
			if d.Value >= float64(desiredBefore(pts, t)) {
				kind, colour, shape = "up", "#2ca02c", fmt.Sprintf("M%.1f,%.1f l5,-9 l5,9 z", xx-5, yy)
			} else {
				kind, colour, shape = "down", "#9467bd", fmt.Sprintf("M%.1f,%.1f l5,9 l5,-9 z", xx-5, yy-9)
			}
		}
		if d.Rejected != "" {
			kind, colour = "rejected "+kind, "#aaa"
		}
		fmt.Fprintf(b, `<path class="decision %s" d="%s" fill="%s"><title>%s</title></path>`+"\n", kind, shape, colour, escape(timelineLine(start, d)))
	}
}

// legend names each line and marker, in one row.
func legend(b *strings.Builder, x, y float64) {
	fmt.Fprintf(b, `<g class="legend">`+"\n")
	for _, it := range []struct{ colour, label string }{
		{colLoad, "offered load (req/s)"}, {colCapacity, "capacity (req/s, shaded)"},
		{colFailed, "failed (req/s)"}, {colReplicas, "ready replicas (right axis)"},
	} {
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/>`+"\n", x, y-4, x+22, y-4, it.colour)
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", x+28, y, it.label)
		x += 38 + 7.2*float64(len(it.label))
	}
	fmt.Fprintf(b, `<path d="M%.0f,%.0f l5,-9 l5,9 z" fill="#2ca02c"/><path d="M%.0f,%.0f l5,9 l5,-9 z" fill="#9467bd"/>`+"\n", x, y, x+14, y-9)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f">scale up / down (hover for the decision)</text>`+"\n", x+32, y)
	b.WriteString("</g>\n")
}

// desiredBefore is the replica count asked for before the tick at t, which
// a decision at t changes.
func desiredBefore(pts []Point, t float64) int {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].T >= t })
	return pts[max(i-1, 0)].Desired
}

// niceAxis is a round step (1, 2 or 5 times a power of ten) cutting max
// into at most about five parts, and the axis top, a multiple of it.
func niceAxis(max float64) (step, top float64) {
	raw := max / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	return step, math.Ceil(max/step-1e-9) * step
}

// timeStep is the round step, in seconds, that leaves at most 12 ticks.
func timeStep(span float64) float64 {
	for _, s := range []float64{10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200} {
		if span/s <= 12 {
			return s
		}
	}
	return 86400
}

// clock is the time of day at offset sec: HH:MM, with seconds when ticks
// are less than a minute apart, and the weekday at midnight.
func clock(start time.Time, sec, step float64) string {
	t := start.Add(time.Duration(sec * float64(time.Second)))
	switch {
	case step < 60:
		return t.Format("15:04:05")
	case t.Hour() == 0 && t.Minute() == 0 && sec > 0:
		return t.Format("Mon 15:04")
	}
	return t.Format("15:04")
}

// number prints an axis value without trailing zeros.
func number(v float64) string { return fmt.Sprintf("%g", math.Round(v*1000)/1000) }

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
