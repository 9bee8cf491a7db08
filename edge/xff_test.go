package edge

import (
	"net/netip"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func TestTrusted(t *testing.T) {
	ps := prefixes("10.0.0.0/8", "2001:db8:1::/48", "::ffff:192.168.0.0/112", "203.0.113.5/32")
	cases := []struct {
		peer string
		want bool
	}{
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true}, // dual-stack listener
		{"11.0.0.1", false},
		{"2001:db8:1::5", true},
		{"2001:db8:2::5", false},
		{"192.168.3.4", true}, // mapped prefix, plain peer
		{"192.169.3.4", false},
		{"203.0.113.5", true},
		{"203.0.113.6", false},
		{"fe80::1%eth0", false},
	}
	for _, tc := range cases {
		if got := Trusted(ps, netip.MustParseAddr(tc.peer)); got != tc.want {
			t.Errorf("%s: %v", tc.peer, got)
		}
	}
	if Trusted(ps, netip.Addr{}) || Trusted(nil, netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("invalid peer or empty list trusted")
	}
	// ::/0 is an IPv6 prefix: IPv4 peers (mapped or not) are not in it.
	if Trusted(prefixes("::/0"), netip.MustParseAddr("1.2.3.4")) || !Trusted(prefixes("::/0"), netip.MustParseAddr("::1")) {
		t.Fatal("::/0 semantics")
	}
	if !Trusted(prefixes("::ffff:0.0.0.0/80"), netip.MustParseAddr("1.2.3.4")) {
		t.Fatal("a wide mapped prefix does not cover IPv4")
	}
}

func TestClientFromXFF(t *testing.T) {
	lb := prefixes("10.0.0.0/8", "fd00::/8")
	cases := []struct {
		name   string
		values []string
		peer   string
		want   string
	}{
		{"untrusted peer ignored", []string{"1.2.3.4"}, "198.51.100.1", "198.51.100.1"},
		{"no header", nil, "10.0.0.1", "10.0.0.1"},
		{"one hop", []string{"198.51.100.7"}, "10.0.0.1", "198.51.100.7"},
		{"spoofed left part", []string{"6.6.6.6, 198.51.100.7"}, "10.0.0.1", "198.51.100.7"},
		{"through two of ours", []string{"6.6.6.6, 198.51.100.7, 10.0.0.2"}, "10.0.0.1", "198.51.100.7"},
		{"several header lines", []string{"6.6.6.6", "198.51.100.7", "10.0.0.3,10.0.0.2"}, "10.0.0.1", "198.51.100.7"},
		{"with port", []string{"198.51.100.7:5555"}, "10.0.0.1", "198.51.100.7"},
		{"ipv6", []string{"2001:db8::9"}, "fd00::1", "2001:db8::9"},
		{"ipv6 bracketed port", []string{"[2001:db8::9]:443"}, "fd00::1", "2001:db8::9"},
		{"mapped", []string{"::ffff:198.51.100.7"}, "::ffff:10.0.0.1", "198.51.100.7"},
		{"all trusted", []string{"10.9.9.9, 10.0.0.2"}, "10.0.0.1", "10.9.9.9"},
		{"garbage after trusted", []string{"198.51.100.7, unknown, 10.0.0.2"}, "10.0.0.1", "10.0.0.2"},
		{"garbage rightmost", []string{"198.51.100.7, _hidden"}, "10.0.0.1", "10.0.0.1"},
		{"empty entries", []string{" , 198.51.100.7 ,, "}, "10.0.0.1", "198.51.100.7"},
		{"zone refused", []string{"fe80::1%eth0"}, "10.0.0.1", "10.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ClientFromXFF(tc.values, netip.MustParseAddr(tc.peer), lb)
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestClientFromXFFHopCap(t *testing.T) {
	var v []string
	v = append(v, "198.51.100.7")
	for range 100 {
		v = append(v, "10.0.0.2")
	}
	got := ClientFromXFF(v, netip.MustParseAddr("10.0.0.1"), prefixes("10.0.0.0/8"))
	if got != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("got %v", got)
	}
}
