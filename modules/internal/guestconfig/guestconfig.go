// Package guestconfig decodes the example transforms' JSON configs
// strictly: a misspelt key ("network" for "networks") would otherwise
// leave a deny list, a mask or a rewrite empty without a word. It is not
// part of the SDK, so a transform that reads no JSON does not carry
// encoding/json.
package guestconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// Decode reads raw, one JSON value whose objects have only the fields v
// names, into v. An empty config leaves v as it is.
func Decode(raw []byte, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
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
