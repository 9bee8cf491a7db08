package wsraw

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Transport is one way a client reaches the gateway. Every wire row of SPEC
// 4.1-4.4 must hold byte for byte over each of them (SPEC 4): the suites
// write a row once and run it once per transport, as a subtest named by
// the transport (TestConformance/wss/7.1.1).
type Transport struct {
	Name string
	// TLS: the gateway terminates TLS with a certificate from the test CA
	// (TestCA); clients dial wss:// and trust that CA.
	TLS bool
	// HAProxy: HAProxy in TCP mode sits in front and sends PROXY v2 to a
	// gateway that trusts 127.0.0.0/8 and expects the header. With TLS the
	// records pass through HAProxy untouched (TLS ends on the gateway).
	HAProxy bool
}

// The four transports of the contract.
var (
	WS         = Transport{Name: "ws"}
	WSS        = Transport{Name: "wss", TLS: true}
	WSHAProxy  = Transport{Name: "ws-haproxy", HAProxy: true}
	WSSHAProxy = Transport{Name: "wss-haproxy", TLS: true, HAProxy: true}
)

// Transports returns the four transports every wire row runs over: ws://
// on loopback, wss://, ws:// behind HAProxy (send-proxy-v2), and wss://
// passed through HAProxy in TCP mode (send-proxy-v2, TLS ends on the
// gateway).
func Transports() []Transport { return []Transport{WS, WSS, WSHAProxy, WSSHAProxy} }

// String is the transport's name.
func (tr Transport) String() string {
	if tr.Name == "" {
		return WS.Name
	}
	return tr.Name
}

// Scheme is ws or wss.
func (tr Transport) Scheme() string {
	if tr.TLS {
		return "wss"
	}
	return "ws"
}

// EachTransport runs f once per transport (Transports) as a subtest named
// by the transport. The transports run in parallel with each other: each
// has its own gateway (and HAProxy), so nothing but CPU is shared. A test
// that measures something the others would disturb runs them one after
// the other with ForTransports.
func EachTransport(t *testing.T, f func(t *testing.T, tr Transport)) {
	t.Helper()
	ForTransports(t, Transports(), true, f)
}

// ForTransports runs f for each of trs as a subtest named by the
// transport, in parallel when parallel is set.
func ForTransports(t *testing.T, trs []Transport, parallel bool, f func(t *testing.T, tr Transport)) {
	t.Helper()
	for _, tr := range trs {
		t.Run(tr.String(), func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			f(t, tr)
		})
	}
}

// Amend adds what the transport needs to a gateway config and its run
// directory: tls (certificate and key files from the test CA) and proxy
// (trusted loopback balancer, PROXY protocol). A config that already sets
// one of those keys is a mistake in the test: it fails.
func (tr Transport) Amend(t testing.TB, cfg Config, files map[string]string) {
	t.Helper()
	if tr.TLS {
		if _, ok := cfg["tls"]; ok {
			t.Fatalf("transport %s sets tls, the config already does", tr)
		}
		certPEM, keyPEM := TestCA(t).ServerPEM()
		files["server.crt"], files["server.key"] = certPEM, keyPEM
		cfg["tls"] = `
  cert_file: server.crt
  key_file: server.key
  min_version: "1.2"`
	}
	if tr.HAProxy {
		if _, ok := cfg["proxy"]; ok {
			t.Fatalf("transport %s sets proxy, the config already does", tr)
		}
		cfg["proxy"] = `
  trusted_cidrs: ["127.0.0.0/8"]
  proxy_protocol: true`
	}
}

// front starts what stands between clients and g (HAProxy, for the
// transports that have it) and sets g.Front, the address clients dial.
func (tr Transport) front(t testing.TB, g *Gateway) {
	t.Helper()
	g.Transport = tr
	g.Front = g.Addr
	if tr.HAProxy {
		g.Front = StartHAProxy(t, HAProxy{Servers: []HAServer{{Addr: g.Addr, Options: "send-proxy-v2"}}})
	}
}

// CA is the suites' certificate authority, made once per test process: a
// P-256 CA and one server certificate for 127.0.0.1 and localhost, valid
// from an hour ago for a day.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte // the CA certificate, for clients that read a file
	key     *ecdsa.PrivateKey
	srvCert string
	srvKey  string
	pool    *x509.CertPool
}

