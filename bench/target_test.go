package bench

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func fakeResolver(m map[string][]string) resolver {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		ss, ok := m[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	}
}

func TestLoopbackTargets(t *testing.T) {
	res := fakeResolver(map[string][]string{
		"localhost":     {"::1", "127.0.0.1"},
		"v6only.test":   {"::1"},
		"example.com":   {"93.184.216.34"},
		"mixed.test":    {"127.0.0.1", "10.0.0.5"},
		"sneaky.test":   {"10.1.2.3"},
		"internal.test": {"192.168.1.10"},
	})
	cases := []struct {
		url   string
		allow []string
		ok    bool
		addr  string
	}{
		{"ws://127.0.0.1:8080/mcp", nil, true, "127.0.0.1:8080"},
		{"ws://127.9.8.7:1/mcp", nil, true, "127.9.8.7:1"},
		{"ws://[::1]:8080/mcp", nil, true, "[::1]:8080"},
		{"ws://localhost:8080/mcp", nil, true, "127.0.0.1:8080"}, // IPv4 preferred
		{"wss://localhost/mcp", nil, true, "127.0.0.1:443"},
		{"ws://v6only.test/x", nil, true, "[::1]:80"},
		{"ws://[::ffff:127.0.0.1]:9/x", nil, true, "127.0.0.1:9"},
		{"ws://10.0.0.1:8080/mcp", nil, false, ""},
		{"ws://0.0.0.0:8080/mcp", nil, false, ""},
		{"ws://example.com/mcp", nil, false, ""},
		{"ws://mixed.test/mcp", nil, false, ""}, // one remote address is enough to refuse
		{"ws://sneaky.test/mcp", []string{"other.test"}, false, ""},
		{"ws://example.com/mcp", []string{"EXAMPLE.com"}, true, "93.184.216.34:80"},
		{"ws://[2001:db8::1]:8443/mcp", []string{"[2001:db8::1]"}, true, "[2001:db8::1]:8443"},
		{"ws://192.168.1.10:8080/mcp", []string{"192.168.1.10"}, true, "192.168.1.10:8080"},
		{"ws://internal.test:8080/mcp", []string{"192.168.1.10"}, false, ""}, // names must match as written
		{"http://127.0.0.1:8080/mcp", nil, false, ""},
		{"ws:///mcp", nil, false, ""},
		{"ws://nosuch.test/mcp", nil, false, ""},
	}
	for _, c := range cases {
		tg, err := resolveTarget(context.Background(), c.url, c.allow, res)
		if (err == nil) != c.ok {
			t.Errorf("%s allow=%v: err=%v, want ok=%v", c.url, c.allow, err, c.ok)
			continue
		}
		if err == nil && tg.addr.String() != c.addr {
			t.Errorf("%s: dials %s, want %s", c.url, tg.addr, c.addr)
		}
		if err != nil && strings.Contains(c.url, "example.com") && !strings.Contains(err.Error(), "--allow-remote") {
			t.Errorf("refusal should name --allow-remote: %v", err)
		}
	}
}

func TestSourceAddrs(t *testing.T) {
	tg, err := resolveTarget(context.Background(), "ws://127.0.0.1:8080/mcp", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tg.sources = sourceAddrs(tg, 3)
	var got []string
	for i := range 6 {
		a, ok := tg.source(i)
		if !ok {
			t.Fatal("no source address")
		}
		got = append(got, a.String())
	}
	if strings.Join(got, " ") != "127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.1 127.0.0.2 127.0.0.3" {
		t.Errorf("sources %v", got)
	}
	v6, _ := resolveTarget(context.Background(), "ws://[::1]:8080/mcp", nil, nil)
	if s := sourceAddrs(v6, 3); s != nil {
		t.Errorf("IPv6 loopback has one address, got %v", s)
	}
	remote, _ := resolveTarget(context.Background(), "ws://10.0.0.1:8080/mcp", []string{"10.0.0.1"}, nil)
	if s := sourceAddrs(remote, 3); s != nil {
		t.Errorf("remote target must keep the kernel's choice, got %v", s)
	}
	for n, want := range map[int]int{1: 1, 20_000: 1, 20_001: 2, 60_000: 3, 100_000: 5} {
		if got := autoSourceIPs(n); got != want {
			t.Errorf("autoSourceIPs(%d) = %d, want %d", n, got, want)
		}
	}
}
