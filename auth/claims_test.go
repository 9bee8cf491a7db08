package auth

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// exp, nbf and iat are NumericDates (RFC 7519 2): JSON numbers. jwt/v5
// decodes them through json.Number, which also takes a string holding a
// number; the gateway refuses that as a malformed token, on every key type.
func TestNumericClaimsOnlyNumbers(t *testing.T) {
	f := newFixture(t)
	now := time.Now().Unix()
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	claims := func(set map[string]any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "dave", "iss": testIssuer, "aud": testAudience,
			"exp": now + 3600, "nbf": now, "iat": now}
		for k, v := range set {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	type row struct {
		name   string
		set    map[string]any
		reason string // "" = accepted
	}
	rows := []row{
		{name: "exp-number", set: map[string]any{"exp": raw("9999999999")}},
		{name: "exp-fraction", set: map[string]any{"exp": raw("9999999999.5")}},
		{name: "exp-exponent", set: map[string]any{"exp": raw("1e10")}},
		{name: "nbf-iat-absent", set: map[string]any{"nbf": nil, "iat": nil}},
		{name: "nbf-null", set: map[string]any{"nbf": raw("null")}},
		{name: "exp-numeric-string", set: map[string]any{"exp": "9999999999"}, reason: "malformed"},
		{name: "exp-numeric-string-spaced", set: map[string]any{"exp": raw(` "9999999999"`)}, reason: "malformed"},
		{name: "nbf-numeric-string", set: map[string]any{"nbf": "0"}, reason: "malformed"},
		{name: "iat-numeric-string", set: map[string]any{"iat": "1700000000"}, reason: "malformed"},
		{name: "exp-bool", set: map[string]any{"exp": true}, reason: "malformed"},
		{name: "exp-object", set: map[string]any{"exp": map[string]int{"n": 1}}, reason: "malformed"},
		{name: "exp-null", set: map[string]any{"exp": raw("null")}, reason: "malformed"},
		{name: "exp-expired-number", set: map[string]any{"exp": raw("1000")}, reason: "expired"},
	}
	keys := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"HS256", jwt.SigningMethodHS256, testSecret, ""},
		{"RS256", jwt.SigningMethodRS256, f.keys.rsa, "rsa1"},
		{"ES256", jwt.SigningMethodES256, f.keys.ec, "ec1"},
		{"EdDSA", jwt.SigningMethodEdDSA, f.keys.ed, "ed1"},
	}
	for _, k := range keys {
		for _, r := range rows {
			t.Run(k.name+"/"+r.name, func(t *testing.T) {
				tok := sign(t, k.method, k.key, k.kid, claims(r.set))
				p, err := f.a.Verify(tok)
				assertNoLeak(t, tok, err)
				if got := Reason(err); got != r.reason {
					t.Fatalf("Reason = %q (err %v), want %q", got, err, r.reason)
				}
				if r.reason == "" && p.Subject != "dave" {
					t.Fatalf("subject %q, want dave", p.Subject)
				}
				if r.name == "exp-number" && p.Expires.Unix() != 9999999999 {
					t.Fatalf("expires %v, want unix 9999999999", p.Expires)
				}
				if r.reason == "malformed" && r.name != "exp-null" && !errors.Is(err, errTimeNotNumber) {
					t.Fatalf("err %v, want the not-a-number detail", err)
				}
			})
		}
	}
}
