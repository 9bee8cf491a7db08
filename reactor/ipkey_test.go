package reactor

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mcpgate/gateway/config"
)

func TestIPKey(t *testing.T) {
	def := newIPKeyer(config.Default().Limits)
	cases := []struct {
		k        ipKeyer
		in, want string
	}{
		{def, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{def, "2001:db8:1:2::1", "2001:db8:1:2::"},
		{def, "2001:db8:1:3::1", "2001:db8:1:3::"},
		{def, "::1", "::"},
		{def, "fe80::1%eth0", "fe80::"},
		{def, "192.0.2.7", "192.0.2.7"},
		{def, "::ffff:192.0.2.7", "192.0.2.7"}, // mapped: keyed as IPv4, never as ::/64
		{ipKeyer{v4: 24, v6: 48}, "2001:db8:1:2::1", "2001:db8:1::"},
		{ipKeyer{v4: 24, v6: 48}, "192.0.2.7", "192.0.2.0"},
		{ipKeyer{v4: 32, v6: 128}, "2001:db8:1:2::1", "2001:db8:1:2::1"},
	}
	for _, c := range cases {
		if got := c.k.key(netip.MustParseAddr(c.in)); got != netip.MustParseAddr(c.want) {
			t.Errorf("%+v key(%s) = %s, want %s", c.k, c.in, got, c.want)
		}
	}
	if got := def.key(netip.Addr{}); got.IsValid() {
		t.Errorf("key(zero) = %s, want the zero Addr", got)
	}
	// A config built by hand (zero prefixes) gets the defaults.
	if k := newIPKeyer(config.Limits{}); k != (ipKeyer{v4: 32, v6: 64}) {
		t.Errorf("newIPKeyer(zero) = %+v", k)
	}
}

// The key is computed on every admission and release: no allocation.
func TestIPKeyAllocs(t *testing.T) {
	k := newIPKeyer(config.Default().Limits)
	v6 := netip.MustParseAddr("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
	zoned := netip.MustParseAddr("fe80::1%eth0")
	v4 := netip.MustParseAddr("::ffff:192.0.2.7")
	var sink netip.Addr
	if n := testing.AllocsPerRun(1000, func() { sink = k.key(v6); sink = k.key(zoned); sink = k.key(v4) }); n != 0 {
		t.Fatalf("%v allocations per key", n)
	}
	_ = sink
}

// admitFrom admits one connection from addr on s and returns it (reject 0:
// admitted).
func admitFrom(s *Server, addr string) *conn {
	c := &conn{srv: s}
	c.sess.Remote = netip.MustParseAddr(addr)
	s.admit(c, time.Now().UnixNano())
	return c
}

// max_connections_per_ip counts an IPv6 client's /64 as one client (or the
// configured limits.ipv6_prefix), IPv4 per address; releases give the slot
// back and leave no key behind.
func TestPerIPConnectionsKeyOnPrefix(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix int
		a, b   string // two addresses: one budget when same is set
		same   bool
	}{
		{"v6 same /64", 64, "2001:db8:0:1::1", "2001:db8:0:1:ffff::2", true},
		{"v6 other /64", 64, "2001:db8:0:1::1", "2001:db8:0:2::1", false},
		{"v6 /48 configured", 48, "2001:db8:0:1::1", "2001:db8:0:2::1", true},
		{"v6 /128 configured", 128, "2001:db8:0:1::1", "2001:db8:0:1::2", false},
		{"v4 per address", 64, "192.0.2.1", "192.0.2.2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Limits.MaxConnectionsPerIP = 2
			cfg.Limits.IPv6Prefix = tc.prefix
			s := newServer(t, cfg)
			c1, c2 := admitFrom(s, tc.a), admitFrom(s, tc.a)
			if c1.reject != 0 || c2.reject != 0 {
				t.Fatalf("refused under the cap: %d %d", c1.reject, c2.reject)
			}
			c3 := admitFrom(s, tc.b)
			if tc.same && c3.reject != 503 {
				t.Fatalf("third connection from the same prefix: reject %d, want 503", c3.reject)
			}
			if !tc.same && c3.reject != 0 {
				t.Fatalf("connection from another prefix refused: %d", c3.reject)
			}
			for _, c := range []*conn{c1, c2, c3} {
				s.releaseAdmission(c)
			}
			if c := admitFrom(s, tc.b); c.reject != 0 {
				t.Fatalf("refused after the slots were released: %d", c.reject)
			} else {
				s.releaseAdmission(c)
			}
			if n := len(s.ipConns); n != 0 {
				t.Fatalf("%d per-IP keys left after every release", n)
			}
		})
	}
}

// ratelimit.handshakes_per_ip keys on the same prefix.
func TestHandshakesPerIPKeyOnPrefix(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit.HandshakesPerIP = config.CountWindow{Count: 3, Window: config.Duration(time.Minute)}
	s := newServer(t, cfg)
	for i, a := range []string{"2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:1:2:3:4"} {
		if c := admitFrom(s, a); c.reject != 0 {
			t.Fatalf("handshake %d (%s) refused: %d", i+1, a, c.reject)
		}
	}
	c := admitFrom(s, "2001:db8:7:7:ffff:ffff:ffff:ffff")
	if c.reject != 429 || c.retryAfter < 1 {
		t.Fatalf("4th handshake from one /64: reject %d retry %d, want 429", c.reject, c.retryAfter)
	}
	if c := admitFrom(s, "2001:db8:7:8::1"); c.reject != 0 {
		t.Fatalf("handshake from the next /64 refused: %d", c.reject)
	}
	if c := admitFrom(s, "192.0.2.9"); c.reject != 0 {
		t.Fatalf("IPv4 handshake refused: %d", c.reject)
	}
}
