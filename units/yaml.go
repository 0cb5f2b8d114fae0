package units

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "250ms", "2s", "1m". Every part's
// settings use it, so a bad value reads the same wherever it is.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML reads a Go duration string; negative durations are refused.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: bad duration %q (want e.g. 250ms, 2s, 1m)", n.Line, n.Value)}}
	}
	if v < 0 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: negative duration %q", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string, as it is configured.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// ByteSize is a size written as 512, "64KiB", "16MiB", "1GiB" or "1GB".
type ByteSize int64

// UnmarshalYAML reads a byte count with an optional unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseBytes(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: bad size %q (want e.g. 512, 64KiB, 16MiB)", n.Line, n.Value)}}
	}
	*b = ByteSize(v)
	return nil
}

// Document parses b as a config's one YAML document and returns its root.
// The decoders read the first document only, so what a later one holds
// after a "---" (unknown keys and all) would be ignored: it is an error,
// "line N: …" at its start. A lone trailing "---" is no document.
func Document(b []byte) (*yaml.Node, error) {
	docs := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := docs.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for {
		var next yaml.Node
		err := docs.Decode(&next)
		switch {
		case errors.Is(err, io.EOF):
			return &root, nil
		case err != nil:
			return nil, err
		case !emptyDocument(&next):
			return nil, fmt.Errorf("line %d: a second YAML document, which would be ignored: the config is one document", next.Line)
		}
	}
}

// emptyDocument is one a lone "---" starts, with nothing after it.
func emptyDocument(doc *yaml.Node) bool {
	if len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null" && n.Value == ""
}

// Unsaid finds, each as "line N: …", what yaml.v3's decoder would stop at
// without a line: a scalar whose explicit tag its value does not fit
// (`!!int many`, `!!float 1e400`, `!!binary` that is no base64); and what
// it would drop without a word, KnownFields or not: a mapping key that is
// null (`~`, `null`, or none), which names no field or entry and is
// skipped with all beneath it.
func Unsaid(root *yaml.Node) (misfits, nullKeys []string) {
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode && n.Style&yaml.TaggedStyle != 0 && strings.HasPrefix(n.Tag, "!!") {
			var v any
			if err := n.Decode(&v); err != nil {
				misfits = append(misfits, fmt.Sprintf("line %d: %s", n.Line, strings.TrimPrefix(err.Error(), "yaml: ")))
			}
		}
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 && c.ShortTag() == "!!null" {
				nullKeys = append(nullKeys, fmt.Sprintf("line %d: a key that is null (~, null or none) names nothing", c.Line))
			}
			walk(c)
		}
	}
	walk(root)
	return misfits, nullKeys
}
