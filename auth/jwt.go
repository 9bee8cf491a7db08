package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// Accepted JWS algorithms. HS256 is only ever verified with the configured
// secret; the others only with a JWKS key of the matching type.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
	algEdDSA = "EdDSA"
)

// minRSABits is the smallest RSA modulus accepted from the JWKS file.
const minRSABits = 2048

// verifyKey is one public key from the JWKS file with the only alg it verifies.
type verifyKey struct {
	kid string
	alg string
	key any // *rsa.PublicKey, *ecdsa.PublicKey (P-256) or ed25519.PublicKey
}

// initJWT builds the parser once New has loaded the key sources.
func (a *Authenticator) initJWT() {
	if a.secret != nil {
		a.methods = append(a.methods, algHS256)
	}
	for _, k := range a.keys {
		if !slices.Contains(a.methods, k.alg) {
			a.methods = append(a.methods, k.alg)
		}
	}
	if len(a.methods) == 0 {
		return
	}
	slices.Sort(a.methods)
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithStrictDecoding(),
	}
	if a.issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.issuer))
	}
	if a.aud != "" {
		opts = append(opts, jwt.WithAudience(a.aud))
	}
	a.parser = jwt.NewParser(opts...)
	a.keyfunc = a.keyFor
}

// keyFor chooses the verification key for a token whose alg is already known to
// be one of a.methods. It never uses key material from the token itself (jwk,
// jku, x5u, x5c headers are ignored), and the key's type must match alg: a
// JWKS key is never handed to HS256 and the secret never to an asymmetric alg.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: extensions we do not understand must be refused.
		return nil, errCritical
	}
	alg := t.Method.Alg()
	if alg == algHS256 {
		if a.secret == nil {
			return nil, ErrBadAlgorithm
		}
		return a.secret, nil
	}
	var k *verifyKey
	switch kid := t.Header["kid"].(type) {
	case string:
		k = a.keys[kid]
	case nil:
		k = a.soleKey
	default:
		return nil, errBadKid
	}
	if k == nil {
		return nil, ErrUnknownKey
	}
	if k.alg != alg {
		return nil, errAlgMismatch
	}
	return k.key, nil
}

// claims are the registered claims (RFC 7519 4.1) with exp, nbf and iat
// accepted only as JSON numbers. jwt/v5's NumericDate decodes through
// json.Number, which also takes a string holding a number ("exp":
// "9999999999"); RFC 7519 2 defines NumericDate as a JSON numeric value, and
// a string there is refused as a malformed token.
type claims struct {
	Issuer    string           `json:"iss,omitempty"`
	Subject   string           `json:"sub,omitempty"`
	Audience  jwt.ClaimStrings `json:"aud,omitempty"`
	ExpiresAt *numericDate     `json:"exp,omitempty"`
	NotBefore *numericDate     `json:"nbf,omitempty"`
	IssuedAt  *numericDate     `json:"iat,omitempty"`
}

// numericDate is a jwt.NumericDate that decodes from a JSON number only.
type numericDate struct{ jwt.NumericDate }

// errNotNumber is the decoding error of a time claim that is not a JSON
// number (it reaches classify wrapped in jwt.ErrTokenMalformed).
var errNotNumber = errors.New("time claim is not a JSON number")

func (d *numericDate) UnmarshalJSON(b []byte) error {
	// encoding/json hands over the value's literal without surrounding space
	// (null never gets here: it leaves the pointer nil).
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return errNotNumber
	}
	return d.NumericDate.UnmarshalJSON(b)
}

func (d *numericDate) get() *jwt.NumericDate {
	if d == nil {
		return nil
	}
	return &d.NumericDate
}

