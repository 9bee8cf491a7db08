package audit

import "fmt"

// grade applies the rubric of audit/README.md to the checks:
//
//  1. Any critical check failed (plaintext off loopback, no Origin
//     validation, served without auth, cookies as auth): F.
//  2. Otherwise count the failed major checks (TLS version or certificate,
//     auth deadline, message size, rate limit, availability): none A, one
//     C, two D, three or more F.
//  3. A warning on a graded check (not an informational one such as
//     plaintext on loopback) caps the grade at B.
//  4. A skipped check caps the grade at B: the audit does not vouch for
//     what it did not see. A critical check skipped for another reason than
//     a missing or unusable token (the probe could not be run) caps it at C.
func grade(checks []Check) (string, []string) {
	var reasons, caps []string
	var criticalFails, majorFails []string
	capAt := "A"
	lower := func(g, why string) {
		if g > capAt {
			capAt = g
		}
		caps = append(caps, why)
	}
	for _, c := range checks {
		switch {
		case c.Status == Fail && c.Severity == Critical:
			criticalFails = append(criticalFails, c.ID)
			reasons = append(reasons, fmt.Sprintf("F: %s failed (critical): %s", c.ID, c.Summary))
		case c.Status == Fail && c.Severity == Major:
			majorFails = append(majorFails, c.ID)
			reasons = append(reasons, fmt.Sprintf("%s failed (major): %s", c.ID, c.Summary))
		case c.Status == Fail, c.Status == Warn && c.Severity != Info:
			lower("B", fmt.Sprintf("at most B: %s %s: %s", c.ID, c.Status, c.Summary))
		case c.Status == Skip && c.Severity == Critical && !c.tokenSkip:
			lower("C", fmt.Sprintf("at most C: %s skipped (critical, not verified): %s", c.ID, c.Summary))
		case c.Status == Skip:
			lower("B", fmt.Sprintf("at most B: %s skipped (not verified): %s", c.ID, c.Summary))
		case c.Status == Warn:
			reasons = append(reasons, fmt.Sprintf("not graded: %s warn: %s", c.ID, c.Summary))
		}
	}
	if len(criticalFails) > 0 {
		return "F", reasons
	}
	g := "A"
	switch n := len(majorFails); {
	case n >= 3:
		g = "F"
	case n == 2:
		g = "D"
	case n == 1:
		g = "C"
	}
	if len(majorFails) > 0 {
		reasons = append(reasons, fmt.Sprintf("%s: %d major check(s) failed", g, len(majorFails)))
	}
	if capAt > g {
		g = capAt
		reasons = append(reasons, caps...)
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "A: every check passed")
	}
	return g, reasons
}
