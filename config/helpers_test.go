package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// withToken is the embedded default as `gateway serve` runs it: plus one token.
func withToken() *Config {
	c := Default()
	sum := sha256.Sum256([]byte("secret"))
	c.Auth.ExtraTokens = []StaticToken{{SHA256Hex: hex.EncodeToString(sum[:]), Subject: "default"}}
	return c
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCert writes a self-signed certificate and its key into dir.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, "server.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, dir, "server.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

// wantSettingErr checks that err holds an *Error for setting whose message
// contains each of substrs.
func wantSettingErr(t *testing.T, err error, setting string, substrs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one naming %q", setting)
	}
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else {
		all = []error{err}
	}
	for _, e := range all {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("error %T %v is not a *config.Error", e, e)
		}
		if ce.Setting != setting {
			continue
		}
		msg := ce.Error()
		if !strings.HasPrefix(msg, setting+": ") && !strings.Contains(msg, ": "+setting+": ") {
			t.Errorf("message %q does not name %q", msg, setting)
		}
		for _, s := range substrs {
			if !strings.Contains(msg, s) {
				t.Errorf("message %q does not contain %q", msg, s)
			}
		}
		return
	}
	t.Fatalf("error %q does not name setting %q", err, setting)
}
