package geo

import (
	"fmt"
	"strings"
	"time"
)

// why puts an explained decision in a sentence or three: where the client
// is, what the chosen node is expected to cost and from what, and why it
// won. Only Explain calls it; Decide stays lean.
func why(d Decision) string {
	var b strings.Builder
	switch {
	case !d.Location.Known:
		fmt.Fprintf(&b, "The database cannot place %s (%s), so it is taken to be next to this node. ", d.Client, d.Location.Source)
	default:
		where := d.Location.Country
		if d.Location.City != "" {
			where = d.Location.City + ", " + where
		}
		fmt.Fprintf(&b, "%s is in %s", d.Client, where)
		if d.Location.AccuracyKm > 0 {
			fmt.Fprintf(&b, " (to within %d km)", d.Location.AccuracyKm)
		}
		if p := d.Placement; p != nil && len(p.Metros) > 0 {
			parts := make([]string, 0, len(p.Metros))
			for _, m := range p.Metros {
				if m.Weight >= 0.05 {
					parts = append(parts, fmt.Sprintf("%s %.0f%%", m.City, 100*m.Weight))
				}
			}
			fmt.Fprintf(&b, "; the model reaches it through %s, %.0f km of last mile away", strings.Join(parts, ", "), p.LastMileKm)
		}
		b.WriteString(". ")
	}
	i := byIDPos(d.Candidates, d.Best.ID)
	if i < 0 {
		return b.String()
	}
	best := d.Candidates[i]
	fmt.Fprintf(&b, "%s: %s expected", best.Node, msText(best.Expected))
	fmt.Fprintf(&b, " (model %s", msText(best.ModelRTT))
	if best.Samples > 0 {
		fmt.Fprintf(&b, ", measured %s over %d samples for this %s, blended to %s", msText(best.MeasuredRTT), best.Samples, best.Scope, msText(best.RTT))
	}
	if best.LoadPenalty > 0 {
		fmt.Fprintf(&b, ", load +%s", msText(best.LoadPenalty))
	}
	b.WriteString(")")
	for _, c := range d.Candidates {
		if c.Node != best.Node && c.Excluded == "" {
			fmt.Fprintf(&b, "; next %s at %s", c.Node, msText(c.Expected))
			break
		}
	}
	b.WriteString(". ")
	switch d.Reason {
	case ReasonLowestLatency:
		b.WriteString("Chosen: the lowest expected latency.")
	case ReasonMeasured:
		fmt.Fprintf(&b, "Chosen: measured round trips overrule the model, which alone would pick %s.", modelBest(d.Candidates))
	case ReasonSticky:
		fmt.Fprintf(&b, "Kept: this network's previous answer is within the margin of the fastest, %s.", d.Candidates[0].Node)
	case ReasonWithinMargin:
		fmt.Fprintf(&b, "Served here: this node is within the margin of the fastest, %s, less than a redirect would cost.", d.Candidates[0].Node)
	case ReasonWouldBounce:
		fmt.Fprintf(&b, "Served here: %s does not hold this node's measurements and, by the model, would send the client back.", d.Candidates[0].Node)
	case ReasonUnknownClient:
		b.WriteString("Chosen: the lowest expected latency from here.")
	case ReasonNoEligible:
		b.WriteString("Every node is excluded, so this node serves.")
	}
	var out []string
	for _, c := range d.Candidates {
		if c.Excluded != "" {
			out = append(out, c.Node+" "+c.Excluded)
		}
	}
	if len(out) > 0 {
		fmt.Fprintf(&b, " Excluded: %s.", strings.Join(out, ", "))
	}
	return b.String()
}

func msText(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
