package main

import (
	"reflect"
	"sync"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/upstream"
)

// upstreamSet is the running upstreams by name with the config each was
// built from, and the ones a reload retired whose connections are still
// draining. At exit every one of them is closed.
type upstreamSet struct {
	mu      sync.Mutex
	byName  map[string]upstream.Upstream
	cfg     map[string]config.Upstream
	retired map[upstream.Upstream]bool
}

func newUpstreamSet() *upstreamSet {
	return &upstreamSet{byName: map[string]upstream.Upstream{}, cfg: map[string]config.Upstream{},
		retired: map[upstream.Upstream]bool{}}
}

func (s *upstreamSet) add(c config.Upstream, u upstream.Upstream) {
	s.byName[c.Name], s.cfg[c.Name] = u, c
}

// same reports whether the running upstream of that name was built from c.
func (s *upstreamSet) same(c config.Upstream) bool {
	old, ok := s.cfg[c.Name]
	return ok && reflect.DeepEqual(old, c)
}

// closeAll closes every upstream, running or retired.
func (s *upstreamSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.byName {
		_ = u.Close()
	}
	for u := range s.retired {
		_ = u.Close()
	}
}
