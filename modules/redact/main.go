//go:build wasip1

// Command redact masks fields of JSON response bodies, at any depth. Its
// config is JSON:
//
//	{"fields": ["password", "ssn"], "mask": "[redacted]"}
//
// Responses whose content type is not JSON pass unchanged.
package main

import (
	"encoding/json"
	"strings"

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

func init() {
	var cfg config
	if err := json.Unmarshal(sdk.Config(), &cfg); err != nil {
		sdk.Log(sdk.LevelError, "redact: config is not JSON: "+err.Error())
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
	sdk.HandleResponse(func(_ uint32, _ sdk.Request, resp sdk.Response, isError bool) {
		ct, _ := resp.Headers().Get("content-type")
		if isError || !strings.Contains(ct, "json") {
			return
		}
		var doc any
		if json.Unmarshal(resp.Body().ReadAll(), &doc) != nil {
			return // not valid JSON after all: leave it alone
		}
		out, err := json.Marshal(redact(doc, fields, cfg.Mask))
		if err != nil {
			return
		}
		resp.Body().Write(out)
	})
}

func main() {}
