//go:build !wasip1

package modules_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// signJWT signs header and claims, as written, with HS256 and secret.
func signJWT(secret, header, claims string) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(head))
	return head + "." + enc.EncodeToString(mac.Sum(nil))
}

// sendAuth sends each of values as its own Authorization field.
func sendAuth(t *testing.T, url string, values ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header["Authorization"] = values
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// Tokens a hostile client or a careless issuer can send, each signed with
// the right secret so that only the rule under test can refuse it.
func TestJWTHostileTokens(t *testing.T) {
	t.Parallel()
	url := example(t, "jwt", map[string]any{"secret": "s3cret", "issuer": "perigee", "audience": "api"})
	exp := time.Now().Add(time.Hour).Unix()
	const head = `{"alg":"HS256","typ":"JWT"}`
	claims := func(extra string) string {
		return fmt.Sprintf(`{"sub":"ann","iss":"perigee","aud":"api","exp":%d%s}`, exp, extra)
	}
	valid := signJWT("s3cret", head, claims(""))
	// The last character of a 32-byte signature carries 2 spare bits: a
	// lenient decoder reads "…Q" and "…R" as the same signature.
	sig := valid[strings.LastIndex(valid, ".")+1:]
	last := strings.IndexByte(b64url, sig[len(sig)-1])
	nonCanonical := valid[:len(valid)-1] + string(b64url[last|1])
	if last|1 == last {
		nonCanonical = valid[:len(valid)-1] + string(b64url[last&^1])
	}
	cases := map[string]struct {
		token string
		want  int
	}{
		"valid":                     {valid, 200},
		"audience in a list":        {signJWT("s3cret", head, fmt.Sprintf(`{"sub":"ann","iss":"perigee","aud":["web","api"],"exp":%d}`, exp)), 200},
		"no audience":               {signJWT("s3cret", head, fmt.Sprintf(`{"sub":"ann","iss":"perigee","exp":%d}`, exp)), 401},
		"another audience":          {signJWT("s3cret", head, fmt.Sprintf(`{"sub":"ann","iss":"perigee","aud":["web"],"exp":%d}`, exp)), 401},
		"crit":                      {signJWT("s3cret", `{"alg":"HS256","crit":["exp"]}`, claims("")), 401},
		"alg none":                  {signJWT("s3cret", `{"alg":"none"}`, claims("")), 401},
		"alg in another case":       {signJWT("s3cret", `{"alg":"hs256"}`, claims("")), 401},
		"duplicate alg":             {signJWT("s3cret", `{"alg":"none","alg":"HS256"}`, claims("")), 401},
		"duplicate sub":             {signJWT("s3cret", head, claims(`,"sub":"admin"`)), 401},
		"sub in another case":       {signJWT("s3cret", head, claims(`,"SUB":"admin"`)), 200},
		"exp only in another case":  {signJWT("s3cret", head, `{"sub":"ann","iss":"perigee","aud":"api","EXP":9999999999}`), 401},
		"sub with a control byte":   {signJWT("s3cret", head, fmt.Sprintf(`{"sub":"ann\r\nx-admin: 1","iss":"perigee","aud":"api","exp":%d}`, exp)), 401},
		"sub not a string":          {signJWT("s3cret", head, fmt.Sprintf(`{"sub":7,"iss":"perigee","aud":"api","exp":%d}`, exp)), 401},
		"non-canonical signature":   {nonCanonical, 401},
		"padded signature":          {valid + "=", 401},
		"standard base64 alphabet":  {stdAlphabet(t, "s3cret", head, claims), 401},
		"nested header, bad secret": {signJWT("guess", strings.Repeat("[", 10000), claims("")), 401},
	}
	for name, c := range cases {
		resp := sendAuth(t, url+"/", "Bearer "+c.token)
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d", name, resp.StatusCode, c.want)
		}
		if resp.StatusCode == 200 && resp.Header.Get("x-upstream-x-jwt-sub") != "ann" {
			t.Errorf("%s: upstream subject %q, want ann", name, resp.Header.Get("x-upstream-x-jwt-sub"))
		}
	}
}

