package bench

import (
	"fmt"
	"strings"
)

// limitHints names the gateway limit behind the errors a run met, so that
// a first run against a default gateway (whose limits are set for hostile
// clients, not for a load generator on one address with one token) says
// what refused it and how to get past it, instead of leaving a table of
// 429s to decode (SPEC 12).
func limitHints(rows []ErrorRow) []string {
	var hints []string
	sum := func(match func(kind string) bool) int64 {
		var n int64
		for _, r := range rows {
			if match(r.Kind) {
				n += r.Count
			}
		}
		return n
	}
	if n := sum(func(k string) bool { return strings.HasSuffix(k, "/http 429") }); n > 0 {
		hints = append(hints, fmt.Sprintf("%d upgrades refused with 429: the gateway's ratelimit.handshakes_per_ip "+
			"(default 30 per 10 s per client address). Spread the connections over more 127.0.0.x addresses "+
			"(--source-ips), slow them down (--ramp), or raise that limit", n))
	}
	if n := sum(func(k string) bool { return strings.HasSuffix(k, "/http 503") }); n > 0 {
		hints = append(hints, fmt.Sprintf("%d upgrades refused with 503: limits.max_connections_per_ip (default 256), "+
			"limits.max_pending_auth or limits.max_connections, or the gateway is draining. Use --source-ips or raise the limit", n))
	}
	if n := sum(func(k string) bool { return strings.Contains(k, "close 1008 Rate limit exceeded") }); n > 0 {
		hints = append(hints, fmt.Sprintf("%d connections closed 1008 \"Rate limit exceeded\": ratelimit.per_connection "+
			"(default 100 messages per 10 s) or ratelimit.frames_per_connection. Pace the calls (--rate) or raise the limit", n))
	}
	if n := sum(func(k string) bool { return strings.Contains(k, "rpc error -31029") }); n > 0 {
		hints = append(hints, fmt.Sprintf("%d calls answered -31029: ratelimit.per_subject (default 1,000 per 10 s per subject; "+
			"every connection of this run uses the same token, so one subject). Pace the calls (--rate) or raise the limit", n))
	}
	return hints
}
