package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d as a Go duration without zero trailing units ("5s",
// "2m", "1h30m"), which time.ParseDuration reads back.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalYAML writes d as a Go duration string ("5s", "2m").
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string ("5s", "1m30s"). A bare number
// other than 0 is refused: the unit is required.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "a duration must be a string such as \"5s\"")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return typeErr(n, fmt.Sprintf("invalid duration %q (use a Go duration such as \"5s\", \"1m30s\")", n.Value))
	}
	*d = Duration(v)
	return nil
}

// Int returns s as an int, saturating at the largest int.
func (s Size) Int() int {
	if int64(s) > int64(math.MaxInt) {
		return math.MaxInt
	}
	return int(s)
}

var binaryUnits = []struct {
	name  string
	bytes int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// String formats s as "<n>KiB/MiB/GiB/TiB" when it is an exact multiple of
// one of them, else as a plain byte count.
func (s Size) String() string {
	if s > 0 {
		for _, u := range binaryUnits {
			if int64(s)%u.bytes == 0 {
				return strconv.FormatInt(int64(s)/u.bytes, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalYAML writes s as "1MiB" when exact, else as an integer byte count.
func (s Size) MarshalYAML() (any, error) {
	str := s.String()
	if n, err := strconv.ParseInt(str, 10, 64); err == nil {
		return n, nil
	}
	return str, nil
}

// UnmarshalYAML reads an integer byte count or a string accepted by ParseSize.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "a size must be a byte count or a string such as \"1MiB\"")
	}
	if n.Tag == "!!int" {
		var v int64
		if err := n.Decode(&v); err != nil {
			return typeErr(n, fmt.Sprintf("invalid size %q (out of range)", n.Value))
		}
		if v < 0 {
			return typeErr(n, fmt.Sprintf("invalid size %q (negative)", n.Value))
		}
		*s = Size(v)
		return nil
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeErr(n, err.Error())
	}
	*s = Size(v)
	return nil
}

var sizeUnits = map[string]int64{
	"":    1,
	"B":   1,
	"KB":  1000,
	"MB":  1000 * 1000,
	"GB":  1000 * 1000 * 1000,
	"TB":  1000 * 1000 * 1000 * 1000,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
	"TiB": 1 << 40,
}

// ParseSize parses a byte count: a non-negative decimal integer optionally
// followed (spaces allowed in between) by a unit: B, KB, MB, GB, TB (powers
// of 1000) or KiB, MiB, GiB, TiB (powers of 1024). Units are case-sensitive
// ("1Mb" is refused, not guessed). Fractions, signs and overflow are errors.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want a byte count or a number with a unit such as \"1MiB\"", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: number out of range", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, unit)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: out of range", s)
	}
	return n * mult, nil
}

// UnmarshalYAML accepts one address as a scalar or several as a sequence.
func (l *Listeners) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*l = Listeners{}
			return nil
		}
		*l = Listeners{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(Listeners, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return typeErr(item, "a listen address must be a string \"host:port\"")
			}
			out = append(out, item.Value)
		}
		*l = out
		return nil
	}
	return typeErr(n, "listen must be \"host:port\" or a list of them")
}

// typeErr makes an error that yaml.v3 collects with the others (a *TypeError)
// instead of aborting the decode; the line is rewritten into an *Error by Parse.
func typeErr(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
