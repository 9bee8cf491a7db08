package reactor

import (
	"context"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/mcpgate/gateway/clock"
	"github.com/mcpgate/gateway/session"
)

// Connections lists the open connections (of one subject when subject is
// not empty) for the admin API. Each is read on its own loop; complete is
// false when ctx ended before every loop answered (a connection closing
// meanwhile answers too, and is left out).
func (s *Server) Connections(ctx context.Context, subject string) (list []session.Info, complete bool) {
	var sessions []*session.Session
	if subject != "" {
		sessions = s.table.BySubject(subject)
	} else {
		s.table.Range(func(ss *session.Session) bool { sessions = append(sessions, ss); return true })
	}
	type snap struct {
		info session.Info
		ok   bool
	}
	out := make(chan snap, len(sessions)) // buffered: a late answer never blocks a loop
	asked := 0
	for _, ss := range sessions {
		c, ok := ss.Conn.(*conn)
		if !ok {
			continue
		}
		asked++
		err := c.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if c.dead.Load() {
				out <- snap{}
				return nil
			}
			in := session.Info{
				Session:     c.sess.ID().String(),
				State:       c.sess.State.String(),
				Subject:     c.sess.Subject,
				Remote:      c.sess.Remote.String(),
				AgeMS:       clock.Since(c.sess.Opened).Milliseconds(),
				MessagesIn:  c.sess.MsgsIn,
				MessagesOut: c.sess.MsgsOut.Load(),
			}
			if c.sess.State != session.Handshake && true {
				in.Route = s.route(c.sess.RouteIdx).Path
			}
			out <- snap{info: in, ok: true}
			return nil
		}))
		if err != nil {
			out <- snap{} // the loop is stopping
		}
	}
	list = make([]session.Info, 0, asked)
	for range asked {
		select {
		case r := <-out:
			if r.ok && (subject == "" || r.info.Subject == subject) {
				list = append(list, r.info)
			}
		case <-ctx.Done():
			return list, false
		}
	}
	return list, true
}

// CloseConnection closes one connection by its session id, with 1008
// "Closed by operator" (an upgraded one; one still in its handshake gets
// the TCP close). It reports whether the connection was open.
func (s *Server) CloseConnection(id session.ID) bool {
	ss := s.table.Get(id)
	if ss == nil {
		return false
	}
	c, ok := ss.Conn.(*conn)
	if !ok || c.dead.Load() {
		return false
	}
	c.runOnLoop(func() { c.closeNow(ws.StatusPolicyViolation, ClosedByOperator) })
	return true
}

// ClosedByOperator is the close reason of DELETE /admin/connections/{session}.
const ClosedByOperator = "Closed by operator"
