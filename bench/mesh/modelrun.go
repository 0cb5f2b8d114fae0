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

// runModel simulates the current and the proposed protocol: first the
// fleets the real benchmark runs (one region over loopback, no keyring),
// to check the model against it, then 500 PoPs in 50 regions.
func runModel(sizes []int, trials int, seed uint64) (string, error) {
	// The benchmark's nodes: its ids and figures, started seconds apart.
	bench := func(id, region string, gen uint64) (mesh.WireMessages, error) {
		return mesh.SampleMessages(mesh.NodeMeta{ID: "n" + id[len(id)-3:], Region: "eu"}, gen, benchSample(1000), nil)
	}
	// A fleet's: public URLs, locations, versions, started over a month.
	fleet := func(id, region string, gen uint64) (mesh.WireMessages, error) {
		return mesh.SampleMessages(mesh.NodeMeta{ID: id, Region: region, PublicURL: "https://" + id + ".example.net", Lat: 50.1, Lon: 8.7, Capacity: 8, Version: "1.0.0"},
			gen, benchSample(1000), nil)
	}
	sample, err := fleet("pop-0000", "region-00", uint64(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()))
	if err != nil {
		return "", err
	}
	base := func(nodes, regions int, p model.Protocol) model.Config {
		return model.Config{Nodes: nodes, Regions: regions, Protocol: p, Warmup: 20 * time.Second, Duration: 120 * time.Second,
			Trials: trials, Seed: seed, Memberlist: memberlist.DefaultLANConfig(), Mesh: model.LAN(), Encode: fleet, GenSpread: 30 * 24 * time.Hour,
			Proposal: model.DefaultProposal()}
	}
	var list []scenario
	for _, n := range sizes {
		c := base(n, 1, model.Current)
		c.DelayIn, c.Encode, c.GenSpread = 50*time.Microsecond, bench, 10*time.Second
		list = append(list, scenario{fmt.Sprintf("check: %d nodes, 1 region, loopback, no keyring (as the real run)", n), c, true})
	}
	// The proposal as first set, and with summaries relayed more and sent
	// more often, which buys the fleet-wide tail with bytes.
	wider := model.DefaultProposal()
	wider.SummaryMult, wider.SummaryMinGap = 3, 4*time.Second
	variants := []struct {
		p    model.Protocol
		prop model.Proposal
		name string
	}{
		{model.Current, model.DefaultProposal(), "current"},
		{model.Proposed, model.DefaultProposal(), "proposed (summaries mult 2, at most every 5s)"},
		{model.Proposed, wider, "proposed (summaries mult 3, at most every 4s)"},
	}
	for _, v := range variants {
		for _, churn := range []time.Duration{0, 20 * time.Second} {
			for _, loss := range []float64{0, 0.01} {
				if v.p == model.Current && loss > 0 {
					continue // loss changes little where relays are many
				}
				c := base(500, 50, v.p)
				c.Proposal = v.prop
				if v.p == model.Proposed {
					c.Memberlist.PushPullInterval = time.Minute // the proposal's setting
				}
				c.DelayIn, c.DelayOut, c.Encrypted, c.Churn, c.Loss = time.Millisecond, 40*time.Millisecond, true, churn, loss
				busy := fmt.Sprintf("steady (only the %d timed changes)", trials)
				if churn > 0 {
					busy = fmt.Sprintf("busy (each node's load moves every %v on average)", churn)
				}
				list = append(list, scenario{fmt.Sprintf("fleet: 500 nodes, 50 regions, %s, keyring, %.0f%% loss, %s", v.name, loss*100, busy), c, false})
			}
		}
	}
	var out strings.Builder
	lan := memberlist.DefaultLANConfig()
	p := model.DefaultProposal()
	fmt.Fprintf(&out, "# mesh model (bench/mesh/model): discrete-event simulation, memberlist %v gossip to %d, probe %v, UDP %d B, push/pull %v (scaled with N), its TransmitLimitedQueue\n",
		lan.GossipInterval, lan.GossipNodes, lan.ProbeInterval, lan.UDPBufferSize, lan.PushPullInterval)
	fmt.Fprintf(&out, "# messages from mesh's encoders (a fleet node's: report %d B, beat %d B, want %d B, answer %d B, metadata %d B), LZW-compressed per packet as memberlist does\n",
		len(sample.Report), len(sample.Beat), len(sample.Want), len(sample.Answer), len(sample.Meta))
	fmt.Fprintf(&out, "# current: reports relay mult %d, beats %d, every %v; proposed: direct to the region (changed reports twice), summaries mult %d, on change at most every %v, summary beats every %v, roster and coordinates every %v, push/pull 60 s (scaled)\n",
		model.LAN().RelayMult, model.LAN().BeatMult, model.LAN().Refresh, p.SummaryMult, p.SummaryMinGap, p.SummaryRefresh, p.CoordRefresh)
	fmt.Fprintf(&out, "# 20 s warm-up, 120 s measured, %d timed load changes, seed %d; delays 1 ms within a region, 40 ms between (fleet)\n", trials, seed)
	fmt.Fprintf(&out, "# check runs: bytes from a second run without load changes, as the real benchmark measures them\n# command: go run ./bench/mesh %s\n\n", strings.Join(os.Args[1:], " "))
	for _, sc := range list {
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
	return fmt.Sprintf(`  change seen by its whole region: p50=%s p99=%s max=%s (n=%d, never=%d)
  change seen by the whole fleet:  p50=%s p99=%s max=%s (n=%d, never=%d); per node p99=%s
  bytes/node/s: udp=%.0f tcp=%.0f total=%.0f
  stale checks: region %.4f%%, fleet %.4f%%; leader changes %d; longest broadcast queue %d
`, q(r.RegionSeen, .5), q(r.RegionSeen, .99), q(r.RegionSeen, 1), len(r.RegionSeen), r.RegionMissed,
		q(r.FleetSeen, .5), q(r.FleetSeen, .99), q(r.FleetSeen, 1), len(r.FleetSeen), r.FleetMissed, q(r.FleetEach, .99),
		r.UDP, r.TCP, r.UDP+r.TCP, 100*r.StaleRegion, 100*r.StaleFleet, r.LeaderChanges, r.MaxQueue)
}
