package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/gateway/config"
)

const (
	testIssuer   = "https://issuer.example"
	testAudience = "mcpgate"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// testKeys are generated once per test binary (RSA generation is slow).
type testKeys struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func getKeys(tb testing.TB) testKeys {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		if keys.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keys.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keys.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, keys.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
	return keys
}

// writeFile writes content to name in dir and returns the path.
func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// writeJWKS writes a JWKS holding jwks and returns its path.
func writeJWKS(tb testing.TB, dir string, jwks ...jose.JSONWebKey) string {
	tb.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: jwks})
	if err != nil {
		tb.Fatal(err)
	}
	return writeFile(tb, dir, "jwks.json", string(b))
}

func pubJWK(key crypto.PublicKey, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
}

// fixture is an Authenticator with every source configured, plus the clear
// static tokens it accepts.
type fixture struct {
	a      *Authenticator
	keys   testKeys
	static map[string]string // token -> subject
	cfg    config.Auth
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	k := getKeys(tb)
	dir := tb.TempDir()
	f := &fixture{keys: k, static: map[string]string{}}
	var lines strings.Builder
	lines.WriteString("# static tokens\n\n")
	for _, sub := range []string{"alice", "bob"} {
		tok, err := GenerateToken()
		if err != nil {
			tb.Fatal(err)
		}
		f.static[tok] = sub
		lines.WriteString(HashToken(tok) + " " + sub + "\n")
	}
	f.cfg = config.Auth{
		StaticTokensFile: writeFile(tb, dir, "tokens.txt", lines.String()),
		JWT: config.JWT{
			HS256SecretFile: writeFile(tb, dir, "jwt.key", string(testSecret)+"\n"),
			JWKSFile: writeJWKS(tb, dir,
				pubJWK(&k.rsa.PublicKey, "rsa1", "RS256"),
				pubJWK(&k.ec.PublicKey, "ec1", "ES256"),
				pubJWK(k.ed.Public(), "ed1", "")),
			Issuer:   testIssuer,
			Audience: testAudience,
		},
	}
	a, err := New(f.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	f.a = a
	return f
}

// goodClaims are valid claims for the fixture.
func goodClaims(sub string) jwt.RegisteredClaims {
	now := time.Now()
	return jwt.RegisteredClaims{
		Subject:   sub,
		Issuer:    testIssuer,
		Audience:  jwt.ClaimStrings{testAudience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}
}

// sign signs claims with method and key, setting kid when non-empty.
func sign(tb testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
	tb.Helper()
	t := jwt.NewWithClaims(method, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// assertNoLeak fails if err's text contains the token, any dot-separated part
// of it longer than 8 bytes, or the test secret.
func assertNoLeak(tb testing.TB, token string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if token != "" && strings.Contains(msg, token) {
		tb.Errorf("error %q contains the token", msg)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) > 8 && strings.Contains(msg, part) {
			tb.Errorf("error %q contains token part %q", msg, part)
		}
	}
	if strings.Contains(msg, string(testSecret)) {
		tb.Errorf("error %q contains the secret", msg)
	}
}
