package config

import (
	"slices"
	"testing"
)

// limits.max_batch (SPEC 10): 16 by default, set from the file or the
// environment, refused when not positive.
func TestMaxBatch(t *testing.T) {
	if d := Default().Limits.MaxBatch; d != 16 || DefaultMaxBatch != 16 {
		t.Fatalf("default max_batch %d, want 16", d)
	}
	c, err := Parse([]byte("limits:\n  max_batch: 256\n"), "t.yaml")
	if err != nil || c.Limits.MaxBatch != 256 {
		t.Fatalf("max_batch from the file: %v %+v", err, c)
	}
	c, err = Parse([]byte("limits:\n  max_message_bytes: 2MiB\n"), "t.yaml")
	if err != nil || c.Limits.MaxBatch != DefaultMaxBatch {
		t.Fatalf("max_batch left out of limits: %v, %d", err, c.Limits.MaxBatch)
	}
	if !slices.Contains(EnvNames(), "GATEWAY_LIMITS_MAX_BATCH") {
		t.Fatal("no GATEWAY_LIMITS_MAX_BATCH override")
	}
	c = withToken()
	if err := c.ApplyEnv(func(k string) (string, bool) { return "4", k == "GATEWAY_LIMITS_MAX_BATCH" }); err != nil || c.Limits.MaxBatch != 4 {
		t.Fatalf("GATEWAY_LIMITS_MAX_BATCH=4: %v, %d", err, c.Limits.MaxBatch)
	}
	for _, n := range []int{0, -1} {
		c := withToken()
		c.Limits.MaxBatch = n
		wantSettingErr(t, c.Validate(), "limits.max_batch", "positive")
	}
}
