package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"

	"github.com/hashicorp/memberlist"
)

// NodeMeta is what a node says about itself when it joins. It travels in
// memberlist's alive messages, so its encoding must fit MetaMaxSize.
type NodeMeta struct {
	ID        string  `json:"id"`
	Region    string  `json:"region"`
	Zone      string  `json:"zone,omitempty"`
	Lat       float64 `json:"lat"`
	Lon       float64 `json:"lon"`
	PublicURL string  `json:"url,omitempty"`
	Capacity  int     `json:"cap,omitempty"` // relative weight, e.g. cores
	Version   string  `json:"ver,omitempty"`
}

// MaxCapacity bounds a node's capacity, and a region summary's sum of
// them (which saturates there): what a summary carries, so that no
// member's metadata makes its region's summary unreadable, and no sum
// over the member table wraps.
const MaxCapacity = 1<<31 - 1

// metaFormat prefixes the encoding so a later layout can be told apart.
const metaFormat = 1

// Validate checks the fields and that the encoding fits.
func (m NodeMeta) Validate() error {
	if err := checkName("id", m.ID); err != nil {
		return err
	}
	if err := checkName("region", m.Region); err != nil {
		return err
	}
	if m.Zone != "" {
		if err := checkName("zone", m.Zone); err != nil {
			return err
		}
	}
	if m.Lat < -90 || m.Lat > 90 || m.Lon < -180 || m.Lon > 180 {
		return fmt.Errorf("node location (%g, %g) is not a latitude and longitude", m.Lat, m.Lon)
	}
	if m.PublicURL != "" {
		u, err := url.Parse(m.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("node public URL %q is not an absolute http(s) URL", m.PublicURL)
		}
	}
	if m.Capacity < 0 || m.Capacity > MaxCapacity {
		return fmt.Errorf("node capacity %d is not in [0, %d]", m.Capacity, MaxCapacity)
	}
	b, err := m.encode(math.MaxUint64) // the longest generation
	if err != nil {
		return err
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("node metadata is %d bytes encoded, memberlist allows %d", len(b), memberlist.MetaMaxSize)
	}
	return nil
}

// checkName allows the characters that are safe in logs, URLs and Lua.
func checkName(field, s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("node %s %q must be 1 to 64 characters", field, s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("node %s %q may hold only letters, digits, '-', '_' and '.'", field, s)
		}
	}
	return nil
}

// wireMeta is NodeMeta as gossiped, with the generation of the node's
// reports. Memberlist orders alive messages by an incarnation number that a
// restarted node raises past its former self's (it refutes its own death),
// so the generation in the latest metadata is that of the running process,
// whatever its clock says; reports of any other generation are its former
// self's. Nodes that send no generation (0) are ordered by the reports'.
type wireMeta struct {
	NodeMeta
	Gen uint64 `json:"gen,omitempty"`
}

func (m NodeMeta) encode(gen uint64) ([]byte, error) {
	b, err := json.Marshal(wireMeta{m, gen})
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	return append([]byte{metaFormat}, b...), nil
}

var errMetaFormat = errors.New("unknown node metadata format")

// decodeMeta reads another node's metadata and report generation; it comes
// from the network, so it is validated like our own.
func decodeMeta(b []byte) (NodeMeta, uint64, error) {
	var m wireMeta
	if len(b) == 0 || b[0] != metaFormat {
		return m.NodeMeta, 0, errMetaFormat
	}
	if err := json.Unmarshal(b[1:], &m); err != nil {
		return m.NodeMeta, 0, fmt.Errorf("decode node metadata: %w", err)
	}
	if err := m.Validate(); err != nil {
		return m.NodeMeta, 0, err
	}
	return m.NodeMeta, m.Gen, nil
}
