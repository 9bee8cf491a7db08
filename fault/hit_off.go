//go:build !faultinject

package fault

// Enabled reports whether this build can inject faults (-tags faultinject).
const Enabled = false

// Hit marks the injection point named point. Without the faultinject build
// tag it does nothing and costs nothing (it is inlined away).
func Hit(point string) {}