var (
	caOnce sync.Once
	theCA  *CA
	caErr  error
)

// TestCA returns the process's test CA, making it on first use.
func TestCA(t testing.TB) *CA {
	t.Helper()
	caOnce.Do(func() { theCA, caErr = newCA() })
	if caErr != nil {
		t.Fatalf("test CA: %v", caErr)
	}
	return theCA
}

func newCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wsraw test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, key: key, pool: x509.NewCertPool(),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.pool.AddCert(cert)

	skey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	stmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	sder, err := x509.CreateCertificate(rand.Reader, stmpl, cert, &skey.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(skey)
	if err != nil {
		return nil, err
	}
	ca.srvCert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sder}))
	ca.srvKey = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return ca, nil
}

// ServerPEM is the server certificate (for 127.0.0.1 and localhost) and
// its key, PEM encoded.
func (ca *CA) ServerPEM() (cert, key string) { return ca.srvCert, ca.srvKey }

// ClientTLS is a client config that trusts only the test CA and checks the
// server's certificate for localhost (sent as SNI).
func (ca *CA) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: ca.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
}

// DialTimeout bounds a connect, and the TLS handshake after it.
const DialTimeout = 10 * time.Second

// DialNet connects to the gateway the way its transport says: TCP to Front
// (HAProxy's frontend or the gateway), from the loopback address src when
// not empty, then for wss the TLS handshake with the test CA. Nothing more
// is sent. The connection is the caller's to close.
func (g *Gateway) DialNet(src string) (net.Conn, error) {
	d := net.Dialer{Timeout: DialTimeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", g.Front)
	if err != nil {
		return nil, err
	}
	if !g.Transport.TLS {
		return c, nil
	}
	tc := tls.Client(c, TestCA(g.t).ClientTLS())
	ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake over %s: %w", g.Transport, err)
	}
	return tc, nil
}

// Dial connects over the gateway's transport and sends a valid upgrade
// request for path; the response (101 or a refusal) is in Resp.
func (g *Gateway) Dial(path string, extra ...string) (*Conn, error) {
	return g.DialRequest(UpgradeRequest(g.Addr, path, extra...))
}

// DialFrom is Dial from the loopback address src (127.0.0.2 ...): behind
// HAProxy the gateway learns it from the PROXY header.
func (g *Gateway) DialFrom(src, path string, extra ...string) (*Conn, error) {
	c, err := g.DialNet(src)
	if err != nil {
		return nil, err
	}
	return RequestOver(c, UpgradeRequest(g.Addr, path, extra...))
}

// DialRequest connects over the gateway's transport, writes req verbatim
// and reads the HTTP response.
func (g *Gateway) DialRequest(req string) (*Conn, error) {
	c, err := g.DialNet("")
	if err != nil {
		return nil, err
	}
	return RequestOver(c, req)
}

// DialAuthed upgrades on /mcp over the gateway's transport and
// authenticates with a first-message token.
func (g *Gateway) DialAuthed(token string) (*Conn, error) {
	r, err := g.Dial("/mcp")
	if err != nil {
		return nil, err
	}
	if err := r.auth(token); err != nil {
		return nil, err
	}
	return r, nil
}

// URL is the ws:// or wss:// URL of path as a client sees it.
func (g *Gateway) URL(path string) string {
	return g.Transport.Scheme() + "://" + g.Front + path
}

// HTTPURL is the http:// or https:// URL of path on the main listener, for
// HTTPClient (which dials Front whatever the URL's host).
func (g *Gateway) HTTPURL(path string) string {
	if g.Transport.TLS {
		return "https://" + g.Addr + path
	}
	return "http://" + g.Addr + path
}

// HTTPClient is an HTTP client for the main listener (POST /tickets) over
// the gateway's transport: every request on a new connection to Front,
// TLS with the test CA for wss.
func (g *Gateway) HTTPClient() *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return g.DialNet("") }
	tr := &http.Transport{DisableKeepAlives: true, DialContext: dial, DialTLSContext: dial,
		ResponseHeaderTimeout: 10 * time.Second}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}
