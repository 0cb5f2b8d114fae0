package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"perigee/files"
	"perigee/units"
)

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded development config that `make run` serves.
func Default() (*Config, error) { return Parse("(embedded default)", defaultYAML) }

// What the files a config is or names may hold at most: a path naming a
// FIFO or a device, or a huge file, is refused rather than read for good.
const (
	maxConfigBytes = 16 << 20
	// MaxModuleBytes bounds a Wasm module file.
	MaxModuleBytes = 256 << 20
)

// Load reads, decodes and validates the config file at path.
func Load(path string) (*Config, error) {
	b, err := files.Read(path, maxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes and validates a config; name labels errors. Every error it
// returns reads "name:line: what is wrong", one per line.
func Parse(name string, b []byte) (*Config, error) {
	c, v, err := decode(name, b)
	if err != nil {
		return nil, err
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// decode reads what it can of b and validates it: a key of the wrong type
// or an unknown one does not stop the checks of the rest, so one run shows
// every problem. Only a document that is not YAML at all stops it.
func decode(name string, b []byte) (*Config, *validator, error) {
	root, err := units.Document(b)
	if err != nil {
		return nil, nil, positioned(name, err)
	}
	misfits, nullKeys := units.Unsaid(root)
	if len(misfits) > 0 {
		return nil, nil, positioned(name, &yaml.TypeError{Errors: misfits})
	}
	v := &validator{file: name, root: root}
	if len(nullKeys) > 0 {
		v.errs = positioned(name, &yaml.TypeError{Errors: nullKeys}).(*Error).Lines
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	c := &Config{}
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		// A key defined twice stops the decoder before the mapping it is
		// in, so the checks of the rest would only report what is missing.
		var te *yaml.TypeError
		if !errors.As(err, &te) || slices.ContainsFunc(te.Errors, func(m string) bool { return strings.Contains(m, "already defined") }) {
			return nil, nil, positioned(name, err)
		}
		v.errs = append(v.errs, positioned(name, err).(*Error).Lines...)
	}
	c.Path, c.root = name, root
	c.setDefaults()
	c.validate(v)
	return c, v, nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// positioned rewrites the YAML library's "line N: msg" errors as "file:N: msg".
func positioned(file string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimSpace(m)
		if g := yamlLine.FindStringSubmatch(m); g != nil {
			line, _ := strconv.Atoi(g[1])
			if parserProblems[g[2]] {
				line++
			}
			out = append(out, fmt.Sprintf("%s:%d: %s", file, line, tidy(g[2])))
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s", file, strings.TrimPrefix(m, "yaml: ")))
	}
	return &Error{Lines: out}
}

// parserProblems are yaml.v3's parser (not scanner) errors, whose line it
// reports counting from 0: that of the block the problem is in.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// tidy makes the decoder's Go-flavoured messages read in the config's terms.
func tidy(m string) string {
	if i := strings.Index(m, " not found in type "); i >= 0 && strings.HasPrefix(m, "field ") {
		return "unknown key " + strconv.Quote(strings.TrimPrefix(m[:i], "field "))
	}
	return m
}

// Error carries every problem found, each as "file:line: what".
type Error struct{ Lines []string }

func (e *Error) Error() string { return strings.Join(e.Lines, "\n") }

// validator collects semantic errors with the line of the offending key.
type validator struct {
	file string
	root *yaml.Node
	errs []string
}

// at reports a problem at the node reached by path (map keys and sequence
// indexes); it falls back to the nearest ancestor that exists.
func (v *validator) at(path []any, format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf("%s:%d: %s", v.file, v.line(path), fmt.Sprintf(format, args...)))
}

func (v *validator) line(path []any) int {
	n := v.root
	if n == nil || len(n.Content) == 0 {
		return 1
	}
	n = n.Content[0]
	line := n.Line
	for _, step := range path {
		next, at := child(n, step)
		if next == nil {
			break
		}
		n, line = next, at
	}
	return line
}

// child steps one level down and returns the node and the line to report:
// a key's own line for map entries, so a block is named where it starts.
func child(n *yaml.Node, step any) (*yaml.Node, int) {
	switch s := step.(type) {
	case string:
		if n.Kind != yaml.MappingNode {
			return nil, 0
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == s {
				return n.Content[i+1], n.Content[i].Line
			}
		}
	case int:
		if n.Kind == yaml.SequenceNode && s < len(n.Content) {
			return n.Content[s], n.Content[s].Line
		}
	}
	return nil, 0
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return &Error{Lines: v.errs}
}

func p(path ...any) []any { return path }
