package reactor

import (
	"net/netip"

	"github.com/mcpgate/gateway/config"
)

// ipKeyer maps a client address to the key its per-IP limits count under
// (limits.max_connections_per_ip and ratelimit.handshakes_per_ip): the
// address masked to limits.ipv6_prefix bits (default 64) for IPv6 and
// limits.ipv4_prefix bits (default 32) for IPv4. A subscriber or host is
// usually given a whole IPv6 /64 (RFC 6177), so keying on the /128 would
// let one client open a fresh budget per address. The address is the
// client's after PROXY / X-Forwarded-For from a trusted peer, so clients
// behind a balancer are keyed the same way.
type ipKeyer struct{ v4, v6 int }

func newIPKeyer(l config.Limits) ipKeyer {
	k := ipKeyer{v4: l.IPv4Prefix, v6: l.IPv6Prefix}
	if k.v4 <= 0 || k.v4 > 32 {
		k.v4 = config.DefaultIPv4Prefix
	}
	if k.v6 <= 0 || k.v6 > 128 {
		k.v6 = config.DefaultIPv6Prefix
	}
	return k
}

// key is a's per-IP key. It does not allocate. An IPv4-mapped IPv6 address
// is keyed as the IPv4 address it maps (the edge unmaps them already), and
// a zone is dropped; the zero Addr stays the zero Addr.
func (k ipKeyer) key(a netip.Addr) netip.Addr {
	a = a.Unmap()
	bits := k.v6
	if a.Is4() {
		bits = k.v4
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a
	}
	return p.Addr()
}
