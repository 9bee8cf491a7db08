package session

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestSessionSize(t *testing.T) {
	// Documented in the Session doc comment and README; keep them in step.
	if got := unsafe.Sizeof(Session{}); got != 160 {
		t.Fatalf("Session is %d bytes, doc says 160", got)
	}
}

func TestTableAddGetRemove(t *testing.T) {
	tb := NewTable()
	a, b := &Session{}, &Session{}
	tb.Add(a)
	tb.Add(b)
	if tb.Get(a.ID()) != a || tb.Get(b.ID()) != b || tb.Len() != 2 {
		t.Fatal("lookup failed")
	}
	old := a.ID()
	tb.Remove(a)
	if tb.Get(old) != nil {
		t.Fatal("removed session still found")
	}
	c := &Session{}
	tb.Add(c) // reuses a's slot with a new generation
	if c.ID().slot() != old.slot() {
		t.Fatalf("slot not reused")
	}
	if tb.Get(old) != nil {
		t.Fatal("stale ID found the slot's new session")
	}
	if tb.Get(c.ID()) != c || tb.Len() != 2 {
		t.Fatal("new session not found")
	}
	if tb.Get(0) != nil || tb.Get(ID(1<<40|9999999)) != nil {
		t.Fatal("bogus IDs found something")
	}
}

func TestSubjectIndex(t *testing.T) {
	tb := NewTable()
	a, b, c := &Session{}, &Session{}, &Session{}
	for _, s := range []*Session{a, b, c} {
		tb.Add(s)
	}
	tb.SetSubject(a, "alice")
	tb.SetSubject(b, "alice")
	tb.SetSubject(c, "bob")
	if n := len(tb.BySubject("alice")); n != 2 {
		t.Fatalf("alice has %d sessions", n)
	}
	tb.Remove(a)
	if got := tb.BySubject("alice"); len(got) != 1 || got[0] != b {
		t.Fatal("index not updated on remove")
	}
	tb.Remove(b)
	if len(tb.bySubject) != 1 {
		t.Fatal("empty subject entry kept")
	}
}

func TestTableConcurrent(t *testing.T) {
	tb := NewTable()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				s := &Session{}
				tb.Add(s)
				if tb.Get(s.ID()) != s {
					t.Error("lost own session")
					return
				}
				tb.Remove(s)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			tb.Range(func(*Session) bool { return true })
		}
	}()
	wg.Wait()
	if tb.Len() != 0 {
		t.Fatalf("len %d", tb.Len())
	}
}

func TestParseAuth(t *testing.T) {
	cases := []struct {
		in   string
		tok  string
		want AuthVerdict
	}{
		{`{"type":"auth","token":"abc"}`, "abc", AuthAccepted},
		{`{"token":"abc","type":"auth"}`, "abc", AuthAccepted},
		{` { "type" : "auth" , "token" : "abc" } `, "abc", AuthAccepted},
		{`{"token":"abc","type":"auth","extra":1}`, "", AuthRejected},
		{`{"Type":"auth","token":"abc"}`, "", AuthRejected},
		{`{"type":"auth","Token":"abc"}`, "", AuthRejected},
		{`{"type":"auth","token":"abc","token":"def"}`, "", AuthRejected},
		{`{"type":"auth","type":"auth","token":"abc"}`, "", AuthRejected},
		{`{"type":"auth","token":{"a":"b"}}`, "", AuthRejected},
		{`{"type":"auth","token":null}`, "", AuthRejected},
		{`{"type":"auth"}`, "", AuthRejected},
		{`{"type":"auth","token":""}`, "", AuthRejected},
		{`{"type":"login","token":"abc"}`, "", AuthRejected},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "", AuthRejected},
		{`[1,2]`, "", AuthRejected},
		{`"auth"`, "", AuthRejected},
		{`{"type":"auth","token":5}`, "", AuthRejected},
		{`not json`, "", AuthNotJSON},
		{`{"type":"auth","token":"abc"`, "", AuthNotJSON},
		{``, "", AuthNotJSON},
	}
	for _, c := range cases {
		tok, v := ParseAuth([]byte(c.in))
		if tok != c.tok || v != c.want {
			t.Errorf("%q: got %q,%d want %q,%d", c.in, tok, v, c.tok, c.want)
		}
	}
	if code, r := AuthNotJSON.CloseFor(); code != 1007 || r != "Invalid message format" {
		t.Fatal(code, r)
	}
	if code, r := AuthRejected.CloseFor(); code != 1008 || r != "Invalid credentials" {
		t.Fatal(code, r)
	}
}

func TestAppendAuthOK(t *testing.T) {
	got := string(AppendAuthOK(nil, ID(0x0000000100000002)))
	if got != `{"type":"auth_ok","session":"0000000100000002"}` {
		t.Fatal(got)
	}
}

func BenchmarkTableGet(b *testing.B) {
	tb := NewTable()
	ids := make([]ID, 10000)
	for i := range ids {
		s := &Session{}
		tb.Add(s)
		ids[i] = s.ID()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if tb.Get(ids[i%len(ids)]) == nil {
			b.Fatal("miss")
		}
		i++
	}
}

// TestIDFormat: the ID prints as auth_ok shows it, in fmt and in slog's
// JSON and text output alike.
func TestIDFormat(t *testing.T) {
	id := ID(0x0000_0002_0000_00ab)
	want := "00000002000000ab"
	if got := id.String(); got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	if ok := string(AppendAuthOK(nil, id)); !strings.Contains(ok, `"session":"`+want+`"`) {
		t.Fatalf("auth_ok %s does not carry %s", ok, want)
	}
	var jb, tb bytes.Buffer
	slog.New(slog.NewJSONHandler(&jb, nil)).Info("x", "session", id)
	slog.New(slog.NewTextHandler(&tb, nil)).Info("x", "session", id)
	if !strings.Contains(jb.String(), `"session":"`+want+`"`) || !strings.Contains(tb.String(), "session="+want) {
		t.Fatalf("slog prints %q and %q", jb.String(), tb.String())
	}
}

func TestParseID(t *testing.T) {
	id := ID(0xdead_beef_0000_0042)
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(%s) = %v, %v", id, got, err)
	}
	for _, bad := range []string{"", "42", "00000000000000zz", "0000000000000000ff", "+000000000000042"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}
