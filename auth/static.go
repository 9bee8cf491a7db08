package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Size caps for the files New reads, so that a wrong path (a log, a device)
// cannot exhaust memory.
const (
	maxStaticFileBytes = 16 << 20
	maxSecretFileBytes = 64 << 10
	maxJWKSFileBytes   = 4 << 20
)

type staticEntry struct {
	hash    [32]byte
	subject string
}

// HashToken returns the lowercase hex SHA-256 of token: the form stored in the
// static tokens file ("<HashToken(t)> <subject>").
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// GenerateToken returns a new random static token: 32 bytes from crypto/rand,
// base64url without padding (43 characters, never containing a dot).
func GenerateToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: generating token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// verifyStatic looks the token up by its SHA-256.
//
// Why the map lookup cannot leak the token through timing: the map is keyed by
// SHA-256 digests, never by tokens. How long the lookup takes (bucket choice,
// how many key bytes compare equal before a mismatch) depends only on the digest
// of the attacker's guess, and learning that a guess's digest shares a prefix
// with a stored digest tells nothing about the stored token: SHA-256 is
// preimage-resistant, so there is no way to pick the next guess so that its
// digest extends that prefix. The byte-by-byte narrowing that a timing attack
// on a direct string comparison relies on is therefore impossible. The final
// check still uses crypto/subtle.ConstantTimeCompare on the full digests, so
// the confirming comparison itself is constant time as well.
func (a *Authenticator) verifyStatic(token string) (Principal, error) {
	var buf [128]byte // typical tokens hash from the stack, without allocating
	sum := sha256.Sum256(append(buf[:0], token...))
	e, ok := a.static[sum]
	if !ok || subtle.ConstantTimeCompare(e.hash[:], sum[:]) != 1 {
		return Principal{}, ErrUnknownToken
	}
	return Principal{Subject: e.subject}, nil
}

// addStatic registers a token hash. Errors never repeat the hash: a line that
// holds a clear-text token by mistake must not be echoed into a log.
func (a *Authenticator) addStatic(hashHex, subject string) error {
	var h [32]byte
	if len(hashHex) != 64 {
		return errors.New("the token hash must be 64 hex digits (a SHA-256; tokens are never stored in clear)")
	}
	if _, err := hex.Decode(h[:], []byte(hashHex)); err != nil {
		return errors.New("the token hash is not hex (a SHA-256; tokens are never stored in clear)")
	}
	if !validSubject(subject) {
		return fmt.Errorf("subject must be 1-%d bytes of UTF-8 without control characters", MaxSubjectBytes)
	}
	if _, dup := a.static[h]; dup {
		return errors.New("duplicate token hash")
	}
	a.static[h] = staticEntry{hash: h, subject: subject}
	return nil
}

// loadStaticFile reads lines "sha256-hex subject"; blank lines and lines
// starting with # are ignored.
func (a *Authenticator) loadStaticFile(path string) error {
	data, err := readFileLimited(path, maxStaticFileBytes)
	if err != nil {
		return fmt.Errorf("auth.static_tokens_file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return fmt.Errorf("auth.static_tokens_file %s:%d: want \"<sha256-hex> <subject>\", found %d fields", path, n, len(f))
		}
		if err := a.addStatic(f[0], f[1]); err != nil {
			return fmt.Errorf("auth.static_tokens_file %s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("auth.static_tokens_file %s: line too long or unreadable", path)
	}
	return nil
}

// LoadHS256Secret reads an HS256 secret file as New does: trailing whitespace
// and newlines are trimmed, and a secret shorter than MinSecretBytes is refused.
// The error names the file and never contains the secret.
func LoadHS256Secret(path string) ([]byte, error) {
	data, err := readFileLimited(path, maxSecretFileBytes)
	if err != nil {
		return nil, fmt.Errorf("auth.jwt.hs256_secret_file: %w", err)
	}
	s := bytes.TrimRight(data, " \t\r\n")
	if len(s) < MinSecretBytes {
		clear(data)
		return nil, fmt.Errorf("auth.jwt.hs256_secret_file %s: secret is %d bytes, need at least %d",
			path, len(s), MinSecretBytes)
	}
	return s, nil
}

// readFileLimited reads a whole file of at most max bytes. Errors name the path
// (as os errors do) but not the content.
func readFileLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return data, nil
}