func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.get(), nil }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.get(), nil }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.get(), nil }
func (c *claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

func (a *Authenticator) verifyJWT(token string) (Principal, error) {
	var claims claims
	tok, err := a.parser.ParseWithClaims(token, &claims, a.keyfunc)
	if err != nil {
		return Principal{}, a.classify(tok, &claims, err)
	}
	if !validSubject(claims.Subject) {
		return Principal{}, errBadSubject
	}
	if claims.ExpiresAt == nil { // guaranteed by WithExpirationRequired; belt and braces
		return Principal{}, errMissingExp
	}
	return Principal{Subject: claims.Subject, Expires: claims.ExpiresAt.Time}, nil
}

// classify maps a jwt/v5 error to one of our sentinels. The library's own error
// text is dropped: it can quote fragments of the decoded token.
func (a *Authenticator) classify(tok *jwt.Token, claims *claims, err error) error {
	var re *reasonError
	if errors.As(err, &re) { // from keyFor
		for _, e := range []error{errCritical, errBadKid, errAlgMismatch} {
			if errors.Is(err, e) {
				return e
			}
		}
		return re
	}
	switch {
	case errors.Is(err, errNotNumber):
		return errTimeNotNumber
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ErrMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// The parser reports an alg outside WithValidMethods (e.g. "none", or
		// HS256 without a configured secret) as an invalid signature.
		if tok != nil && tok.Method != nil && !slices.Contains(a.methods, tok.Method.Alg()) {
			return ErrBadAlgorithm
		}
		return ErrBadSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if tok != nil && tok.Method == nil { // alg missing or unknown to the library
			return ErrBadAlgorithm
		}
		return ErrMalformed
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ErrWrongIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrWrongAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if a.issuer != "" && claims.Issuer == "" {
			return ErrWrongIssuer
		}
		if a.aud != "" && len(claims.Audience) == 0 {
			return ErrWrongAudience
		}
		return errMissingExp
	}
	return ErrMalformed
}

// loadJWKS reads the public keys of a JWKS file. Keys with use "enc" are
// skipped; private or symmetric keys, unsupported types, curves or algs, RSA
// keys under 2048 bits, duplicate kids, and a missing kid in a set of several
// keys are errors.
func (a *Authenticator) loadJWKS(path string) error {
	data, err := readFileLimited(path, maxJWKSFileBytes)
	if err != nil {
		return fmt.Errorf("auth.jwt.jwks_file: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("auth.jwt.jwks_file %s: invalid JSON at byte offset %d", path, se.Offset)
		}
		return fmt.Errorf("auth.jwt.jwks_file %s: %v", path, err)
	}
	a.keys = make(map[string]*verifyKey)
	var usable []*verifyKey
	for i := range set.Keys {
		k := &set.Keys[i]
		where := fmt.Sprintf("auth.jwt.jwks_file %s: key %d (kid %q)", path, i+1, k.KeyID)
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if !k.IsPublic() {
			return fmt.Errorf("%s: private or symmetric key; the file must hold public keys only", where)
		}
		if !k.Valid() {
			return fmt.Errorf("%s: invalid key", where)
		}
		vk := &verifyKey{kid: k.KeyID, key: k.Key}
		switch pk := k.Key.(type) {
		case *rsa.PublicKey:
			if pk.N.BitLen() < minRSABits {
				return fmt.Errorf("%s: RSA key of %d bits, need at least %d", where, pk.N.BitLen(), minRSABits)
			}
			vk.alg = algRS256
		case *ecdsa.PublicKey:
			if pk.Curve != elliptic.P256() {
				return fmt.Errorf("%s: EC curve %s not supported (ES256 needs P-256)", where, pk.Curve.Params().Name)
			}
			vk.alg = algES256
		case ed25519.PublicKey:
			vk.alg = algEdDSA
		default:
			return fmt.Errorf("%s: unsupported key type %T", where, k.Key)
		}
		if k.Algorithm != "" && k.Algorithm != vk.alg {
			return fmt.Errorf("%s: alg %q not supported for this key (want %s)", where, k.Algorithm, vk.alg)
		}
		if _, dup := a.keys[k.KeyID]; dup {
			return fmt.Errorf("%s: duplicate kid", where)
		}
		a.keys[k.KeyID] = vk
		usable = append(usable, vk)
	}
	if len(usable) == 0 {
		return fmt.Errorf("auth.jwt.jwks_file %s: no signature keys", path)
	}
	if len(usable) == 1 {
		a.soleKey = usable[0]
	} else if _, ok := a.keys[""]; ok {
		return fmt.Errorf("auth.jwt.jwks_file %s: a key has no kid; with several keys every key needs one", path)
	}
	return nil
}

// MintHS256 returns a JWT signed HS256 with secret, naming subject and valid for
// ttl from now (iat, nbf and exp set; iss and aud when non-empty). It is what
// `gateway token` prints.
func MintHS256(secret []byte, subject string, ttl time.Duration, issuer, audience string) (string, error) {
	if len(secret) < MinSecretBytes {
		return "", fmt.Errorf("auth: HS256 secret is %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	if !validSubject(subject) {
		return "", fmt.Errorf("auth: subject must be 1-%d bytes of UTF-8 without control characters", MaxSubjectBytes)
	}
	if ttl <= 0 {
		return "", errors.New("auth: token ttl must be positive")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   subject,
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", errors.New("auth: signing token failed")
	}
	return s, nil
}
