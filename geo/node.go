// Package geo sends each client to the node with the lowest expected
// latency: it estimates round trips from those measured between metros
// (package latency) and corrects them with the ones measured to the client,
// adds a penalty for load, ranks the fleet, and steers HTTP clients by
// redirect, Alt-Svc or proxy. Package geodns answers DNS with the
// same ranking.
package geo

import (
	"net/netip"
	"time"
)

// Node is one PoP as the router sees it.
type Node struct {
	ID        string       `json:"id"`
	Region    string       `json:"region,omitempty"`
	Lat       float64      `json:"lat"`
	Lon       float64      `json:"lon"`
	PublicURL string       `json:"url,omitempty"`   // where clients reach it, e.g. https://tyo.example.net
	Addrs     []netip.Addr `json:"addrs,omitempty"` // what GeoDNS hands out for it
	Alive     bool         `json:"alive"`
	Draining  bool         `json:"draining,omitempty"`
	InFlight  int64        `json:"in_flight"`
	Capacity  int          `json:"capacity,omitempty"` // requests in flight it can hold; 0 = unknown
	// RTTFromSelf is the estimated round trip from the deciding node to
	// this one (the mesh's network coordinates); 0 means unknown.
	RTTFromSelf time.Duration `json:"-"`
}

// Fleet is the router's view of the cluster. The edge adapts the mesh (or a
// static node list from config) to it. Nodes may or may not include Self;
// the router only reads the returned slice, so it may be shared.
type Fleet interface {
	Self() Node
	Nodes() []Node
}
