//go:build !faultinject

package fault

import "testing"

// Without the tag, Hit never panics, whatever the environment says, and
// costs nothing.
func TestHitIsNoOp(t *testing.T) {
	t.Setenv("GATEWAY_FAULT", "x.y")
	if Enabled {
		t.Fatal("Enabled without the faultinject tag")
	}
	Hit("x.y")
	if n := testing.AllocsPerRun(100, func() { Hit("x.y") }); n != 0 {
		t.Fatalf("Hit allocates %v", n)
	}
}

func BenchmarkHit(b *testing.B) {
	for b.Loop() {
		Hit("builtin.handle")
	}
}
