// Package guestconfig decodes the example transforms' JSON configs
// strictly: a misspelt key ("network" for "networks") would otherwise
// leave a deny list, a mask or a rewrite empty without a word, and a
// member given twice ("keys" and "Keys") would keep the last. It is not
// part of the SDK, so a transform that reads no JSON does not carry
// encoding/json.
package guestconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"perigee/modules/sdk"
)

// Decode reads raw, one JSON value whose objects have only the fields v
// names, each once, into v. An empty config leaves v as it is.
func Decode(raw []byte, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	if err := givenOnce(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the config's JSON value")
	}
	return nil
}

// givenOnce refuses an object with a member named twice, names compared
// as encoding/json matches them to fields: case folded, so that "Keys"
// (or "\u212aeys", a Kelvin sign) is "keys" again, and the decoder would
// keep whichever came last.
func givenOnce(raw []byte) error {
	type frame struct {
		names   map[string]bool // nil for an array
		wantKey bool
	}
	var open []frame
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(open) > 0 {
			top = &open[len(open)-1]
		}
		switch tok {
		case json.Delim('{'):
			open = append(open, frame{names: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			open = append(open, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			open = open[:len(open)-1]
			if len(open) > 0 {
				open[len(open)-1].wantKey = true // the container was a member's value
			}
			continue
		}
		if top == nil || top.names == nil {
			continue // a value in an array, or the whole config
		}
		if top.wantKey {
			name := tok.(string)
			folded := strings.ToUpper(strings.ToLower(name))
			if top.names[folded] {
				return fmt.Errorf("member %q given twice in one object (names match without regard to case)", name)
			}
			top.names[folded] = true
		}
		top.wantKey = !top.wantKey
	}
}

// HeaderName checks a header name a config gives for field, a token (RFC
// 9110 5.1), and returns it, or def when none is given. A name no request
// carries would refuse every request, or trap each one that sets it.
func HeaderName(field, name, def string) (string, error) {
	if name == "" {
		return def, nil
	}
	if !sdk.ValidHeaderName(name) {
		return "", fmt.Errorf("%s: %q is no header name (a token of letters, digits and !#$%%&'*+-.^_`|~)", field, name)
	}
	return name, nil
}
