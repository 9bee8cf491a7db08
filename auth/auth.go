// Package auth verifies credentials and names the principal.
//
// An [Authenticator] accepts two kinds of bearer token:
//
//   - static tokens, known only by their SHA-256 (the static_tokens_file holds
//     lines "sha256-hex subject"; tokens are never stored in clear), and
//   - JWTs, signed HS256 with the configured secret or RS256 / ES256 / EdDSA with
//     a public key from the configured JWKS file, with exp (required), nbf, iat,
//     iss and aud checked.
//
// Routing is cheap: a token with exactly two dots is a JWT (when any JWT key
// source is configured), anything else is a static token; so static tokens must
// not contain exactly two dots ([GenerateToken]'s never contain any). Every failure is one of
// a small set of sentinel errors whose text never contains token material, and
// [Reason] maps it to a stable, low-cardinality metrics label.
package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/gateway/config"
)

const (
	// MaxTokenBytes is the longest token Verify will look at; longer ones are
	// rejected as malformed before any parsing.
	MaxTokenBytes = 8 << 10
	// MinSecretBytes is the shortest HS256 secret accepted (RFC 7518 3.2: the key
	// must be at least as long as the hash output).
	MinSecretBytes = 32
	// Leeway is the clock skew tolerated on exp, nbf and iat.
	Leeway = 5 * time.Second
	// MaxSubjectBytes bounds a principal's subject (it ends up in logs, metrics
	// and Redis keys).
	MaxSubjectBytes = 256
)

// Principal is the authenticated identity behind a token.
type Principal struct {
	// Subject is the JWT's sub claim or the static token's name.
	Subject string
	// Expires is the JWT's exp; the zero time means the credential never expires.
	Expires time.Time
}

// reasonError is a verification failure with its metrics label. Its message is a
// fixed string: it never carries token text or key material.
type reasonError struct {
	reason string
	msg    string
}

func (e *reasonError) Error() string { return "auth: " + e.msg }

// Verification failures. Verify returns one of these, possibly wrapped with a
// fixed, token-free detail; test with errors.Is and label with Reason.
var (
	ErrEmpty         error = &reasonError{"empty", "empty token"}
	ErrMalformed     error = &reasonError{"malformed", "malformed token"}
	ErrUnknownToken  error = &reasonError{"unknown_token", "unknown token"}
	ErrBadSignature  error = &reasonError{"bad_signature", "bad token signature"}
	ErrExpired       error = &reasonError{"expired", "token expired"}
	ErrNotYetValid   error = &reasonError{"not_yet_valid", "token not yet valid"}
	ErrWrongIssuer   error = &reasonError{"wrong_issuer", "wrong token issuer"}
	ErrWrongAudience error = &reasonError{"wrong_audience", "wrong token audience"}
	ErrUnknownKey    error = &reasonError{"unknown_key", "unknown signing key"}
	ErrBadAlgorithm  error = &reasonError{"bad_algorithm", "signing algorithm not accepted"}
	ErrRevoked       error = &reasonError{"revoked", "credentials revoked"}
)

// Fixed details, built once so that failing verifications do not allocate.
var (
	errTooLong       = fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenBytes)
	errBadSubject    = fmt.Errorf("%w: sub claim missing or not acceptable", ErrMalformed)
	errBadKid        = fmt.Errorf("%w: kid header is not a string", ErrMalformed)
	errCritical      = fmt.Errorf("%w: crit header not supported", ErrMalformed)
	errMissingExp    = fmt.Errorf("%w: exp claim missing or invalid", ErrMalformed)
	errTimeNotNumber = fmt.Errorf("%w: exp, nbf or iat is not a JSON number", ErrMalformed)
	errAlgMismatch   = fmt.Errorf("%w: key type does not match alg", ErrBadAlgorithm)
)

// Reasons lists every label Reason can return for a non-nil error.
var Reasons = []string{
	"malformed", "unknown_token", "bad_signature", "expired", "not_yet_valid",
	"wrong_issuer", "wrong_audience", "unknown_key", "bad_algorithm", "revoked", "empty",
}

