package reactor

import (
	"context"
	"github.com/mcpgate/gateway/clock"
	"time"

	"github.com/gobwas/ws"

	"github.com/mcpgate/gateway/frame"
	"github.com/mcpgate/gateway/session"
)

const sweepEvery = 100 * time.Millisecond

// sweep wakes every 100 ms, finds sessions whose deadline has passed, and
// schedules them onto their own loop; one atomic load per session per sweep.
// Clearing the deadline first means a busy loop is asked once, not every sweep.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := clock.Now()
		s.table.Range(func(ss *session.Session) bool {
			dl := ss.Deadline.Load()
			if dl == 0 || dl > now || !ss.Deadline.CompareAndSwap(dl, 0) {
				return true
			}
			if c, ok := ss.Conn.(*conn); ok {
				c.runOnLoop(c.onDeadline)
			}
			return true
		})
		if n++; n%50 == 0 {
			s.ipRate.SweepAt(clock.Now())
		}
		s.m.BufferedBytes.Set(float64(s.held.Used()))
	}
}

// onDeadline runs on the connection's loop when its deadline passed.
func (c *conn) onDeadline() {
	s := c.srv
	now := clock.Now()
	if c.shutting {
		c.lingerStep(now)
		return
	}
	switch c.sess.State {
	case session.Handshake:
		if c.reject != 0 {
			// The refused client never finished its request: answer anyway.
			c.refuse(int(c.reject), int(c.retryAfter))
		} else {
			s.m.Handshakes.WithLabelValues("timeout").Inc()
		}
		c.closeSocket()
	case session.PendingAuth:
		s.m.AuthFailures.WithLabelValues("timeout").Inc()
		c.closeNow(ws.StatusPolicyViolation, session.ReasonAuthTimeout)
	case session.Open:
		drainDue := int64(0)
		if c.draining.Load() && c.inflight.Load() <= 0 {
			// The drain protocol (startDrain): 1001 once quiet and flushed.
			var closed bool
			if closed, drainDue = c.drainStep(now); closed {
				return
			}
		}
		msgDue := int64(0)
		if c.msgStart != 0 {
			msgDue = c.msgStart + s.lim().msgTimeout
			if now >= msgDue {
				s.m.Rejected.WithLabelValues("message_timeout").Inc()
				c.closeNow(ws.StatusPolicyViolation, "Message timeout")
				return
			}
		}
		quiet := now - c.sess.LastSeen
		next := int64(0)
		switch {
		case quiet >= s.lim().idle:
			c.closeNow(ws.StatusGoingAway, "Idle timeout")
			return
		case quiet >= s.lim().ping:
			if c.sess.PingSent <= c.sess.LastSeen {
				var b [2]byte
				c.send(frame.AppendPing(b[:0], nil))
				c.sess.PingSent = now
			}
			next = min(now+s.lim().ping, c.sess.LastSeen+s.lim().idle)
		default:
			next = c.sess.LastSeen + s.lim().ping
		}
		if msgDue != 0 {
			next = min(next, msgDue)
		}
		if drainDue != 0 {
			next = min(next, drainDue)
		}
		c.sess.Deadline.Store(next)
	}
}
