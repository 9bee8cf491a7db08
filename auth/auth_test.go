package auth

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/gateway/config"
)

// verifyCase is one token and the outcome Verify must give.
type verifyCase struct {
	name    string
	token   string
	subject string // want success with this subject when reason == ""
	reason  string
}

func runCases(t *testing.T, a *Authenticator, cases []verifyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := a.Verify(c.token)
			assertNoLeak(t, c.token, err)
			if got := Reason(err); got != c.reason {
				t.Fatalf("Reason = %q (err %v), want %q", got, err, c.reason)
			}
			if c.reason == "" && p.Subject != c.subject {
				t.Fatalf("subject = %q, want %q", p.Subject, c.subject)
			}
			if c.reason != "" && p != (Principal{}) {
				t.Fatalf("failed verification returned principal %+v", p)
			}
		})
	}
}

func TestStatic(t *testing.T) {
	f := newFixture(t)
	var cases []verifyCase
	for tok, sub := range f.static {
		cases = append(cases, verifyCase{name: "ok-" + sub, token: tok, subject: sub})
		p, err := f.a.Verify(tok)
		if err != nil || !p.Expires.IsZero() {
			t.Fatalf("static token: %+v, %v; want no expiry", p, err)
		}
	}
	unknown, _ := GenerateToken()
	cases = append(cases,
		verifyCase{name: "unknown", token: unknown, reason: "unknown_token"},
		verifyCase{name: "hash-itself", token: HashToken(unknown), reason: "unknown_token"},
		verifyCase{name: "empty", token: "", reason: "empty"},
		verifyCase{name: "too-long", token: strings.Repeat("a", MaxTokenBytes+1), reason: "malformed"},
		verifyCase{name: "one-dot", token: "abc.def", reason: "unknown_token"},
	)
	for tok := range f.static {
		// A stored hash presented as the token must not match, nor a near miss.
		cases = append(cases,
			verifyCase{name: "presented-hash", token: HashToken(tok), reason: "unknown_token"},
			verifyCase{name: "prefix", token: tok[:len(tok)-1], reason: "unknown_token"})
		break
	}
	runCases(t, f.a, cases)
}

