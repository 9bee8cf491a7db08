package config

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzLoadYAML decodes arbitrary bytes as a configuration file. Parse must
// never panic, its errors must be *Error values, and what Redacted prints for
// an accepted file must parse back to the same printed configuration.
// Seeds live in testdata/fuzz/FuzzLoadYAML.
func FuzzLoadYAML(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:8080\npath: /mcp\n"))
	f.Add([]byte("limits: {max_message_bytes: 1MiB, idle_timeout: 2m}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %q is not a *config.Error", err, err)
			}
			return
		}
		_ = c.Validate() // must not panic either
		_ = c.EffectiveMaxConnections()
		out := c.Redacted()
		back, err := Parse(out, "redacted.yaml")
		if err != nil {
			t.Fatalf("printed config does not parse: %v\n%s", err, out)
		}
		if again := back.Redacted(); !bytes.Equal(again, out) {
			t.Fatalf("printed config is not stable:\n%s\nvs\n%s", out, again)
		}
	})
}
