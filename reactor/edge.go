package reactor

import (
	"github.com/panjf2000/gnet/v2"

	"github.com/mcpgate/gateway/edge"
)

// proxyHeader reads the PROXY v1/v2 header a trusted balancer sends before
// anything else, and admits the connection under the client's address. From
// an untrusted peer, a PROXY header is refused rather than read as HTTP. It
// returns ok == false when onTraffic must stop and return act.
func (c *conn) proxyHeader(now int64) (act gnet.Action, ok bool) {
	s := c.srv
	raw, _ := c.gc.Peek(-1)
	if !c.needProxy {
		// Plain HTTP (not TLS) from an untrusted peer: a PROXY signature is
		// someone trying to choose their own address.
		if s.opt.ProxyProtocol && edge.HasSignature(raw) {
			c.status = -4
			c.refusal = "PROXY header from an untrusted peer"
			s.m.Handshakes.WithLabelValues("untrusted_proxy").Inc()
			s.log.Warn("PROXY header from an untrusted peer refused", "remote", c.sess.Remote.String())
			return gnet.Close, false
		}
		return gnet.None, true
	}
	src, n, err := edge.ParseProxyHeader(raw)
	if err != nil {
		c.status = -4
		c.refusal = "bad PROXY header"
		s.m.Handshakes.WithLabelValues("bad_proxy").Inc()
		return gnet.Close, false
	}
	if n == 0 {
		return gnet.None, false // wait for the rest (bounded by MaxHeaderLen and the deadline)
	}
	_, _ = c.gc.Discard(n)
	c.needProxy = false
	if src.IsValid() {
		c.sess.Remote = src.Addr()
	}
	s.admit(c, now)
	return gnet.None, true
}

// forwardedFor admits a connection from a trusted HTTP proxy under the
// client that X-Forwarded-For names (the rightmost address the trusted chain
// did not add), or under the proxy's own address when there is none. It
// returns the refusal to answer, if any.
func (c *conn) forwardedFor(values []string, now int64) (status int, retryAfter int) {
	if !c.admitLater {
		return 0, 0
	}
	s := c.srv
	c.admitLater = false
	if client := edge.ClientFromXFF(values, c.sess.Remote, s.opt.Trusted); client.IsValid() {
		c.sess.Remote = client
	}
	s.admit(c, now)
	return int(c.reject), int(c.retryAfter)
}
