package pool

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/mcp"
)

// Routing says where the messages of one worker (or one HTTP response
// stream) go.
type Routing struct {
	// Table holds the requests this worker may answer.
	Table *Table
	// Session is the connection that owns a dedicated worker (session
	// mode): it gets every message that is not a reply or request-scoped,
	// server-to-client requests included. Nil for a shared worker.
	Session *Route
	// Fallback gets the notifications that name no request in flight when
	// Session is nil (an HTTP response stream belongs to the connection
	// whose POST opened it). Nil drops them: on a shared worker nobody can
	// tell whose they are, and they must never go to every connection.
	Fallback *Route
	// Back sends a message to the worker: the gateway refuses
	// server-to-client requests in request mode (the stateless revision
	// has none, and a shared worker cannot tell whom to ask).
	Back  func(msg []byte)
	Stats *Stats
	// Log is where a panic recovered while routing is logged (nil:
	// slog.Default()).
	Log *slog.Logger
}

// Texts the gateway answers with (SPEC 4.6): MsgWorkerDied is the close
// reason (1011) of a session whose worker died, MsgNoWorker that of 1013;
// the JSON-RPC answers are Call.Died (-32603 "Internal error"),
// Call.TimedOut (-31504 MsgTimeout) and Call.Unavailable (-31503
// MsgUnavailable with data.retry_after_ms).
const (
	MsgWorkerDied     = "Upstream worker died"
	MsgWorkerHung     = "Upstream worker not responding"
	MsgInternal       = "Internal error"
	MsgTimeout        = "Upstream timeout"
	MsgNoWorker       = "No worker available"
	MsgUnavailable    = "Upstream unavailable"
	msgNoServerToUser = "Server-to-client requests are not available to stateless clients"
)

// RetryAfter is the retry_after_ms the gateway suggests with -31503 when
// no worker can take a request now: about the time a worker takes to
// start.
const RetryAfter = time.Second

// RetryAfterData is {"retry_after_ms":ms} for d.
func RetryAfterData(dst []byte, d time.Duration) []byte {
	dst = append(dst, `{"retry_after_ms":`...)
	dst = strconv.AppendInt(dst, max(0, d.Milliseconds()), 10)
	return append(dst, '}')
}

// Died answers c -32603 "Internal error" with data.reason "worker_died":
// its worker died (or was ended as hung) with c in flight.
func (c *Call) Died() {
	c.ReplyErrorData(mcp.CodeInternal, MsgInternal, []byte(`{"reason":"worker_died"}`))
}

// TimedOut answers c -31504 "Upstream timeout": no answer within the
// upstream's request_timeout.
func (c *Call) TimedOut() { c.ReplyError(mcp.CodeUpstreamTimeout, MsgTimeout) }

// Unavailable answers c -31503 "Upstream unavailable" with
// data.retry_after_ms: no worker can take it now.
func (c *Call) Unavailable(retry time.Duration) {
	var buf [40]byte
	c.ReplyErrorData(mcp.CodeUpstreamUnavailable, MsgUnavailable, RetryAfterData(buf[:0], retry))
}

// FromWorker routes one message (or batch) a worker sent: a reply goes to
// the connection that asked, with its id restored byte for byte; progress,
// cancellation and subscription notifications of a request go to that
// request's connection with the client's token or id restored; the rest
// goes to the session, if the worker has one. scratch is a buffer to reuse;
// the grown buffer is returned. msg is only read during the call.
//
// A panic while routing one message (each element of a batch on its own)
// is recovered (SPEC 10): it is counted in gateway_panics_total{site=
// "upstream"} and logged, and the connection the message was for is closed
// with 1011 "Internal error": the one whose request it answers or names,
// else the worker's session (or the stream's Fallback). When the message
// belongs to nobody it is dropped. The caller's goroutine (a reader) goes
// on with the next message.
func (rt *Routing) FromWorker(scratch, msg []byte) (out []byte) {
	var to *Route // the connection msg is for, once known
	if rt.Session != nil {
		to = rt.Session
	} else {
		to = rt.Fallback
	}
	defer func() {
		if r := recover(); r != nil {
			rt.panicked(r, to)
			out = scratch
		}
	}()
	return rt.fromWorker(scratch, msg, &to)
}

