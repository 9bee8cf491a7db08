//go:build faultinject

package fault

import (
	"errors"
	"testing"
)

// hit reports whether Hit(point) panicked, and checks the value.
func hit(t *testing.T, point string) (n int64, panicked bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			var inj Injected
			if !errors.As(r.(error), &inj) || inj.Point != point {
				t.Fatalf("Hit(%q) panicked with %#v", point, r)
			}
			n, panicked = inj.N, true
		}
	}()
	Hit(point)
	return 0, false
}

func TestHitInjects(t *testing.T) {
	if !Enabled {
		t.Fatal("Enabled false with the faultinject tag")
	}
	t.Cleanup(func() { _ = Set("") })

	must(t, Set(""))
	if _, p := hit(t, "a.b"); p {
		t.Fatal("panicked with no plan")
	}

	must(t, Set("a.b"))
	for range 3 {
		if _, p := hit(t, "a.b"); !p {
			t.Fatal("a bare point must panic on every hit")
		}
	}
	if _, p := hit(t, "a.c"); p {
		t.Fatal("panicked at a point not named")
	}

	must(t, Set("a.b:2, c.d:1,c.d:3"))
	var got []bool
	for range 4 {
		_, p := hit(t, "a.b")
		got = append(got, p)
	}
	if want := []bool{false, true, false, false}; !equal(got, want) {
		t.Fatalf("a.b:2 panicked on hits %v, want %v", got, want)
	}
	got = nil
	for range 4 {
		_, p := hit(t, "c.d")
		got = append(got, p)
	}
	if want := []bool{true, false, true, false}; !equal(got, want) {
		t.Fatalf("c.d:1,c.d:3 panicked on hits %v, want %v", got, want)
	}
	must(t, Set("a.b:2")) // Set starts the counts over
	hit(t, "a.b")
	if n, p := hit(t, "a.b"); !p || n != 2 {
		t.Fatalf("after Set: hit 2 panicked %v (n %d)", p, n)
	}
}

func TestSetRejects(t *testing.T) {
	t.Cleanup(func() { _ = Set("") })
	for _, bad := range []string{":1", "a.b:0", "a.b:x", "a.b:-1"} {
		if err := Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
