package audit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"
)

// expirySoon is how close a certificate's expiry must be to warn.
const expirySoon = 14 * 24 * time.Hour

// checkTLS judges the transport: plaintext or TLS, the version the server
// negotiates, whether it still accepts TLS 1.1, and the certificate. It
// also decides how later probes dial and whether the token may be sent.
func (a *auditor) checkTLS(ctx context.Context) Check {
	if !a.secure {
		c := a.newCheck("tls", "TLS", Info)
		a.tokenOK = a.opt.Token != ""
		if a.loopback {
			c.add("URL scheme ws:// to "+a.u.Hostname(), "the host is a loopback address")
			return c.done(Warn, "plaintext ws://, acceptable only on loopback")
		}
		c.Severity = Critical
		a.tokenOK, a.tokenWhy = false, "the token is not sent over plaintext to a non-loopback host"
		c.add("URL scheme ws:// to "+a.u.Hostname(), "the host is not a loopback address")
		return c.done(Fail, "plaintext ws:// to a non-loopback host: every frame, tokens included, can be read and forged on the path")
	}
	c := a.newCheck("tls", "TLS", Major)
	host := a.u.Hostname()
	serverName := host
	if net.ParseIP(host) != nil {
		serverName = "" // SNI carries no IP addresses
	}
	// Later probes: TLS 1.0 allowed so that the other checks still run
	// against an old server; the token goes only over a verified >= 1.2.
	a.probeTLS = &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10} //nolint:gosec // inspection only; verified below
	a.tokenOK, a.tokenWhy = false, "the TLS check failed, so the token is not sent"

	// 1. Inspect: accept any certificate, to report what is there.
	inspect := &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, NextProtos: []string{"http/1.1"}} //nolint:gosec // inspection only
	st, err := a.tlsHandshake(ctx, inspect)
	if err != nil {
		c.add("TLS ClientHello (1.0 to 1.3) to "+a.addr, "handshake failed: "+err.Error())
		return c.done(Fail, "no TLS handshake with %s: %v", a.addr, err)
	}
	leaf := st.PeerCertificates[0]
	c.add("TLS ClientHello (1.0 to 1.3), SNI "+orDash(serverName), fmt.Sprintf("%s, %s; certificate: subject %q, issuer %q, names [%s], valid %s to %s",
		tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), leaf.Subject.String(), leaf.Issuer.String(),
		strings.Join(certNames(leaf), ", "), leaf.NotBefore.UTC().Format(time.DateOnly), leaf.NotAfter.UTC().Format(time.DateOnly)))
	var fails, warns []string
	if st.Version < tls.VersionTLS12 {
		fails = append(fails, "negotiated "+tls.VersionName(st.Version)+" (below TLS 1.2)")
	}

	// 2. Verify properly: chain to a trusted root, validity and hostname.
	opts := x509.VerifyOptions{DNSName: host, Roots: a.opt.RootCAs, Intermediates: x509.NewCertPool()}
	for _, ic := range st.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	verified := false
	if _, err := leaf.Verify(opts); err != nil {
		c.add("verify the chain for "+host+" against the system roots"+map[bool]string{true: " and --cacert", false: ""}[a.opt.RootCAs != nil], "invalid: "+err.Error())
		fails = append(fails, "certificate does not verify: "+shortCertErr(err))
	} else {
		verified = true
		left := time.Until(leaf.NotAfter)
		c.add("verify the chain for "+host, fmt.Sprintf("valid, expires in %d days", int(left.Hours()/24)))
		if left < expirySoon {
			warns = append(warns, fmt.Sprintf("certificate expires in %d days", int(left.Hours()/24)))
		}
	}

	// 3. Does the server still accept TLS 1.1?
	if st.Version >= tls.VersionTLS12 {
		old := &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11} //nolint:gosec // version probe only
		if st2, err := a.tlsHandshake(ctx, old); err == nil {
			c.add("TLS ClientHello offering at most TLS 1.1", "accepted: "+tls.VersionName(st2.Version))
			fails = append(fails, "accepts "+tls.VersionName(st2.Version))
		} else {
			c.add("TLS ClientHello offering at most TLS 1.1", "refused: "+err.Error())
		}
	}

	if verified && st.Version >= tls.VersionTLS12 {
		a.probeTLS = &tls.Config{ServerName: serverName, RootCAs: a.opt.RootCAs, MinVersion: tls.VersionTLS12}
		if net.ParseIP(host) != nil {
			a.probeTLS.ServerName = host // crypto/tls verifies IP SANs by ServerName
		}
		a.tokenOK, a.tokenWhy = a.opt.Token != "", ""
	}
	switch {
	case len(fails) > 0:
		return c.done(Fail, "%s", strings.Join(fails, "; "))
	case len(warns) > 0:
		c.Severity = Minor
		return c.done(Warn, "%s, but %s", tls.VersionName(st.Version), strings.Join(warns, "; "))
	}
	return c.done(Pass, "%s with a valid certificate for %s", tls.VersionName(st.Version), host)
}

// tlsHandshake runs one TLS handshake on a fresh metered connection.
func (a *auditor) tlsHandshake(ctx context.Context, cfg *tls.Config) (tls.ConnectionState, error) {
	if err := a.lim.acquire(ctx); err != nil {
		return tls.ConnectionState{}, err
	}
	d := net.Dialer{Timeout: a.replyWait()}
	raw, err := d.DialContext(ctx, "tcp", a.addr)
	if err != nil {
		a.lim.release()
		return tls.ConnectionState{}, err
	}
	mc := &meteredConn{Conn: raw, lim: a.lim}
	defer mc.Close()
	tc := tls.Client(mc, cfg)
	hctx, cancel := context.WithTimeout(ctx, a.replyWait())
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return tls.ConnectionState{}, err
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return st, fmt.Errorf("no certificate")
	}
	return st, nil
}

func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func shortCertErr(err error) string {
	switch e := err.(type) {
	case x509.UnknownAuthorityError:
		return "signed by an unknown authority"
	case x509.HostnameError:
		return e.Error()
	case x509.CertificateInvalidError:
		if e.Reason == x509.Expired {
			return "expired or not yet valid"
		}
	}
	return err.Error()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