// stdAlphabet is a token signed right whose signature is written in the
// standard base64 alphabet, which has '+' or '/' where base64url has '-'
// or '_'.
func stdAlphabet(t *testing.T, secret, head string, claims func(extra string) string) string {
	for jti := range 100 {
		token := signJWT(secret, head, claims(fmt.Sprintf(`,"jti":"%d"`, jti)))
		dot := strings.LastIndex(token, ".")
		sig, err := base64.RawURLEncoding.DecodeString(token[dot+1:])
		if err != nil {
			t.Fatal(err)
		}
		if std := base64.RawStdEncoding.EncodeToString(sig); std != token[dot+1:] {
			return token[:dot+1] + std
		}
	}
	t.Fatal("no signature with '-' or '_' in 100 tries")
	return ""
}

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// The scheme is case-insensitive (RFC 9110 §11.1); a second Authorization
// field is refused, since a backend may read another field than the guest
// verified.
func TestJWTAuthorizationFields(t *testing.T) {
	t.Parallel()
	url := example(t, "jwt", map[string]any{"secret": "s3cret"})
	valid := signJWT("s3cret", `{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"ann","exp":%d}`, time.Now().Add(time.Hour).Unix()))
	forged := signJWT("guess", `{"alg":"HS256"}`, `{"sub":"admin","exp":9999999999}`)
	cases := map[string]struct {
		values []string
		want   int
	}{
		"Bearer":                {[]string{"Bearer " + valid}, 200},
		"bearer":                {[]string{"bearer " + valid}, 200},
		"BEARER, two spaces":    {[]string{"BEARER  " + valid}, 200},
		"a second field":        {[]string{"Bearer " + valid, "Bearer " + forged}, 401},
		"a second, equal field": {[]string{"Bearer " + valid, "Bearer " + valid}, 401},
		"two tokens in one":     {[]string{"Bearer " + valid + ", Bearer " + forged}, 401},
		"another scheme":        {[]string{"Basic " + valid}, 401},
		"no space":              {[]string{"Bearer" + valid}, 401},
	}
	for name, c := range cases {
		if resp := sendAuth(t, url+"/", c.values...); resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d", name, resp.StatusCode, c.want)
		}
	}
}

// leeway, in seconds, allows for the issuer's clock: exp and nbf are
// judged that much more loosely, and a token issued (iat) further than
// that in the future is refused. Unset, it is 60 s, as Envoy's.
func TestJWTClockSkew(t *testing.T) {
	t.Parallel()
	// Built first: a cold build takes seconds, which would move "now".
	strict := example(t, "jwt", map[string]any{"secret": "s3cret", "leeway": 0})
	tolerant := example(t, "jwt", map[string]any{"secret": "s3cret"})
	now := time.Now().Unix()
	token := func(claims string, args ...any) string {
		return signJWT("s3cret", `{"alg":"HS256"}`, fmt.Sprintf(claims, args...))
	}
	cases := map[string]struct {
		token             string
		strict, tolerated int
	}{
		"expired 10s ago":     {token(`{"sub":"ann","exp":%d}`, now-10), 401, 200},
		"expired 10m ago":     {token(`{"sub":"ann","exp":%d}`, now-600), 401, 401},
		"valid in 10s":        {token(`{"sub":"ann","exp":%d,"nbf":%d}`, now+3600, now+10), 401, 200},
		"issued in 10s":       {token(`{"sub":"ann","exp":%d,"iat":%d}`, now+3600, now+10), 401, 200},
		"issued in 10m":       {token(`{"sub":"ann","exp":%d,"iat":%d}`, now+3600, now+600), 401, 401},
		"issued a minute ago": {token(`{"sub":"ann","exp":%d,"iat":%d}`, now+3600, now-60), 200, 200},
		"iat not a number":    {token(`{"sub":"ann","exp":%d,"iat":"yesterday"}`, now+3600), 401, 401},
	}
	for name, c := range cases {
		if resp := sendAuth(t, strict+"/", "Bearer "+c.token); resp.StatusCode != c.strict {
			t.Errorf("%s, no leeway: status %d, want %d", name, resp.StatusCode, c.strict)
		}
		if resp := sendAuth(t, tolerant+"/", "Bearer "+c.token); resp.StatusCode != c.tolerated {
			t.Errorf("%s, the default leeway: status %d, want %d", name, resp.StatusCode, c.tolerated)
		}
	}
	refusesToLoad(t, "jwt", map[string]any{"secret": "s3cret", "leeway": -1}, "leeway")
	refusesToLoad(t, "jwt", map[string]any{"secret": "s3cret", "subject_header": ":authority"}, `subject_header: ":authority" is no header name`)
	refusesToLoad(t, "jwt", map[string]any{"secret": "s3cret", "leeway": 86400}, "leeway")
}