// panicked counts and logs a panic recovered while routing a message, and
// fails the connection it was for (nil: the message is dropped).
func (rt *Routing) panicked(r any, to *Route) {
	fault.Recovered(rt.Stats.Metrics(), rt.Log, fault.SiteUpstream, r)
	if to != nil {
		to.Fail(fault.Code, fault.Reason)
	}
}

// at records that the message being routed is for r (for a panic), and is
// the fault injection point pool.route.
func at(to **Route, r *Route) {
	*to = r
	fault.Hit("pool.route")
}

func (rt *Routing) fromWorker(scratch, msg []byte, to **Route) []byte {
	env, err := mcp.Scan(msg)
	if err != nil {
		rt.Stats.Error("protocol")
		return scratch
	}
	switch env.Kind {
	case mcp.KindBatch:
		it := mcp.NewBatch(msg)
		for {
			elem, ok := it.Next()
			if !ok {
				return scratch
			}
			scratch = rt.FromWorker(scratch, elem) // each element recovers on its own
		}
	case mcp.KindResponse:
		var c *Call
		if gid, ok := ParseGID(env.ID); ok {
			c = rt.Table.Take(gid)
		}
		if c == nil {
			// Timed out, cancelled, or not ours: the answer was given already.
			rt.Stats.Error("late_reply")
			return scratch
		}
		at(to, c.Route)
		rt.Stats.Done(c.Start)
		scratch = splice(scratch[:0], msg, span{at: env.ID, with: c.ID})
		c.Reply(scratch)
	case mcp.KindNotification:
		scratch = rt.notification(scratch, msg, &env, to)
	case mcp.KindRequest:
		if rt.Session != nil {
			at(to, rt.Session)
			rt.Session.Deliver(msg)
		} else if rt.Back != nil {
			var buf [192]byte
			rt.Back(mcp.AppendError(buf[:0], env.ID, mcp.CodeMethodNotFound, msgNoServerToUser, nil))
		}
	}
	return scratch
}

func (rt *Routing) notification(scratch, msg []byte, env *mcp.Envelope, to **Route) []byte {
	var ref []byte // the member that names a request of ours
	take := false
	switch {
	case env.Params == nil:
	case env.MethodIs(MethodProgress):
		ref, _ = mcp.Lookup(env.Params, "progressToken")
	case env.MethodIs(MethodCancelled):
		// The worker gave up on a request: it will not answer it.
		ref, _ = mcp.Lookup(env.Params, "requestId")
		take = true
	default:
		if meta, ok := mcp.Lookup(env.Params, "_meta"); ok {
			ref, _ = mcp.Lookup(meta, MetaSubscriptionKey)
		}
	}
	if gid, ok := ParseGID(ref); ok {
		var c *Call
		if take {
			c = rt.Table.Take(gid)
		} else {
			c = rt.Table.Get(gid)
		}
		if c != nil {
			at(to, c.Route)
			orig := c.ID
			if env.MethodIs(MethodProgress) {
				orig = c.Token
			}
			if orig != nil {
				scratch = splice(scratch[:0], msg, span{at: ref, with: orig})
				c.Route.Deliver(scratch)
			}
			if take && c.batch != nil {
				c.batch.add(nil)
			}
			return scratch
		}
	}
	switch {
	case rt.Session != nil:
		at(to, rt.Session)
		rt.Session.Deliver(msg)
	case rt.Fallback != nil:
		at(to, rt.Fallback)
		rt.Fallback.Deliver(msg)
	default:
		rt.Stats.Error("unrouted")
	}
	return scratch
}
