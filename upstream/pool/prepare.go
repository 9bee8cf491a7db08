package pool

import (
	"time"

	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/tracing"
	"github.com/mcpgate/gateway/upstream"
)

// Out is one message for a worker, in a buffer the worker side owns from
// now on and returns with upstream.PutBuffer once written.
type Out struct {
	Msg []byte
	// Call is set for a request: register it (Table.Add) before the message
	// can reach the worker, so the reply always finds it.
	Call *Call
	// Cancel is set for a client's notifications/cancelled of a request in
	// flight: it must go to the worker that has that request.
	Cancel *Call
}

// Prepared is one client message turned into messages for workers.
type Prepared struct {
	Out []Out
	// Batch is set when the client sent a batch: Seal it once the messages
	// were handed over (drop it if they were not).
	Batch *Batch
	// Reply is an answer the gateway gives itself (to a message that is not
	// valid JSON-RPC); deliver it from a goroutine, never from Send.
	Reply []byte
	// Own says Out[0].Msg is the caller's msg itself (passed through as
	// is): do not return msg to the pool separately.
	Own bool
}

// Release returns the buffers of messages that were not handed over. The
// caller keeps msg.
func (p *Prepared) Release() {
	for i, o := range p.Out {
		if i == 0 && p.Own {
			continue
		}
		upstream.PutBuffer(o.Msg)
	}
	p.Out = nil
}

// Prepare turns the client message msg (one JSON-RPC message or a batch)
// into messages for workers. Requests get a gateway id (and their progress
// token the same id) and a Call that remembers the client's exact bytes;
// a notifications/cancelled of a request in flight is mapped to its gateway
// id. In request mode, notifications and responses that belong to no
// request are dropped: a shared worker has no session to give them to.
// msg is not modified.
func Prepare(r *Route, msg []byte, mode Mode) Prepared {
	var p Prepared
	env, err := mcp.Scan(msg)
	switch {
	case err == mcp.ErrParse:
		p.Reply = mcp.AppendError(nil, nil, mcp.CodeParseError, "Parse error", nil)
		return p
	case err != nil:
		p.Reply = mcp.AppendError(nil, env.ID, mcp.CodeInvalidRequest, "Invalid Request", nil)
		return p
	case env.Kind == mcp.KindBatch:
		return prepareBatch(r, msg, mode)
	}
	now := time.Now()
	o, pass := prepareOne(r, msg, &env, mode, nil, now)
	if pass {
		p.Out = append(p.Out, Out{Msg: msg})
		p.Own = true
	} else if o.Msg != nil {
		p.Out = append(p.Out, o)
	}
	return p
}

func prepareBatch(r *Route, msg []byte, mode Mode) Prepared {
	p := Prepared{Batch: newBatch(r)}
	now := time.Now()
	it := mcp.NewBatch(msg)
	elems := 0
	for {
		elem, ok := it.Next()
		if !ok {
			break
		}
		elems++
		env, err := mcp.Scan(elem)
		if err == nil && env.Kind == mcp.KindBatch {
			err = mcp.ErrInvalidRequest // no batches inside batches
		}
		if err != nil {
			var buf [128]byte
			id := env.ID
			if err == mcp.ErrParse {
				id = nil
			}
			p.Batch.expect()
			p.Batch.add(mcp.AppendError(buf[:0], id, mcp.CodeInvalidRequest, "Invalid Request", nil))
			continue
		}
		o, pass := prepareOne(r, elem, &env, mode, p.Batch, now)
		if pass {
			o.Msg = append(upstream.GetBuffer(len(elem))[:0], elem...)
		}
		if o.Msg != nil {
			p.Out = append(p.Out, o)
		}
	}
	if elems == 0 {
		p.Batch = nil
		p.Reply = mcp.AppendError(nil, nil, mcp.CodeInvalidRequest, "Invalid Request", nil)
	}
	return p
}

// prepareOne handles one message. It returns the rewritten message, or
// pass=true when msg goes to the worker unchanged, or neither (dropped).
func prepareOne(r *Route, msg []byte, env *mcp.Envelope, mode Mode, b *Batch, now time.Time) (o Out, pass bool) {
	switch env.Kind {
	case mcp.KindRequest:
		c := &Call{GID: NextGID(), Route: r, Start: now, batch: b}
		c.ID = append(c.idBuf[:0], env.ID...)
		c.Listen = env.MethodIs(MethodListen)
		buf := upstream.GetBuffer(len(msg) + 48)[:0]
		spans := [3]span{{at: env.ID, gid: c.GID}}
		n := 1
		if tok := progressToken(env.Params); tok != nil {
			c.Token = append(c.tokBuf[:0], tok...)
			spans[n] = span{at: tok, gid: c.GID}
			n++
		}
		if tr := tracing.Active(); tr != nil {
			tp := traceparent(env.Params) // the JSON string, quotes included
			var parent []byte
			if tp != nil {
				parent = tp[1 : len(tp)-1]
			}
			c.Trace = tr.StartRequest(parent, methodName(env), r.gate.Name)
			if tp != nil && len(c.Trace.Traceparent) == tracing.TraceparentLen {
				// The worker continues the gateway's span: same length, so
				// the value is swapped in place of the client's.
				spans[n] = span{at: tp[1 : len(tp)-1], with: []byte(c.Trace.Traceparent)}
				n++
			}
		}
		buf = splice(buf, msg, spans[:n]...)
		if b != nil {
			b.expect()
		}
		return Out{Msg: buf, Call: c}, false
	case mcp.KindNotification:
		if env.MethodIs(MethodCancelled) {
			if req, ok := mcp.Lookup(env.Params, "requestId"); ok {
				if c := r.findID(req); c != nil {
					buf := upstream.GetBuffer(len(msg) + 24)[:0]
					return Out{Msg: splice(buf, msg, span{at: req, gid: c.GID}), Cancel: c}, false
				}
			}
			return Out{}, false // not in flight (any more): nothing to cancel
		}
	}
	// Other notifications and client responses (to server requests) belong
	// to the session; a shared worker has none.
	return Out{}, mode == ModeSession
}

// AppendCancel appends a notifications/cancelled for gateway id gid, which
// the gateway sends a worker when it gives up on a request (timeout, the
// client left).
func AppendCancel(dst []byte, gid uint64, reason string) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`...)
	dst = AppendGID(dst, gid)
	dst = append(dst, `,"reason":`...)
	dst = mcp.AppendString(dst, reason)
	return append(dst, `}}`...)
}
