package reactor

import (
	"errors"

	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/upstream"
)

// routeTable is the routes new upgrades match (byPath) and every route a
// connection may still be on (list). A reload (SetRoutes) appends and never
// removes, so a connection's RouteIdx stays valid for its life; the
// session record keeps one byte for it, hence maxRoutes.
type routeTable struct {
	list   []Route
	byPath map[string]int
}

// maxRoutes bounds the routes of a process's life, reloads included
// (RouteIdx is a byte).
const maxRoutes = 255

// ErrTooManyRoutes refuses a reload that would pass maxRoutes: restart.
var ErrTooManyRoutes = errors.New("reactor: more than 255 routes since start (reloads included): restart to apply")

// route is the route a connection upgraded on.
func (s *Server) route(idx uint8) *Route { return &s.routing.Load().list[idx] }

// SetRoutes makes routes the ones new upgrades match. A route whose path
// and upstream are unchanged keeps its entry; others are appended. The
// connections on a route that is gone or now goes to another upstream are
// drained (-31000 to new requests, 1001 once quiet: they reconnect to the
// new route). It returns the upstreams no route uses any more, for the
// caller to close once their connections are gone (UsesUpstream).
func (s *Server) SetRoutes(routes []Route) (retired []upstream.Upstream, err error) {
	old := s.routing.Load()
	next := &routeTable{list: old.list, byPath: make(map[string]int, len(routes))}
	keep := map[int]bool{}
	for _, r := range routes {
		if i, ok := old.byPath[r.Path]; ok && old.list[i].Upstream == r.Upstream {
			next.byPath[r.Path] = i
			keep[i] = true
			continue
		}
		if len(next.list) >= maxRoutes {
			return nil, ErrTooManyRoutes
		}
		next.list = append(next.list[:len(next.list):len(next.list)], r) // never write into old's array
		next.byPath[r.Path] = len(next.list) - 1
	}
	inUse := map[upstream.Upstream]bool{}
	for _, i := range next.byPath {
		inUse[next.list[i].Upstream] = true
	}
	seen := map[upstream.Upstream]bool{}
	dropped := map[int]bool{}
	for _, i := range old.byPath {
		if keep[i] {
			continue
		}
		dropped[i] = true
		if u := old.list[i].Upstream; !inUse[u] && !seen[u] {
			seen[u] = true
			retired = append(retired, u)
		}
	}
	s.routing.Store(next)
	if len(dropped) > 0 {
		s.table.Range(func(ss *session.Session) bool {
			if c, ok := ss.Conn.(*conn); ok && c.authed.Load() {
				c.runOnLoop(func() { // RouteIdx is the loop's to read
					if dropped[int(c.sess.RouteIdx)] && c.sess.State == session.Open && !c.shutting {
						c.enterDrain()
					}
				})
			}
			return true
		})
	}
	return retired, nil
}

// UsesUpstream counts the authenticated connections open on a route of u.
func (s *Server) UsesUpstream(u upstream.Upstream) int64 {
	var n int64
	for i, r := range s.routing.Load().list {
		if r.Upstream == u {
			n += s.routeUse[i].Load()
		}
	}
	return n
}
