package tlsconn

import (
	"crypto/tls"
	"os"
	"testing"
	"time"
)

func serialOf(c *tls.Conn) int64 {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestCertRotation: rewrite the files while a connection is open; new
// connections get the new certificate, the old one keeps working, and a bad
// pair leaves the current certificate in place.
func TestCertRotation(t *testing.T) {
	ca := newCA(t)
	srv, r, dir := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	cfg := clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13)

	old := dialTLS(t, l.addr(), cfg)
	if s := serialOf(old); s != 100 {
		t.Fatalf("serial %d", s)
	}
	echo(t, old, []byte("before"))

	c, k := ca.leaf(t, 200)
	writePair(t, dir, c, k)
	waitReload(t, r, 200)

	fresh := dialTLS(t, l.addr(), cfg.Clone())
	if s := serialOf(fresh); s != 200 {
		t.Fatalf("new connection got serial %d", s)
	}
	echo(t, fresh, []byte("new"))
	echo(t, old, []byte("old connection still served"))

	// A key that does not match (half a rotation): keep serving 200.
	_, k3 := ca.leaf(t, 300)
	if err := os.WriteFile(dir+"/server.key", k3, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*ReloadInterval + 200*time.Millisecond)
	if s := r.Current().Leaf.SerialNumber.Int64(); s != 200 {
		t.Fatalf("bad pair replaced the certificate: serial %d", s)
	}
	again := dialTLS(t, l.addr(), cfg.Clone())
	if s := serialOf(again); s != 200 {
		t.Fatalf("serial %d after a bad reload", s)
	}
	// The rest of the rotation arrives: 300 is picked up.
	c3, k3b := ca.leaf(t, 300)
	writePair(t, dir, c3, k3b)
	waitReload(t, r, 300)
	echo(t, old, []byte("and still"))
}

func waitReload(t *testing.T, r *CertReloader, serial int64) {
	t.Helper()
	deadline := time.Now().Add(3*ReloadInterval + 2*time.Second)
	for time.Now().Before(deadline) {
		if r.Current().Leaf.SerialNumber.Int64() == serial {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("certificate %d not loaded", serial)
}

func TestServerTLSConfig(t *testing.T) {
	ca := newCA(t)
	_, r, _ := newTestServer(t, ca, "1.2", Config{})
	if _, err := ServerTLSConfig(r, "1.1"); err == nil {
		t.Fatal("min_version 1.1 accepted")
	}
	c, err := ServerTLSConfig(r, "1.3")
	if err != nil || c.MinVersion != tls.VersionTLS13 || c.MaxVersion != tls.VersionTLS13 {
		t.Fatalf("%v %+v", err, c)
	}
	c, _ = ServerTLSConfig(r, "")
	if c.MinVersion != tls.VersionTLS12 || len(c.NextProtos) != 1 || c.NextProtos[0] != "http/1.1" {
		t.Fatalf("%+v", c)
	}
	for _, id := range c.CipherSuites {
		cs := tls.CipherSuiteName(id)
		if !contains(cs, "ECDHE") || !(contains(cs, "GCM") || contains(cs, "CHACHA20")) {
			t.Fatalf("suite %s", cs)
		}
	}
	if _, err := NewCertReloader(t.TempDir()+"/none.crt", t.TempDir()+"/none.key", nil); err == nil {
		t.Fatal("missing files accepted")
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
