package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/gateway/config"
)

func TestJWKS(t *testing.T) {
	f := newFixture(t)
	k := f.keys
	c := goodClaims("erin")
	runCases(t, f.a, []verifyCase{
		{name: "rs256", token: sign(t, jwt.SigningMethodRS256, k.rsa, "rsa1", c), subject: "erin"},
		{name: "es256", token: sign(t, jwt.SigningMethodES256, k.ec, "ec1", c), subject: "erin"},
		{name: "eddsa", token: sign(t, jwt.SigningMethodEdDSA, k.ed, "ed1", c), subject: "erin"},
		// kid selects the key: the right alg under another key's kid fails.
		{name: "rs256-under-ec-kid", token: sign(t, jwt.SigningMethodRS256, k.rsa, "ec1", c), reason: "bad_algorithm"},
		{name: "eddsa-under-rsa-kid", token: sign(t, jwt.SigningMethodEdDSA, k.ed, "rsa1", c), reason: "bad_algorithm"},
		{name: "other-rsa-key", token: sign(t, jwt.SigningMethodRS256, k.rsa2, "rsa1", c), reason: "bad_signature"},
		{name: "unknown-kid", token: sign(t, jwt.SigningMethodRS256, k.rsa, "nope", c), reason: "unknown_key"},
		{name: "missing-kid-several-keys", token: sign(t, jwt.SigningMethodRS256, k.rsa, "", c), reason: "unknown_key"},
		{name: "numeric-kid", token: signRSAHeader(t, k.rsa, map[string]any{"kid": 7}, c), reason: "malformed"},
		{name: "rs384", token: sign(t, jwt.SigningMethodRS384, k.rsa, "rsa1", c), reason: "bad_algorithm"},
		{name: "ps256", token: sign(t, jwt.SigningMethodPS256, k.rsa, "rsa1", c), reason: "bad_algorithm"},
		{name: "expired", token: sign(t, jwt.SigningMethodES256, k.ec, "ec1", expired(c)), reason: "expired"},
		// An embedded jwk header must never be trusted.
		{name: "embedded-jwk", token: signRSAHeader(t, k.rsa2, map[string]any{"kid": "rsa1", "jwk": publicJWKMap(t, k.rsa2)}, c), reason: "bad_signature"},
	})
}

func expired(c jwt.RegisteredClaims) jwt.RegisteredClaims {
	c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	return c
}

