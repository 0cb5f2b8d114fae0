//go:build wasip1

// Command rewrite rewrites request paths by prefix before they go upstream.
// Its config is a JSON list of rules, the first match wins:
//
//	[{"from": "/api/v1/", "to": "/v1/"}, {"from": "/old/", "to": "/new/"}]
package main

import (
	"encoding/json"
	"strings"

	"perigee/modules/sdk"
)

type rule struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func init() {
	var rules []rule
	if err := json.Unmarshal(sdk.Config(), &rules); err != nil {
		sdk.Log(sdk.LevelError, "rewrite: config is not a JSON list of {from, to}: "+err.Error())
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
