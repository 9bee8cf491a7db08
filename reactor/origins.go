package reactor

import (
	"strings"

	"github.com/mcpgate/gateway/config"
)

// originSet is origins.allowed and origins.allow_absent, swapped whole by a
// reload (SetOrigins) while loops read it: an upgrade sees the old set or
// the new one, never a mix.
type originSet struct {
	set         map[string]struct{} // lower-cased
	allowAbsent bool
}

func (o *originSet) allowed(origin string) bool {
	_, ok := o.set[strings.ToLower(origin)]
	return ok
}

// SetOrigins applies an origins section: upgrades and POST /tickets from now
// on are checked against it (a reload; open connections stay).
func (s *Server) SetOrigins(c config.Origins) {
	o := &originSet{set: make(map[string]struct{}, len(c.Allowed)), allowAbsent: c.AllowAbsent}
	for _, a := range c.Allowed {
		o.set[strings.ToLower(a)] = struct{}{}
	}
	s.origins.Store(o)
}