func signRSAHeader(t *testing.T, key *rsa.PrivateKey, hdr map[string]any, c jwt.Claims) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func publicJWKMap(t *testing.T, key *rsa.PrivateKey) map[string]any {
	b, err := json.Marshal(pubJWK(&key.PublicKey, "rsa1", "RS256"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAlgConfusion: an HS256 token whose HMAC key is the RSA public key (the
// classic RS256->HS256 confusion) must fail, whether or not an HS256 secret is
// configured.
func TestAlgConfusion(t *testing.T) {
	f := newFixture(t)
	pemKey := rsaPublicPEM(t, f)
	forged := sign(t, jwt.SigningMethodHS256, pemKey, "rsa1", goodClaims("mallory"))
	forgedNoKid := sign(t, jwt.SigningMethodHS256, pemKey, "", goodClaims("mallory"))
	forgedN := sign(t, jwt.SigningMethodHS256, f.keys.rsa.PublicKey.N.Bytes(), "rsa1", goodClaims("mallory"))

	// With an HS256 secret: HS256 is only ever checked against that secret.
	runCases(t, f.a, []verifyCase{
		{name: "with-secret", token: forged, reason: "bad_signature"},
		{name: "with-secret-no-kid", token: forgedNoKid, reason: "bad_signature"},
		{name: "with-secret-modulus", token: forgedN, reason: "bad_signature"},
	})

	// JWKS only: HS256 is not an accepted algorithm at all.
	cfg := f.cfg
	cfg.JWT.HS256SecretFile = ""
	cfg.StaticTokensFile = ""
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, a, []verifyCase{
		{name: "jwks-only", token: forged, reason: "bad_algorithm"},
		{name: "jwks-only-no-kid", token: forgedNoKid, reason: "bad_algorithm"},
		{name: "jwks-only-rs256-ok", token: sign(t, jwt.SigningMethodRS256, f.keys.rsa, "rsa1", goodClaims("erin")), subject: "erin"},
	})
}

func TestJWKSSoleKey(t *testing.T) {
	k := getKeys(t)
	dir := t.TempDir()
	a, err := New(config.Auth{JWT: config.JWT{JWKSFile: writeJWKS(t, dir, pubJWK(&k.ec.PublicKey, "", ""))}})
	if err != nil {
		t.Fatal(err)
	}
	c := goodClaims("frank")
	c.Issuer, c.Audience = "", nil // none configured: not checked
	runCases(t, a, []verifyCase{
		{name: "no-kid", token: sign(t, jwt.SigningMethodES256, k.ec, "", c), subject: "frank"},
		{name: "wrong-kid", token: sign(t, jwt.SigningMethodES256, k.ec, "x", c), reason: "unknown_key"},
		{name: "hs256", token: sign(t, jwt.SigningMethodHS256, testSecret, "", c), reason: "bad_algorithm"},
		{name: "rs256", token: sign(t, jwt.SigningMethodRS256, k.rsa, "", c), reason: "bad_algorithm"},
	})
}

func TestJWKSErrors(t *testing.T) {
	k := getKeys(t)
	dir := t.TempDir()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		keys []jose.JSONWebKey
		want string
	}{
		{"private", []jose.JSONWebKey{pubJWK(k.rsa, "a", "RS256")}, "public keys only"},
		{"symmetric", []jose.JSONWebKey{pubJWK(testSecret, "a", "HS256")}, "public keys only"},
		{"small-rsa", []jose.JSONWebKey{pubJWK(&small.PublicKey, "a", "")}, "1024 bits"},
		{"p384", []jose.JSONWebKey{pubJWK(&p384.PublicKey, "a", "")}, "P-384"},
		{"alg-mismatch", []jose.JSONWebKey{pubJWK(&k.rsa.PublicKey, "a", "ES256")}, `alg "ES256"`},
		{"dup-kid", []jose.JSONWebKey{pubJWK(&k.rsa.PublicKey, "a", ""), pubJWK(&k.ec.PublicKey, "a", "")}, "duplicate kid"},
		{"missing-kid", []jose.JSONWebKey{pubJWK(&k.rsa.PublicKey, "a", ""), pubJWK(&k.ec.PublicKey, "", "")}, "no kid"},
		{"empty", nil, "no signature keys"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeJWKS(t, dir, c.keys...)
			_, err := New(config.Auth{JWT: config.JWT{JWKSFile: p}})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("New error = %v, want one naming %s and containing %q", err, p, c.want)
			}
			if strings.Contains(err.Error(), k.rsa.D.String()) || strings.Contains(err.Error(), string(testSecret)) {
				t.Fatalf("error %q contains key material", err)
			}
		})
	}
	// Keys for encryption are skipped, not errors.
	enc := pubJWK(&k.rsa2.PublicKey, "enc1", "")
	enc.Use = "enc"
	p := writeJWKS(t, dir, pubJWK(&k.ec.PublicKey, "ec1", ""), enc)
	a, err := New(config.Auth{JWT: config.JWT{JWKSFile: p}})
	if err != nil {
		t.Fatal(err)
	}
	c := goodClaims("gina")
	c.Issuer, c.Audience = "", nil
	runCases(t, a, []verifyCase{
		{name: "enc-key-unusable", token: sign(t, jwt.SigningMethodRS256, k.rsa2, "enc1", c), reason: "bad_algorithm"},
		{name: "sig-key-no-kid", token: sign(t, jwt.SigningMethodES256, k.ec, "", c), subject: "gina"},
	})
}
