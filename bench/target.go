package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// target is a resolved, permitted destination.
type target struct {
	url      *url.URL
	host     string         // host name as written in the URL
	addr     netip.AddrPort // the address every connection dials
	loopback bool
	sources  []netip.Addr // source addresses, one per index modulo len; empty = let the kernel pick
}

// resolver looks up a host's addresses; tests replace it.
type resolver func(ctx context.Context, host string) ([]netip.Addr, error)

func systemResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// resolveTarget parses rawURL and refuses any destination that is not
// loopback (127.0.0.0/8, ::1, localhost) unless its host is listed in allow:
// a load generator must not be pointed at someone else's server by accident.
func resolveTarget(ctx context.Context, rawURL string, allow []string, lookup resolver) (*target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--url: %v", err)
	}
	port := u.Port()
	switch u.Scheme {
	case "ws":
		if port == "" {
			port = "80"
		}
	case "wss":
		if port == "" {
			port = "443"
		}
	default:
		return nil, fmt.Errorf("--url: scheme must be ws or wss, not %q", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("--url: no host in %q", rawURL)
	}
	pn, err := netip.ParseAddrPort(net.JoinHostPort("0.0.0.0", port))
	if err != nil {
		return nil, fmt.Errorf("--url: bad port %q", port)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if addrs, err = lookup(ctx, host); err != nil {
			return nil, fmt.Errorf("--url: resolving %s: %v", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("--url: %s has no address", host)
		}
	}
	allLoop := true
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			allLoop = false
		}
	}
	if !allLoop && !hostAllowed(host, allow) {
		return nil, fmt.Errorf("refusing non-loopback target %s: pass --allow-remote %s if you own it", host, host)
	}
	// Prefer IPv4: only 127/8 offers more than one source address.
	pick := addrs[0].Unmap()
	for _, a := range addrs {
		if a.Unmap().Is4() {
			pick = a.Unmap()
			break
		}
	}
	return &target{
		url:      u,
		host:     host,
		addr:     netip.AddrPortFrom(pick, pn.Port()),
		loopback: allLoop,
	}, nil
}

func hostAllowed(host string, allow []string) bool {
	for _, a := range allow {
		a = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a), "["), "]")
		if strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}

// sourceAddrs returns k source addresses 127.0.0.1 .. 127.0.0.k for an IPv4
// loopback target, so that the run is not bounded by one address's ~28,000
// ephemeral ports towards a single destination. Other targets get none.
func sourceAddrs(t *target, k int) []netip.Addr {
	if !t.loopback || !t.addr.Addr().Is4() || k < 1 {
		return nil
	}
	out := make([]netip.Addr, k)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)})
	}
	return out
}

// autoSourceIPs is the default --source-ips: one address per 20,000
// connections (the ephemeral range is 28,232 ports by default).
func autoSourceIPs(conns int) int {
	k := (conns + 19_999) / 20_000
	return min(max(k, 1), 254)
}

// source returns the source address of global connection index i.
func (t *target) source(i int) (netip.Addr, bool) {
	if len(t.sources) == 0 {
		return netip.Addr{}, false
	}
	return t.sources[i%len(t.sources)], true
}