// Reason returns the stable metrics label of a Verify error: one of [Reasons].
// It returns "" for nil, and "malformed" for an error not produced by this package.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var re *reasonError
	if errors.As(err, &re) {
		return re.reason
	}
	return "malformed"
}

// Authenticator verifies tokens. It is safe for concurrent use.
type Authenticator struct {
	static map[[32]byte]staticEntry

	// JWT. parser is nil when no JWT key source is configured.
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
	methods []string
	secret  []byte                // HS256; nil if not configured
	keys    map[string]*verifyKey // JWKS keys by kid
	soleKey *verifyKey            // the only JWKS key, usable by a token without kid
	issuer  string
	aud     string

	revoked atomic.Pointer[func(subject string) bool]
}

// New builds an Authenticator from the auth configuration: the static tokens
// file, cfg.ExtraTokens, the HS256 secret file and the JWKS file. It fails if
// none of them yields a usable credential. Errors name the file or setting and
// never contain token or key material.
func New(cfg config.Auth) (*Authenticator, error) {
	a := &Authenticator{static: make(map[[32]byte]staticEntry)}
	if cfg.StaticTokensFile != "" {
		if err := a.loadStaticFile(cfg.StaticTokensFile); err != nil {
			return nil, err
		}
	}
	for i, t := range cfg.ExtraTokens {
		if err := a.addStatic(t.SHA256Hex, t.Subject); err != nil {
			return nil, fmt.Errorf("auth: extra token %d: %w", i+1, err)
		}
	}
	if cfg.JWT.HS256SecretFile != "" {
		s, err := LoadHS256Secret(cfg.JWT.HS256SecretFile)
		if err != nil {
			return nil, err
		}
		a.secret = s
	}
	if cfg.JWT.JWKSFile != "" {
		if err := a.loadJWKS(cfg.JWT.JWKSFile); err != nil {
			return nil, err
		}
	}
	if len(a.static) == 0 && a.secret == nil && len(a.keys) == 0 {
		return nil, errors.New("auth: no credentials configured: set auth.static_tokens_file " +
			"(with at least one token), auth.jwt.hs256_secret_file or auth.jwt.jwks_file")
	}
	a.issuer, a.aud = cfg.JWT.Issuer, cfg.JWT.Audience
	a.initJWT()
	return a, nil
}

// SetRevoked installs a hook consulted after a token verifies; when it reports
// the subject revoked, Verify fails with ErrRevoked. nil removes the hook. The
// hook is called on the verifying goroutine and must be fast and concurrency-safe.
func (a *Authenticator) SetRevoked(isRevoked func(subject string) bool) {
	if isRevoked == nil {
		a.revoked.Store(nil)
		return
	}
	a.revoked.Store(&isRevoked)
}

// Verify checks a bearer token and returns the principal it names. On failure
// the error is (or wraps) one of the Err* sentinels and never contains the token.
func (a *Authenticator) Verify(token string) (Principal, error) {
	if token == "" {
		return Principal{}, ErrEmpty
	}
	if len(token) > MaxTokenBytes {
		return Principal{}, errTooLong
	}
	var (
		p   Principal
		err error
	)
	if a.parser != nil && strings.Count(token, ".") == 2 {
		p, err = a.verifyJWT(token)
	} else {
		p, err = a.verifyStatic(token)
	}
	if err != nil {
		return Principal{}, err
	}
	if f := a.revoked.Load(); f != nil && (*f)(p.Subject) {
		return Principal{}, ErrRevoked
	}
	return p, nil
}

// validSubject reports whether s may name a principal: non-empty, at most
// MaxSubjectBytes, valid UTF-8, and free of control characters (subjects reach
// logs, metrics labels and Redis keys).
func validSubject(s string) bool {
	if s == "" || len(s) > MaxSubjectBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
