//go:build wasip1

// Command rewrite rewrites request paths by prefix before they go upstream.
// Its config is a JSON list of rules, the first match wins:
//
//	[{"from": "/api/v1/", "to": "/v1/"}, {"from": "/old/", "to": "/new/"}]
//
// A config that is not such a list, or a from or to that does not start
// with /, stops the module from loading.
package main

import (
	"fmt"
	"strings"

	"perigee/modules/internal/guestconfig"
	"perigee/modules/sdk"
)

type rule struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func init() {
	// A rule that cannot apply stops the module from loading, rather than
	// send the paths it names upstream unrewritten.
	var rules []rule
	if err := guestconfig.Decode(sdk.Config(), &rules); err != nil {
		sdk.RefuseToLoad("rewrite: config is not a JSON list of {from, to}: " + err.Error())
	}
	for _, r := range rules {
		if !strings.HasPrefix(r.From, "/") || !strings.HasPrefix(r.To, "/") {
			sdk.RefuseToLoad(fmt.Sprintf("rewrite: rule {from: %s, to: %s}: both must be paths, starting with /", r.From, r.To))
		}
	}
	sdk.HandleRequest(func(req sdk.Request, _ sdk.Response) sdk.Action {
		uri := req.URI()
		for _, r := range rules {
			if rest, ok := strings.CutPrefix(uri, r.From); ok {
				req.SetURI(r.To + rest)
				break
			}
		}
		return sdk.Continue
	})
}

func main() {}