func TestStaticFileErrors(t *testing.T) {
	dir := t.TempDir()
	clear, _ := GenerateToken()
	good := HashToken(clear)
	for _, c := range []struct{ name, content, want string }{
		{"clear-token", "# c\n" + good + " alice\n" + clear + " bob\n", ":3:"},
		{"three-fields", good + " alice extra\n", ":1:"},
		{"one-field", "\n\n" + good + "\n", ":3:"},
		{"bad-hex", strings.Repeat("zz", 32) + " alice\n", ":1:"},
		{"duplicate", good + " alice\n" + good + " bob\n", ":2:"},
		{"control-subject", good + " ali\x01ce\n", ":1:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, dir, c.name+".txt", c.content)
			_, err := New(config.Auth{StaticTokensFile: p})
			if err == nil {
				t.Fatal("New accepted a bad tokens file")
			}
			if !strings.Contains(err.Error(), p+c.want) {
				t.Errorf("error %q does not name %s%s", err, p, c.want)
			}
			if strings.Contains(err.Error(), clear) || strings.Contains(err.Error(), good) {
				t.Errorf("error %q repeats token material", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	short := "0123456789abcdef0123456789abcde" // 31 bytes
	cases := []struct {
		name string
		cfg  config.Auth
		want string
	}{
		{"nothing", config.Auth{}, "no credentials configured"},
		{"empty-tokens-file", config.Auth{StaticTokensFile: writeFile(t, dir, "empty.txt", "# none\n")}, "no credentials"},
		{"missing-tokens-file", config.Auth{StaticTokensFile: dir + "/nope.txt"}, "auth.static_tokens_file"},
		{"missing-secret", config.Auth{JWT: config.JWT{HS256SecretFile: dir + "/nope.key"}}, "auth.jwt.hs256_secret_file"},
		{"short-secret", config.Auth{JWT: config.JWT{HS256SecretFile: writeFile(t, dir, "short.key", short+"\n \n")}}, "need at least 32"},
		{"missing-jwks", config.Auth{JWT: config.JWT{JWKSFile: dir + "/nope.json"}}, "auth.jwt.jwks_file"},
		{"bad-jwks", config.Auth{JWT: config.JWT{JWKSFile: writeFile(t, dir, "bad.json", `{"keys": [`)}}, "auth.jwt.jwks_file"},
		{"extra-token", config.Auth{ExtraTokens: []config.StaticToken{{SHA256Hex: "abc", Subject: "x"}}}, "extra token 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New error = %v, want one containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), short) {
				t.Fatalf("error %q contains the secret", err)
			}
		})
	}
	// The secret is trimmed of trailing whitespace, so exactly 32 bytes plus a
	// newline is fine.
	p := writeFile(t, dir, "ok.key", short+"f\r\n")
	if _, err := New(config.Auth{JWT: config.JWT{HS256SecretFile: p}}); err != nil {
		t.Fatal(err)
	}
}

func TestExtraTokens(t *testing.T) {
	tok, _ := GenerateToken()
	a, err := New(config.Auth{ExtraTokens: []config.StaticToken{{SHA256Hex: HashToken(tok), Subject: "default"}}})
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, a, []verifyCase{
		{name: "ok", token: tok, subject: "default"},
		// No JWT source: a JWT-shaped token is just an unknown static token.
		{name: "jwt-shaped", token: sign(t, jwt.SigningMethodHS256, testSecret, "", goodClaims("x")), reason: "unknown_token"},
	})
}

func TestHS256(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	hs := func(c jwt.Claims) string { return sign(t, jwt.SigningMethodHS256, testSecret, "", c) }
	mod := func(m func(*jwt.RegisteredClaims)) string {
		c := goodClaims("carol")
		m(&c)
		return hs(c)
	}
	good := hs(goodClaims("carol"))
	parts := strings.Split(good, ".")
	otherClaims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(otherClaims), "carol", "admin", 1))) + "." + parts[2]
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims("carol")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, f.a, []verifyCase{
		{name: "ok", token: good, subject: "carol"},
		{name: "ok-aud-list", token: mod(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"other", testAudience} }), subject: "carol"},
		{name: "ok-within-leeway", token: mod(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Second)) }), subject: "carol"},
		{name: "ok-kid-ignored", token: sign(t, jwt.SigningMethodHS256, testSecret, "rsa1", goodClaims("carol")), subject: "carol"},
		{name: "expired", token: mod(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) }), reason: "expired"},
		{name: "nbf-future", token: mod(func(c *jwt.RegisteredClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) }), reason: "not_yet_valid"},
		{name: "iat-future", token: mod(func(c *jwt.RegisteredClaims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Minute)) }), reason: "not_yet_valid"},
		{name: "wrong-iss", token: mod(func(c *jwt.RegisteredClaims) { c.Issuer = "https://evil.example" }), reason: "wrong_issuer"},
		{name: "missing-iss", token: mod(func(c *jwt.RegisteredClaims) { c.Issuer = "" }), reason: "wrong_issuer"},
		{name: "wrong-aud", token: mod(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"other"} }), reason: "wrong_audience"},
		{name: "missing-aud", token: mod(func(c *jwt.RegisteredClaims) { c.Audience = nil }), reason: "wrong_audience"},
		{name: "missing-exp", token: mod(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }), reason: "malformed"},
		{name: "missing-sub", token: mod(func(c *jwt.RegisteredClaims) { c.Subject = "" }), reason: "malformed"},
		{name: "control-sub", token: mod(func(c *jwt.RegisteredClaims) { c.Subject = "a\nb" }), reason: "malformed"},
		{name: "bad-signature", token: sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-32b"), "", goodClaims("carol")), reason: "bad_signature"},
		{name: "tampered", token: tampered, reason: "bad_signature"},
		{name: "alg-none", token: noneTok, reason: "bad_algorithm"},
		{name: "alg-hs384", token: sign(t, jwt.SigningMethodHS384, testSecret, "", goodClaims("carol")), reason: "bad_algorithm"},
		{name: "alg-unknown", token: b64json(`{"alg":"XX999","typ":"JWT"}`) + "." + parts[1] + "." + parts[2], reason: "bad_algorithm"},
		{name: "alg-missing", token: b64json(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2], reason: "bad_algorithm"},
		{name: "crit", token: signHeader(t, map[string]any{"crit": []string{"exp"}}, goodClaims("carol")), reason: "malformed"},
		{name: "garbage", token: "a.b.c", reason: "malformed"},
		{name: "padded", token: parts[0] + "=." + parts[1] + "." + parts[2], reason: "malformed"},
		{name: "sub-not-string", token: hs(jwt.MapClaims{"sub": 42, "exp": now.Add(time.Hour).Unix(), "iss": testIssuer, "aud": testAudience}), reason: "malformed"},
		{name: "exp-string", token: hs(jwt.MapClaims{"sub": "x", "exp": "tomorrow", "iss": testIssuer, "aud": testAudience}), reason: "malformed"},
	})

	p, err := f.a.Verify(good)
	if err != nil {
		t.Fatal(err)
	}
	want := goodClaims("carol").ExpiresAt.Time
	if d := p.Expires.Sub(want); d < -time.Second || d > time.Second {
		t.Fatalf("Expires = %v, want about %v", p.Expires, want)
	}
}

