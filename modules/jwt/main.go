//go:build wasip1

// Command jwt verifies HS256 JSON Web Tokens from the Authorization header
// ("Bearer <token>", the scheme in any case). Its config is JSON:
//
//	{"secret": "s3cret", "issuer": "https://id.example", "audience": "api",
//	 "leeway": 30, "subject_header": "x-jwt-sub"}
//
// The signature is checked first, before any of the token is parsed; then
// alg (HS256 exactly), exp (required), nbf and iat (not in the future),
// each within leeway seconds (0 to 300, default 60 as Envoy's) for the
// issuer's clock;
// iss when issuer is set; aud (a string or a list holding it) when
// audience is set. A token is refused
// when its header has crit (no extension is understood), when its header or
// claims repeat a member (parsers that keep the first and the last would
// read different claims), when its base64url is not canonical, and when sub
// is not a string or holds a control byte. A request with more than one
// Authorization field is refused: the backend might read another than the
// one verified. A valid token's subject is passed upstream in
// subject_header (default x-jwt-sub); any value the client sent there is
// dropped.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"perigee/modules/internal/guestconfig"
	"perigee/modules/sdk"
)

type config struct {
	Secret        string `json:"secret"`
	Issuer        string `json:"issuer"`
	Audience      string `json:"audience"`
	SubjectHeader string `json:"subject_header"`
	// Leeway is how many seconds the issuer's clock may be off; unset,
	// defaultLeeway.
	Leeway *int `json:"leeway"`
}

// defaultLeeway is Envoy's clock_skew_seconds: an identity provider's
// clock a second ahead would otherwise have fresh tokens refused as issued
// in the future, and a second behind, refused as expired at the edge.
const defaultLeeway = 60

// maxLeeway bounds leeway: past a few minutes it is no longer skew but a
// longer life for every token.
const maxLeeway = 300

// claims are the registered claims the guest reads; members are matched by
// their exact names, as RFC 7519 §4 has them.
type claims struct {
	Sub string
	Iss string
	Aud []string
	Exp *float64
	Nbf *float64
	Iat *float64
}

// b64 refuses padding, the standard alphabet and spare bits that are not
// zero, so each token has one spelling.
var b64 = base64.RawURLEncoding.Strict()

// members decodes one JSON object into its members by exact name, refusing
// a repeated one and anything after the object.
func members(raw []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := tok.(string)
		if !ok {
			return nil, errors.New("a member name is not a string")
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("member %q repeated", name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		m[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("data after the object")
	}
	return m, nil
}

// member decodes m's member name into v when present.
func member(m map[string]json.RawMessage, name string, v any) error {
	raw, ok := m[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func parseClaims(raw []byte) (claims, error) {
	var c claims
	m, err := members(raw)
	if err != nil {
		return c, err
	}
	var aud json.RawMessage
	err = errors.Join(member(m, "sub", &c.Sub), member(m, "iss", &c.Iss), member(m, "exp", &c.Exp),
		member(m, "nbf", &c.Nbf), member(m, "iat", &c.Iat), member(m, "aud", &aud))
	if err != nil {
		return c, err
	}
	if aud != nil {
		var one string
		if json.Unmarshal(aud, &one) == nil {
			c.Aud = []string{one}
		} else if err := json.Unmarshal(aud, &c.Aud); err != nil {
			return c, errors.New("aud is neither a string nor a list of strings")
		}
	}
	for _, b := range []byte(c.Sub) {
		if b < 0x20 || b == 0x7f {
			return c, errors.New("sub holds a control byte")
		}
	}
	return c, nil
}

func verify(token string, cfg config, now time.Time) (claims, error) {
	var c claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("malformed token")
	}
	// Nothing a client sent is parsed before its signature is known good.
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return c, errors.New("malformed signature")
	}
	mac := hmac.New(sha256.New, []byte(cfg.Secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return c, errors.New("bad signature")
	}
	raw, err := b64.DecodeString(parts[0])
	if err != nil {
		return c, errors.New("malformed header")
	}
	header, err := members(raw)
	if err != nil {
		return c, errors.New("malformed header")
	}
	var alg string
	if member(header, "alg", &alg) != nil || alg != "HS256" {
		return c, errors.New("algorithm is not HS256")
	}
	if _, ok := header["crit"]; ok {
		return c, errors.New("critical header extensions are not supported")
	}
	if raw, err = b64.DecodeString(parts[1]); err != nil {
		return c, errors.New("malformed claims")
	}
	if c, err = parseClaims(raw); err != nil {
		return c, errors.New("malformed claims")
	}
	unix, leeway := float64(now.Unix()), float64(*cfg.Leeway)
	switch {
	case c.Exp == nil || unix >= *c.Exp+leeway:
		return c, errors.New("token expired")
	case c.Nbf != nil && unix < *c.Nbf-leeway:
		return c, errors.New("token not yet valid")
	case c.Iat != nil && *c.Iat > unix+leeway:
		return c, errors.New("token issued in the future")
	case cfg.Issuer != "" && c.Iss != cfg.Issuer:
		return c, errors.New("wrong issuer")
	case cfg.Audience != "" && !slices.Contains(c.Aud, cfg.Audience):
		return c, errors.New("wrong audience")
	}
	return c, nil
}

// bearerToken is the token of the request's one Authorization field.
func bearerToken(h sdk.Header) (string, error) {
	fields := h.Values("authorization")
	switch {
	case len(fields) == 0:
		return "", errors.New("no bearer token")
	case len(fields) > 1:
		return "", errors.New("more than one authorization field")
	}
	scheme, token, ok := strings.Cut(fields[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", errors.New("no bearer token")
	}
	return strings.TrimSpace(token), nil
}

func init() {
	var cfg config
	if err := guestconfig.Decode(sdk.Config(), &cfg); err != nil {
		sdk.RefuseToLoad("jwt: config is not JSON of secret, issuer, audience, leeway and subject_header: " + err.Error())
	}
	if cfg.Secret == "" {
		sdk.RefuseToLoad("jwt: config needs a secret")
	}
	if cfg.Leeway == nil {
		cfg.Leeway = new(int)
		*cfg.Leeway = defaultLeeway
	}
	if *cfg.Leeway < 0 || *cfg.Leeway > maxLeeway {
		sdk.RefuseToLoad(fmt.Sprintf("jwt: leeway %d is not 0..%d seconds", *cfg.Leeway, maxLeeway))
	}
	var err error
	if cfg.SubjectHeader, err = guestconfig.HeaderName("subject_header", cfg.SubjectHeader, "x-jwt-sub"); err != nil {
		sdk.RefuseToLoad("jwt: " + err.Error())
	}
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		req.Headers().Del(cfg.SubjectHeader)
		token, err := bearerToken(req.Headers())
		var c claims
		if err == nil {
			c, err = verify(token, cfg, time.Now())
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
