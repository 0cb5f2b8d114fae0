//go:build wasip1

// Command addheader sets and removes headers on the request going upstream
// and on the response going back. Its config is one rule a line:
//
//	x-edge: fra-1     set x-edge to fra-1
//	-server           remove server
package main

import (
	"strings"

	"perigee/modules/sdk"
)

type rule struct {
	name, value string
	remove      bool
}

func parse(cfg string) []rule {
	var rules []rule
	for _, line := range strings.Split(cfg, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "-"):
			rules = append(rules, rule{name: strings.TrimSpace(line[1:]), remove: true})
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				sdk.Log(sdk.LevelWarn, "addheader: ignoring rule without a colon: "+line)
				continue
			}
			rules = append(rules, rule{name: strings.TrimSpace(name), value: strings.TrimSpace(value)})
		}
	}
	return rules
}

func apply(h sdk.Header, rules []rule) {
	for _, r := range rules {
		if r.remove {
			h.Del(r.name)
		} else {
			h.Set(r.name, r.value)
		}
	}
}

func init() {
	rules := parse(string(sdk.Config()))
	for _, r := range rules {
		if r.remove {
			// Removing a header from the upstream response needs it held
			// back until the response handler has run.
			sdk.Enable(sdk.BufferResponse)
			break
		}
	}
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		apply(req.Headers(), rules)
		// Response headers set now are merged into the upstream response;
		// removals must wait until it has come back.
		for _, r := range rules {
			if !r.remove {
				resp.Headers().Set(r.name, r.value)
			}
		}
		return sdk.Continue
	})
	sdk.HandleResponse(func(_ uint32, _ sdk.Request, resp sdk.Response, _ bool) {
		for _, r := range rules {
			if r.remove {
				resp.Headers().Del(r.name)
			}
		}
	})
}

func main() {}
