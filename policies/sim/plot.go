package sim

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Plot draws, per service, offered load (left axis) and ready replicas
// (right axis) over time as an SVG.
func Plot(w io.Writer, res Result) error {
	names := make([]string, 0, len(res.Series))
	for n := range res.Series {
		names = append(names, n)
	}
	sort.Strings(names)
	const width, panel, left, right, top, bottom = 900.0, 260.0, 60.0, 50.0, 30.0, 40.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, panel*float64(len(names)))
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	for i, name := range names {
		pts := res.Series[name]
		y0 := float64(i) * panel
		plotW, plotH := width-left-right, panel-top-bottom
		tMin, tMax := pts[0].T, pts[len(pts)-1].T
		if tMax == tMin {
			tMax = tMin + 1
		}
		maxRPS, maxRep := 1.0, 1.0
		for _, p := range pts {
			maxRPS = math.Max(maxRPS, p.RPS)
			maxRep = math.Max(maxRep, float64(p.Ready))
		}
		maxRep = math.Ceil(maxRep * 1.1)
		x := func(t float64) float64 { return left + (t-tMin)/(tMax-tMin)*plotW }
		yRPS := func(v float64) float64 { return y0 + top + plotH - v/(maxRPS*1.1)*plotH }
		yRep := func(v float64) float64 { return y0 + top + plotH - v/maxRep*plotH }
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-weight="bold">%s: offered load (blue, rps) and ready replicas (orange)</text>`+"\n", left, y0+18, escape(name))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", left, y0+top, plotW, plotH)
		var load, reps strings.Builder
		for j, p := range pts {
			fmt.Fprintf(&load, "%.1f,%.1f ", x(p.T), yRPS(p.RPS))
			if j > 0 { // steps: hold the previous count until this tick
				fmt.Fprintf(&reps, "%.1f,%.1f ", x(p.T), yRep(float64(pts[j-1].Ready)))
			}
			fmt.Fprintf(&reps, "%.1f,%.1f ", x(p.T), yRep(float64(p.Ready)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="%s"/>`+"\n", load.String())
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#ff7f0e" stroke-width="2" points="%s"/>`+"\n", reps.String())
		for k := 0; k <= 4; k++ {
			f := float64(k) / 4
			yy := y0 + top + plotH - f*plotH
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end" fill="#1f77b4">%.0f</text>`+"\n", left-5, yy+4, f*maxRPS*1.1)
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#ff7f0e">%.1f</text>`+"\n", width-right+5, yy+4, f*maxRep)
			t := tMin + f*(tMax-tMin)
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x(t), y0+top+plotH+16, clock(t))
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func clock(sec float64) string {
	s := int(sec)
	if s >= 3600 {
		return fmt.Sprintf("%dh%02d", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dm%02d", s/60, s%60)
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
