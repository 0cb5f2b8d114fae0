//go:build wasip1

// Command addheader sets and removes headers on the request going upstream
// and on the response going back. Its config is one rule a line:
//
//	x-edge: fra-1     set x-edge to fra-1
//	-server           remove server
//
// A response header set this way goes out with the upstream response, and
// one the backend sends too keeps the backend's value; a removal of the
// name on an earlier line makes the value replace the backend's:
//
//	-x-frame-options
//	x-frame-options: DENY
//
// A line that is no rule (no colon, a name that is not a token, a value
// with a control byte, a Content-Length or Transfer-Encoding to set) stops
// the module from loading.
package main

import (
	"fmt"
	"strings"

	"perigee/modules/sdk"
)

type rule struct {
	name, value string
	remove      bool
	// replaces is set on a value whose name an earlier line removes: it
	// replaces the backend's, which would win over one set before upstream.
	replaces bool
}

// parse reads the rules, or says which line is no rule: a name must be a
// token (RFC 9110 §5.1), a value must hold no control byte but tab.
func parse(cfg string) ([]rule, error) {
	var rules []rule
	for _, line := range strings.Split(cfg, "\n") {
		line = strings.TrimSpace(line)
		var r rule
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "-"):
			r = rule{name: strings.TrimSpace(line[1:]), remove: true}
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("rule %q has no colon", line)
			}
			r = rule{name: strings.TrimSpace(name), value: strings.TrimSpace(value)}
		}
		if !sdk.ValidHeaderName(r.name) {
			return nil, fmt.Errorf("rule %q: %q is not a header name", line, r.name)
		}
		if !r.remove && (strings.EqualFold(r.name, "content-length") || strings.EqualFold(r.name, "transfer-encoding")) {
			return nil, fmt.Errorf("rule %q: the host frames the message; a transform may not set %s", line, r.name)
		}
		if strings.ContainsFunc(r.value, func(c rune) bool { return c < 0x20 && c != '\t' || c == 0x7f }) {
			return nil, fmt.Errorf("rule %q: the value holds a control byte", line)
		}
		for _, earlier := range rules {
			r.replaces = r.replaces || !r.remove && earlier.remove && strings.EqualFold(earlier.name, r.name)
		}
		rules = append(rules, r)
	}
	return rules, nil
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
	rules, err := parse(string(sdk.Config()))
	if err != nil {
		sdk.RefuseToLoad("addheader: " + err.Error())
	}
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
			switch {
			case r.remove:
				resp.Headers().Del(r.name)
			case r.replaces:
				resp.Headers().Set(r.name, r.value)
			}
		}
	})
}

func main() {}
