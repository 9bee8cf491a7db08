package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a server certificate for 127.0.0.1/localhost with serial.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string, serial int64) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	// Write to temp names and rename, as a certificate manager would.
	must(t, os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	must(t, os.WriteFile(certFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.Rename(keyFile+".tmp", keyFile))
	must(t, os.Rename(certFile+".tmp", certFile))
}

func startTLSGateway(t *testing.T, opts ...option) (*gateway, *testCA, string) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	ca.issue(t, certFile, keyFile, 100)
	g := startGateway(t, append([]option{with("tls", `
  cert_file: `+certFile+`
  key_file: `+keyFile+`
  min_version: "1.2"`)}, opts...)...)
	return g, ca, dir
}

func (ca *testCA) clientTLS(max uint16) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{RootCAs: pool, MaxVersion: max, ServerName: "127.0.0.1"}
}

func dialWSS(t *testing.T, g *gateway, ca *testCA) (*websocket.Conn, *tls.ConnectionState) {
	t.Helper()
	var state *tls.ConnectionState
	tr := &http.Transport{TLSClientConfig: ca.clientTLS(0)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "wss://"+g.Addr+"/mcp", &websocket.DialOptions{
		Subprotocols: []string{"mcp"}, HTTPClient: &http.Client{Transport: tr}})
	must(t, err)
	c.SetReadLimit(4 << 20)
	state = resp.TLS
	return c, state
}

func wsCall(t *testing.T, c *websocket.Conn, msg string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	must(t, c.Write(ctx, websocket.MessageText, []byte(msg)))
	_, data, err := c.Read(ctx)
	must(t, err)
	return string(data)
}

// wss:// end to end with a Go client and Node's ws client trusting a test CA.
func TestWSS(t *testing.T) {
	g, ca, dir := startTLSGateway(t)
	c, st := dialWSS(t, g, ca)
	defer c.CloseNow()
	if st == nil || st.Version < tls.VersionTLS12 {
		t.Fatalf("TLS state %+v", st)
	}
	if got := wsCall(t, c, `{"type":"auth","token":"`+aliceToken+`"}`); !strings.Contains(got, "auth_ok") {
		t.Fatalf("auth: %s", got)
	}
	if got := wsCall(t, c, `{"jsonrpc":"2.0","id":"w","method":"tools/call","params":{"name":"echo","arguments":{"message":"over tls"}}}`); !strings.Contains(got, "Echo: over tls") {
		t.Fatalf("echo: %s", got)
	}
	// A big message crosses several TLS records each way.
	big := strings.Repeat("z", 200000)
	if got := wsCall(t, c, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"`+big+`"}}}`); !strings.Contains(got, big) {
		t.Fatalf("big echo: %d bytes", len(got))
	}

	caFile := filepath.Join(dir, "ca.pem")
	must(t, os.WriteFile(caFile, ca.pem, 0o600))
	nodeDir := nodeClients(t)
	cmd := exec.Command("node", filepath.Join(nodeDir, "ws-client.mjs"), "wss://127.0.0.1:"+strings.Split(g.Addr, ":")[1]+"/mcp", bobToken)
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+caFile)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "OK") {
		t.Fatalf("node ws over wss: %v\n%s", err, out)
	}
}

func TestTLSOldVersionsRefused(t *testing.T) {
	g, ca, _ := startTLSGateway(t)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		cfg := ca.clientTLS(v)
		cfg.MinVersion = v
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.Addr, cfg)
		if err == nil {
			conn.Close()
			t.Fatalf("TLS version %x accepted", v)
		}
	}
	// 1.2 works, 1.3 is preferred, ALPN is http/1.1.
	alpn := ca.clientTLS(0)
	alpn.NextProtos = []string{"h2", "http/1.1"}
	conn, err := tls.Dial("tcp", g.Addr, alpn)
	must(t, err)
	if st := conn.ConnectionState(); st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("negotiated %x ALPN %q, want TLS 1.3 and http/1.1", st.Version, st.NegotiatedProtocol)
	}
	conn.Close()
	conn, err = tls.Dial("tcp", g.Addr, ca.clientTLS(tls.VersionTLS12))
	must(t, err)
	conn.Close()
}

// The certificate changes on disk while connections are open: they keep
// working, and new connections get the new certificate.
func TestCertificateRotation(t *testing.T) {
	g, ca, dir := startTLSGateway(t)
	old, st := dialWSS(t, g, ca)
	defer old.CloseNow()
	if st.PeerCertificates[0].SerialNumber.Int64() != 100 {
		t.Fatal("unexpected first certificate")
	}
	wsCall(t, old, `{"type":"auth","token":"`+aliceToken+`"}`)
	ca.issue(t, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), 200)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, st := dialWSS(t, g, ca)
		c.CloseNow()
		if st.PeerCertificates[0].SerialNumber.Int64() == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new certificate never served")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := wsCall(t, old, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); got != `{"jsonrpc":"2.0","id":1,"result":{}}` {
		t.Fatalf("old connection after rotation: %s", got)
	}
}

// Handshakes that never finish do not stop the loops from serving
// established connections, and cost bounded memory.
func TestTLSHandshakeFlood(t *testing.T) {
	g, ca, _ := startTLSGateway(t)
	c, _ := dialWSS(t, g, ca)
	defer c.CloseNow()
	wsCall(t, c, `{"type":"auth","token":"`+aliceToken+`"}`)
	rss0 := g.Metric(t, "process_resident_memory_bytes")
	var flood []net.Conn
	defer func() {
		for _, f := range flood {
			f.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		f, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			continue
		}
		// Half a ClientHello header, then silence.
		_, _ = f.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		flood = append(flood, f)
	}
	start := time.Now()
	for i := 0; i < 20; i++ {
		if got := wsCall(t, c, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); got != `{"jsonrpc":"2.0","id":1,"result":{}}` {
			t.Fatalf("during flood: %s", got)
		}
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("20 pings took %v during the handshake flood", el)
	}
	rss1 := g.Metric(t, "process_resident_memory_bytes")
	if grow := rss1 - rss0; grow > 32<<20 {
		t.Fatalf("RSS grew %v MiB with 300 stalled handshakes", grow/(1<<20))
	}
	t.Logf("RSS %.1f -> %.1f MiB with %d stalled handshakes", rss0/(1<<20), rss1/(1<<20), len(flood))
}