func b64json(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func signHeader(t *testing.T, hdr map[string]any, c jwt.Claims) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMintHS256(t *testing.T) {
	f := newFixture(t)
	tok, err := MintHS256(testSecret, "dave", time.Hour, testIssuer, testAudience)
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.a.Verify(tok)
	if err != nil || p.Subject != "dave" {
		t.Fatalf("Verify(minted) = %+v, %v", p, err)
	}
	if d := time.Until(p.Expires); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Fatalf("Expires in %v, want about 1h", d)
	}
	// Minted without iss/aud: refused by an authenticator that wants them.
	tok, _ = MintHS256(testSecret, "dave", time.Hour, "", "")
	if _, err := f.a.Verify(tok); Reason(err) != "wrong_issuer" {
		t.Fatalf("Reason = %q, want wrong_issuer", Reason(err))
	}
	for _, c := range []struct {
		secret []byte
		sub    string
		ttl    time.Duration
	}{{testSecret[:31], "x", time.Hour}, {testSecret, "", time.Hour}, {testSecret, "x", 0}} {
		if _, err := MintHS256(c.secret, c.sub, c.ttl, "", ""); err == nil {
			t.Errorf("MintHS256(%d-byte secret, %q, %v) succeeded", len(c.secret), c.sub, c.ttl)
		} else if strings.Contains(err.Error(), string(c.secret)) {
			t.Errorf("error %q contains the secret", err)
		}
	}
}

func TestRevoked(t *testing.T) {
	f := newFixture(t)
	var aliceTok string
	for tok, sub := range f.static {
		if sub == "alice" {
			aliceTok = tok
		}
	}
	aliceJWT := sign(t, jwt.SigningMethodHS256, testSecret, "", goodClaims("alice"))
	carolJWT := sign(t, jwt.SigningMethodHS256, testSecret, "", goodClaims("carol"))
	f.a.SetRevoked(func(s string) bool { return s == "alice" })
	runCases(t, f.a, []verifyCase{
		{name: "static", token: aliceTok, reason: "revoked"},
		{name: "jwt", token: aliceJWT, reason: "revoked"},
		{name: "other", token: carolJWT, subject: "carol"},
	})
	if _, err := f.a.Verify(aliceJWT); !errors.Is(err, ErrRevoked) {
		t.Fatalf("err = %v, want ErrRevoked", err)
	}
	// The hook only runs for tokens that verified.
	called := false
	f.a.SetRevoked(func(string) bool { called = true; return false })
	if _, err := f.a.Verify("nope"); err == nil || called {
		t.Fatalf("hook called for an unverified token (err %v)", err)
	}
	f.a.SetRevoked(nil)
	if _, err := f.a.Verify(aliceJWT); err != nil {
		t.Fatalf("after SetRevoked(nil): %v", err)
	}
}

func TestReason(t *testing.T) {
	sentinels := map[error]string{
		ErrEmpty: "empty", ErrMalformed: "malformed", ErrUnknownToken: "unknown_token",
		ErrBadSignature: "bad_signature", ErrExpired: "expired", ErrNotYetValid: "not_yet_valid",
		ErrWrongIssuer: "wrong_issuer", ErrWrongAudience: "wrong_audience", ErrUnknownKey: "unknown_key",
		ErrBadAlgorithm: "bad_algorithm", ErrRevoked: "revoked",
	}
	if len(sentinels) != len(Reasons) {
		t.Fatalf("%d sentinels, %d Reasons", len(sentinels), len(Reasons))
	}
	for err, want := range sentinels {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
		if got := Reason(fmt.Errorf("session: %w", err)); got != want {
			t.Errorf("Reason(wrapped %v) = %q, want %q", err, got, want)
		}
		if !slices.Contains(Reasons, want) {
			t.Errorf("%q missing from Reasons", want)
		}
	}
	for _, e := range []error{errTooLong, errBadSubject, errBadKid, errCritical, errMissingExp} {
		if Reason(e) != "malformed" || !errors.Is(e, ErrMalformed) {
			t.Errorf("%v: Reason %q", e, Reason(e))
		}
	}
	if Reason(errAlgMismatch) != "bad_algorithm" {
		t.Error("errAlgMismatch is not bad_algorithm")
	}
	if Reason(nil) != "" || Reason(errors.New("other")) != "malformed" {
		t.Error("Reason(nil) or Reason(foreign)")
	}
}

func TestHashAndGenerate(t *testing.T) {
	if got := HashToken("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("HashToken(abc) = %s", got)
	}
	seen := map[string]bool{}
	for range 100 {
		tok, err := GenerateToken()
		if err != nil {
			t.Fatal(err)
		}
		if b, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(b) != 32 || strings.Contains(tok, ".") {
			t.Fatalf("GenerateToken() = %q", tok)
		}
		if seen[tok] {
			t.Fatal("duplicate token")
		}
		seen[tok] = true
	}
}

func TestConcurrentVerify(t *testing.T) {
	f := newFixture(t)
	hsTok := sign(t, jwt.SigningMethodHS256, testSecret, "", goodClaims("carol"))
	esTok := sign(t, jwt.SigningMethodES256, f.keys.ec, "ec1", goodClaims("erin"))
	var static string
	for tok := range f.static {
		static = tok
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if i == 0 && j%10 == 0 {
					f.a.SetRevoked(func(s string) bool { return s == "nobody" })
				}
				for _, tok := range []string{hsTok, esTok, static} {
					if _, err := f.a.Verify(tok); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// rsaPublicPEM is the PEM of the fixture's RSA public key: what an attacker
// would use as an HMAC secret in an alg-confusion attack.
func rsaPublicPEM(t *testing.T, f *fixture) []byte {
	der, err := x509.MarshalPKIXPublicKey(&f.keys.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
