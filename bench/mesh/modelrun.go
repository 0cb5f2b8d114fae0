package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/bench/mesh/model"
	"perigee/mesh"
)

// scenario is one modelled fleet and what it stands for.
type scenario struct {
	what string
	cfg  model.Config
	// steady: bytes are measured in a second run without load changes,
	// as the real benchmark measures them.
	steady bool
}

// runModel simulates the mesh as built (model.Proposed) and as it was
// before issue 13 (model.Current): first the fleets the real benchmark
// runs (regions of ten over loopback, no keyring), to check the model
// against it, then 500 PoPs in 50 regions.
func runModel(sizes []int, trials int, seed uint64, match string) (string, error) {
	// The benchmark's nodes: its ids and figures, started seconds apart.
	bench := func(id, region string, gen uint64) (mesh.WireMessages, error) {
		return mesh.SampleMessages(mesh.NodeMeta{ID: "n" + id[len(id)-3:], Region: region}, gen, benchSample(1000), nil)
	}
	// A fleet's: public URLs, locations, versions, started over a month.
	fleet := func(id, region string, gen uint64) (mesh.WireMessages, error) {
		return mesh.SampleMessages(mesh.NodeMeta{ID: id, Region: region, PublicURL: "https://" + id + ".example.net", Lat: 50.1, Lon: 8.7, Capacity: 8, Version: "1.0.0"},
			gen, benchSample(1000), nil)
	}
	summarise := func(region, sender string, gen uint64, members []string) ([]byte, []byte, []byte) {
		return mesh.SampleSummary(region, sender, gen, members, 10)
	}
	sample, err := fleet("pop-0000", "region-00", uint64(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()))
	if err != nil {
		return "", err
	}
	base := func(nodes, regions int, p model.Protocol) model.Config {
		ml := memberlist.DefaultLANConfig()
		if p == model.Proposed {
			ml.PushPullInterval = time.Minute // mesh's setting since issue 13
		}
		return model.Config{Nodes: nodes, Regions: regions, Protocol: p, Warmup: 20 * time.Second, Duration: 120 * time.Second,
			Trials: trials, Seed: seed, Memberlist: ml, Mesh: model.LAN(), Encode: fleet, Summarise: summarise,
			GenSpread: 30 * 24 * time.Hour, Proposal: model.DefaultProposal()}
	}
	var list []scenario
	for _, n := range sizes {
		c := base(n, max(n/benchRegionSize, 1), model.Proposed)
		c.DelayIn, c.DelayOut, c.Encode, c.GenSpread = benchDelayIn, benchDelayOut, bench, 10*time.Second
		list = append(list, scenario{fmt.Sprintf("check: %d nodes, %d regions, loopback with %v/%v delays, no keyring (as the real run)", n, c.Regions, benchDelayIn, benchDelayOut), c, true})
	}
	for _, p := range []model.Protocol{model.Current, model.Proposed} {
		for _, churn := range []time.Duration{0, 20 * time.Second} {
			for _, loss := range []float64{0, 0.01} {
				if p == model.Current && loss > 0 {
					continue // loss changes little where relays are many
				}
				c := base(500, 50, p)
				c.DelayIn, c.DelayOut, c.Encrypted, c.Churn, c.Loss = time.Millisecond, 40*time.Millisecond, true, churn, loss
				busy := fmt.Sprintf("steady (only the %d timed changes)", trials)
				if churn > 0 {
					busy = fmt.Sprintf("busy (each node's load moves every %v on average)", churn)
				}
				what := "as built (issue 13)"
				if p == model.Current {
					what = "before issue 13"
				}
				list = append(list, scenario{fmt.Sprintf("fleet: 500 nodes, 50 regions, %s, keyring, %.0f%% loss, %s", what, loss*100, busy), c, false})
			}
		}
	}
	var out strings.Builder
	lan := memberlist.DefaultLANConfig()
	p := model.DefaultProposal()
	sum, compact, beat := summarise("region-00", "pop-0000", 1<<60, []string{"pop-0000", "pop-0050", "pop-0100", "pop-0150", "pop-0200", "pop-0250", "pop-0300", "pop-0350", "pop-0400", "pop-0450"})
	fmt.Fprintf(&out, "# mesh model (bench/mesh/model): discrete-event simulation, memberlist %v gossip to %d, probe %v, UDP %d B, push/pull %v (built: 1m; scaled with N), its TransmitLimitedQueue\n",
		lan.GossipInterval, lan.GossipNodes, lan.ProbeInterval, lan.UDPBufferSize, lan.PushPullInterval)
	fmt.Fprintf(&out, "# messages from mesh's encoders (a fleet node's: report %d B, beat %d B, want %d B, answer %d B, metadata %d B, lease ask %d B, grant %d B; a region of 10: summary %d B, compact %d B, summary beat %d B), LZW-compressed per packet as memberlist does\n",
		len(sample.Report), len(sample.Beat), len(sample.Want), len(sample.Answer), len(sample.Meta), len(sample.LeaseAsk), len(sample.LeaseGrant), len(sum), len(compact), len(beat))
	fmt.Fprintf(&out, "# before issue 13: reports relay mult %d, beats %d, every %v; as built: direct to the region (changed reports twice), summaries mult %d, on change at most every %v, summary beats every %v, lease rounds every %v\n",
		model.LAN().RelayMult, model.LAN().BeatMult, model.LAN().Refresh, p.SummaryMult, p.SummaryMinGap, p.SummaryRefresh, p.Lease/4)
	fmt.Fprintf(&out, "# 20 s warm-up, 120 s measured, %d timed load changes, seed %d; delays 1 ms within a region, 40 ms between (fleet)\n", trials, seed)
	fmt.Fprintf(&out, "# check runs: bytes from a second run without load changes, as the real benchmark measures them\n# command: go run ./bench/mesh %s\n\n", strings.Join(os.Args[1:], " "))
	for _, sc := range list {
		if !strings.Contains(sc.what, match) {
			continue
		}
		start := time.Now()
		res, err := model.Run(sc.cfg)
		if err != nil {
			return "", err
		}
		if sc.steady {
			quiet := sc.cfg
			quiet.Trials = 0
			q, err := model.Run(quiet)
			if err != nil {
				return "", err
			}
			res.UDP, res.TCP = q.UDP, q.TCP
		}
		fmt.Fprintf(&out, "%s\n%s  (simulated in %v)\n\n", sc.what, formatModel(res), time.Since(start).Round(time.Millisecond))
		fmt.Print(sc.what, "\n", formatModel(res), "\n")
	}
	return out.String(), nil
}

