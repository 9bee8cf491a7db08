package stdio

import (
	"sync"

	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool"
)

// session is one client connection. Its mode is decided by its first
// message: initialize takes a dedicated child for the connection's life;
// anything else makes it a request-mode connection on the shared children.
type session struct {
	u       *Upstream
	route   *pool.Route
	subject string // the connection's principal, for its share of children

	mu     sync.Mutex
	mode   pool.Mode
	child  *child // session mode
	closed bool
}

// Send hands one client message to the connection's worker without
// blocking. On error the caller keeps msg.
func (s *session) Send(msg []byte) error {
	s.mu.Lock()
	if s.closed || s.route.Failed() {
		s.mu.Unlock()
		return upstream.ErrClosed
	}
	if s.mode == pool.ModeUnknown {
		s.mode = pool.Detect(msg)
	}
	mode := s.mode
	if mode == pool.ModeSession && s.child == nil {
		c, err := s.u.acquireSession(s.route, s.subject)
		if err != nil {
			s.mu.Unlock()
			return s.noWorker(msg, err)
		}
		s.child = c
	}
	w := s.child
	s.mu.Unlock()

	p := pool.Prepare(s.route, msg, mode)
	if len(p.Out) == 0 {
		s.finish(msg, &p)
		return nil
	}
	// A cancellation goes to the child that has the request, which in
	// request mode may not be the one picked for this message.
	outs := p.Out[:0:0]
	for _, o := range p.Out {
		if o.Cancel != nil {
			if cw, ok := o.Cancel.Worker.(*child); ok {
				cw.trySend(o.Msg) // copies; a cancellation has its own buffer
				upstream.PutBuffer(o.Msg)
				cw.table.Cancel(o.Cancel)
			}
			continue
		}
		outs = append(outs, o)
	}
	if len(outs) == 0 {
		s.finish(msg, &p)
		return nil
	}
	if mode == pool.ModeRequest {
		// A shared child that died since it was picked takes nothing:
		// the messages go to another one, once.
		var err error
		var dead *child
		for try := 0; try < 2; try++ {
			if w, err = s.u.pickShared(dead); err != nil {
				p.Out = outs
				p.Release()
				return s.noWorker(msg, err)
			}
			if err = w.submit(outs); err != upstream.ErrClosed {
				break
			}
			dead = w
		}
		if err != nil {
			p.Out = outs
			p.Release()
			if err == upstream.ErrClosed {
				err = upstream.ErrBusy // no live child took it: -31503
			}
			return err
		}
		s.finish(msg, &p)
		return nil
	}
	if err := w.submit(outs); err != nil {
		p.Out = outs
		if err == upstream.ErrClosed {
			// The session's child died before this reached it: its requests
			// are answered as its death answers those in flight (-32603),
			// and its death fails the connection 1011.
			s.diedFirst(msg, &p)
			return nil
		}
		p.Release()
		return err
	}
	s.finish(msg, &p)
	return nil
}

// diedFirst takes msg, whose messages (p.Out) the session's dead child did
// not take, and answers each request in it -32603 (from a goroutine: never
// call the Sink from Send).
func (s *session) diedFirst(msg []byte, p *pool.Prepared) {
	var calls []*pool.Call
	for _, o := range p.Out {
		if o.Call != nil {
			calls = append(calls, o.Call)
		}
	}
	p.Release()
	upstream.PutBuffer(msg) // Release keeps msg itself (p.Own), or it was copied
	b, reply := p.Batch, p.Reply
	go func() {
		for _, c := range calls {
			c.Died()
		}
		b.Seal()
		if reply != nil {
			s.route.Deliver(reply)
		}
	}()
}

// finish completes a Send that took msg.
func (s *session) finish(msg []byte, p *pool.Prepared) {
	if !p.Own {
		upstream.PutBuffer(msg)
	}
	p.Batch.Seal()
	if p.Reply != nil {
		go s.route.Deliver(p.Reply) // never call the Sink from Send
	}
}

// noWorker ends the connection 1013 "No worker available" when the pool
// has nothing free for it (at max, at the session cap, or its subject at
// max_per_subject); msg is taken (the close is the answer).
func (s *session) noWorker(msg []byte, err error) error {
	switch err {
	case errNoWorker:
		s.u.st.Error("no_worker")
	case errSubjectShare:
		s.u.st.Error("subject_share")
	default:
		return err
	}
	upstream.PutBuffer(msg)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	go s.route.Fail(1013, pool.MsgNoWorker)
	return nil
}

// Close says the client left: a dedicated child is ended (its process
// group killed) and replaced in the pool; in request mode, the requests
// still on shared children are cancelled there.
func (s *session) Close() {
	s.mu.Lock()
	if s.closed && s.route.Closed() {
		s.mu.Unlock()
		return
	}
	s.closed = true
	c := s.child
	s.mu.Unlock()
	calls := s.route.Close()
	if c != nil {
		c.end(sigEnd)
		return
	}
	for _, call := range calls {
		w, ok := call.Worker.(*child)
		if ok && w.table.Remove(call) {
			var buf [160]byte
			w.trySend(pool.AppendCancel(buf[:0], call.GID, "client disconnected"))
		}
	}
}
