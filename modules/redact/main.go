//go:build wasip1

// Command redact masks fields of JSON response bodies, at any depth. Its
// config is JSON:
//
//	{"fields": ["password", "ssn"], "mask": "[redacted]"}
//
// A response is JSON when its media type, in any case, names json
// (application/json, application/problem+json, application/x-ndjson);
// others pass unchanged. It asks the backend for an unencoded, whole body
// (no Accept-Encoding, no Range), and answers 502 rather than pass on a
// response it cannot read whole: a 206, an encoded JSON one, or a JSON one
// that does not parse as a sequence of JSON values.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"perigee/modules/internal/guestconfig"
	"perigee/modules/sdk"
)

type config struct {
	Fields []string `json:"fields"`
	Mask   string   `json:"mask"`
}

func redact(v any, fields map[string]bool, mask string) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if fields[strings.ToLower(k)] {
				t[k] = mask
			} else {
				t[k] = redact(val, fields, mask)
			}
		}
	case []any:
		for i, val := range t {
			t[i] = redact(val, fields, mask)
		}
	}
	return v
}

// redactAll masks every value of body, one JSON value or a sequence of them
// (NDJSON). A single value is written back alone, a sequence one value a
// line. Numbers keep their digits.
func redactAll(body []byte, fields map[string]bool, mask string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var out [][]byte
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(redact(doc, fields, mask))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(out) == 1 {
		return out[0], nil
	}
	return append(bytes.Join(out, []byte("\n")), '\n'), nil
}

func isJSON(contentType string) bool {
	mediaType, _, _ := strings.Cut(contentType, ";")
	return strings.Contains(strings.ToLower(mediaType), "json")
}

// refuse replaces a response the guest cannot mask: passing it on would
// hand the client the fields unmasked. Why goes to the log, not the client.
func refuse(resp sdk.Response, why string) {
	sdk.Log(sdk.LevelWarn, "redact: "+why)
	resp.SetStatusCode(502)
	resp.Headers().Del("content-encoding")
	resp.Headers().Set("content-type", "text/plain; charset=utf-8")
	resp.Body().WriteString("the backend's response could not be redacted\n")
}

func init() {
	var cfg config
	if err := guestconfig.Decode(sdk.Config(), &cfg); err != nil {
		sdk.RefuseToLoad("redact: config is not JSON of fields and mask: " + err.Error())
	}
	if cfg.Mask == "" {
		cfg.Mask = "[redacted]"
	}
	fields := map[string]bool{}
	for _, f := range cfg.Fields {
		fields[strings.ToLower(f)] = true
	}
	// Hold every response back so its body can be rewritten.
	sdk.Enable(sdk.BufferResponse)
	sdk.HandleRequest(func(req sdk.Request, _ sdk.Response) sdk.Action {
		// A client's Accept-Encoding: gzip would have the backend send a
		// body the guest cannot read; a Range, a slice of the document
		// ("hunter2" parses on its own) or a multipart/byteranges of them.
		for _, h := range []string{"accept-encoding", "range", "if-range"} {
			req.Headers().Del(h)
		}
		return sdk.Continue
	})
	sdk.HandleResponse(func(_ uint32, _ sdk.Request, resp sdk.Response, isError bool) {
		if isError {
			return
		}
		if resp.StatusCode() == 206 {
			refuse(resp, "the backend sent a range the guest did not ask for")
			return
		}
		ct, _ := resp.Headers().Get("content-type")
		if !isJSON(ct) {
			return
		}
		body := resp.Body().ReadAll()
		if len(body) == 0 {
			return // HEAD, 204, 304: nothing to mask
		}
		if enc, _ := resp.Headers().Get("content-encoding"); enc != "" && !strings.EqualFold(strings.TrimSpace(enc), "identity") {
			refuse(resp, "the backend sent a JSON body with content-encoding "+enc)
			return
		}
		out, err := redactAll(body, fields, cfg.Mask)
		if err != nil {
			refuse(resp, "the backend sent a JSON body that does not parse: "+err.Error())
			return
		}
		resp.Body().Write(out)
	})
}

func main() {}
