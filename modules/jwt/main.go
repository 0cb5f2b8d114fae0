//go:build wasip1

// Command jwt verifies HS256 JSON Web Tokens from the Authorization header
// ("Bearer <token>"). Its config is JSON:
//
//	{"secret": "s3cret", "issuer": "https://id.example", "subject_header": "x-jwt-sub"}
//
// The signature, exp and nbf are always checked; iss when issuer is set.
// A valid token's subject is passed upstream in subject_header (default
// x-jwt-sub); any value the client sent there is dropped.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"perigee/modules/sdk"
)

type config struct {
	Secret        string `json:"secret"`
	Issuer        string `json:"issuer"`
	SubjectHeader string `json:"subject_header"`
}

type claims struct {
	Sub string   `json:"sub"`
	Iss string   `json:"iss"`
	Exp *float64 `json:"exp"`
	Nbf *float64 `json:"nbf"`
}

var b64 = base64.RawURLEncoding

func verify(token string, cfg config, now time.Time) (claims, error) {
	var c claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("malformed token")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if raw, err := b64.DecodeString(parts[0]); err != nil || json.Unmarshal(raw, &header) != nil {
		return c, errors.New("malformed header")
	}
	if header.Alg != "HS256" {
		return c, errors.New("algorithm is not HS256")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return c, errors.New("malformed signature")
	}
	mac := hmac.New(sha256.New, []byte(cfg.Secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return c, errors.New("bad signature")
	}
	if raw, err := b64.DecodeString(parts[1]); err != nil || json.Unmarshal(raw, &c) != nil {
		return c, errors.New("malformed claims")
	}
	unix := float64(now.Unix())
	switch {
	case c.Exp == nil || unix >= *c.Exp:
		return c, errors.New("token expired")
	case c.Nbf != nil && unix < *c.Nbf:
		return c, errors.New("token not yet valid")
	case cfg.Issuer != "" && c.Iss != cfg.Issuer:
		return c, errors.New("wrong issuer")
	}
	return c, nil
}

func init() {
	var cfg config
	if err := json.Unmarshal(sdk.Config(), &cfg); err != nil || cfg.Secret == "" {
		sdk.Log(sdk.LevelError, "jwt: config needs a secret; every request will be refused")
	}
	if cfg.SubjectHeader == "" {
		cfg.SubjectHeader = "x-jwt-sub"
	}
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		req.Headers().Del(cfg.SubjectHeader)
		auth, _ := req.Headers().Get("authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		var c claims
		err := errors.New("no bearer token")
		if ok && cfg.Secret != "" {
			c, err = verify(strings.TrimSpace(token), cfg, time.Now())
		}
		if err != nil {
			resp.SetStatusCode(401)
			resp.Headers().Set("www-authenticate", `Bearer error="invalid_token"`)
			resp.Body().WriteString(err.Error() + "\n")
			return sdk.Stop
		}
		req.Headers().Set(cfg.SubjectHeader, c.Sub)
		return sdk.Continue
	})
}

func main() {}
