package edge

import (
	"net/netip"
	"strings"
)

// Trusted reports whether peer lies in one of the prefixes (the load
// balancers of proxy.trusted_cidrs). IPv4-mapped IPv6 addresses, as a
// dual-stack listener reports IPv4 peers, match IPv4 prefixes and the other
// way round.
func Trusted(prefixes []netip.Prefix, peer netip.Addr) bool {
	if !peer.IsValid() {
		return false
	}
	peer = peer.Unmap().WithZone("")
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				// Covers more than the mapped range: compare as IPv6.
				if p.Contains(netip.AddrFrom16(peer.As16())) {
					return true
				}
				continue
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// maxXFFHops bounds how many entries ClientFromXFF looks at, from the right.
const maxXFFHops = 32

// ClientFromXFF returns the client address for a request that came from
// peer with the given X-Forwarded-For header values (in the order they
// appeared). Only a trusted peer is believed: for any other peer the answer
// is the peer itself. Each proxy appends the address it received the request
// from, so the list is read from the right, skipping our own trusted proxies;
// the first untrusted address is the client. Entries further left were
// written by the client or by proxies we do not know, and are ignored.
//
// If every entry is trusted, the leftmost one is returned (a client inside
// our own network). If an entry cannot be parsed before an untrusted one is
// found, the last trusted address seen is returned: it is the furthest hop
// we can vouch for.
func ClientFromXFF(values []string, peer netip.Addr, trusted []netip.Prefix) netip.Addr {
	peer = peer.Unmap()
	if !Trusted(trusted, peer) {
		return peer
	}
	last := peer
	hops := 0
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for {
			j := strings.LastIndexByte(v, ',')
			entry := strings.TrimSpace(v[j+1:])
			if entry != "" {
				hops++
				a, ok := parseXFFEntry(entry)
				if !ok || hops > maxXFFHops {
					return last
				}
				if !Trusted(trusted, a) {
					return a
				}
				last = a
			}
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return last
}

// parseXFFEntry accepts "1.2.3.4", "1.2.3.4:5678", "2001:db8::1" and
// "[2001:db8::1]:443" (some proxies add ports); "unknown" and obfuscated
// identifiers (RFC 7239 style) are not addresses.
func parseXFFEntry(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, false
		}
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