func formatModel(r model.Result) string {
	q := func(d []time.Duration, p float64) string {
		if len(d) == 0 {
			return "-"
		}
		return quantile(d, p).Round(time.Millisecond).String()
	}
	var by []string
	for _, class := range []string{model.ClassSummary, model.ClassSumBeat, model.ClassReport, model.ClassBeat, model.ClassLease, model.ClassMemberlist, model.ClassFraming, model.ClassRepair, model.ClassPushPull} {
		by = append(by, fmt.Sprintf("%s %.0f", class, r.ByClass[class]))
	}
	return fmt.Sprintf(`  change seen by its whole region: p50=%s p99=%s max=%s (n=%d, never=%d)
  change seen by the whole fleet:  p50=%s p99=%s max=%s (n=%d, never=%d); per node p99=%s
  bytes/node/s: udp=%.0f tcp=%.0f total=%.0f
    by class: %s
  stale checks: region %.4f%%, fleet %.4f%%; leader changes %d; longest broadcast queue %d
`, q(r.RegionSeen, .5), q(r.RegionSeen, .99), q(r.RegionSeen, 1), len(r.RegionSeen), r.RegionMissed,
		q(r.FleetSeen, .5), q(r.FleetSeen, .99), q(r.FleetSeen, 1), len(r.FleetSeen), r.FleetMissed, q(r.FleetEach, .99),
		r.UDP, r.TCP, r.UDP+r.TCP, strings.Join(by, ", "), 100*r.StaleRegion, 100*r.StaleFleet, r.LeaderChanges, r.MaxQueue)
}
