package httpup

import (
	"github.com/mcpgate/gateway/fault"
)

// Panics (SPEC 10): each goroutine of the upstream recovers. A panic while
// an exchange reads or routes its answer (fault point http.response), or
// while the GET stream of a session does (http.listen), is counted in
// gateway_panics_total{site="upstream"}, logged, and closes the connection
// the exchange or stream belongs to with 1011 "Internal error"; the
// process and the other connections go on. (pool.Routing.FromWorker
// recovers what happens while routing one message on its own.)

// recovered counts and logs one recovered panic.
func (u *Upstream) recovered(r any) {
	fault.Recovered(u.st.Metrics(), u.log, fault.SiteUpstream, r)
}

// recoverDispatch is deferred by a request-mode exchange: its request is
// taken off the table (no timeout answers it later) and the connection
// that sent it is failed.
func (u *Upstream) recoverDispatch(s *session, e *exch) {
	if r := recover(); r != nil {
		u.recovered(r)
		if c := e.out.Call; c != nil {
			u.table.Remove(c)
		}
		s.route.Fail(fault.Code, fault.Reason)
	}
}

// recoverSession is deferred by a session-mode exchange and by the
// session's GET stream: the session dies (its requests in flight get
// -32603) and its connection is failed.
func (s *session) recoverSession() {
	if r := recover(); r != nil {
		s.u.recovered(r)
		s.die("", fault.Code, fault.Reason)
	}
}

// recoverQuiet is deferred by the goroutines that only tell the upstream
// something (a cancellation, a DELETE): a panic there is counted and
// logged, and concerns no connection.
func (u *Upstream) recoverQuiet() {
	if r := recover(); r != nil {
		u.recovered(r)
	}
}
