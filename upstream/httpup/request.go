package httpup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/upstream/pool"
)

// dispatch sends one request-mode message: to the least-loaded URL that is
// up, to another one if the connection is refused (the request never left),
// and through the URL's shared session if its server needs one.
func (u *Upstream) dispatch(s *session, e *exch) {
	defer u.wg.Done()
	defer s.release(e)
	defer u.recoverDispatch(s, e)
	if c := e.out.Cancel; c != nil {
		// The client cancelled a request: tell the server it went to, then
		// stop reading its answer.
		ce := c.Worker.(*exch)
		if t, sid, version := ce.dest(); t != nil {
			u.post(e.ctx, e, t, sid, version, &pool.Routing{Table: &u.table, Stats: u.st, Log: u.log}, nil)
		}
		ce.cancel()
		return
	}
	call := e.out.Call
	version := metaVersion(e.out.Msg)
	var tried uint64
	sessionTried := false
	for {
		t := u.pick(tried)
		if t == nil {
			u.st.Error("no_worker")
			u.unavailable(call)
			return
		}
		sid, ver := "", version
		if t.kind.Load() == kindLegacy {
			var err error
			if sid, ver, err = u.shared(e.ctx, t); err != nil {
				if e.ctx.Err() != nil {
					return
				}
				if isDial(err) {
					u.markDown(t, err)
					tried |= u.index(t)
					continue
				}
				u.st.Error(errKind(err))
				u.unavailable(call)
				return
			}
		}
		e.setDest(t, sid, ver)
		rt := &pool.Routing{Table: &u.table, Fallback: s.route, Stats: u.st, Log: u.log,
			Back: func(m []byte) { u.notify(t, sid, ver, m) }}
		a := u.post(e.ctx, e, t, sid, ver, rt, nil)
		switch {
		case a.err != nil && e.ctx.Err() != nil:
			return // timed out, cancelled or the client left: answered already
		case a.err != nil && isDial(a.err):
			u.markDown(t, a.err)
			tried |= u.index(t)
			continue
		case a.err != nil:
			u.st.Error(errKind(a.err))
			u.fail(call, "Upstream request failed")
			return
		}
		u.markUp(t)
		switch {
		case a.status == http.StatusNotFound && sid != "" && !sessionTried:
			// The shared session expired: open a new one and resend.
			t.dropShared(sid)
			sessionTried = true
			continue
		case a.status/100 == 4 && sid == "" && t.kind.Load() != kindStateless && !sessionTried:
			// A server that only speaks sessions refuses a request without
			// one: give its URL a shared session and resend there.
			sessionTried = true
			if _, _, err := u.shared(e.ctx, t); err == nil {
				t.kind.Store(kindLegacy)
				continue
			}
			t.kind.CompareAndSwap(kindUnknown, kindStateless)
			fallthrough
		case a.status/100 != 2:
			u.st.Error("status")
			if call != nil && u.table.Remove(call) {
				replyStatus(call, a.status, a.body)
			}
			return
		}
		if sid == "" {
			t.kind.CompareAndSwap(kindUnknown, kindStateless)
		}
		u.fail(call, "Upstream closed the stream without answering")
		return
	}
}

// fail answers a request-mode call -32603 if it is still in flight.
func (u *Upstream) fail(call *pool.Call, msg string) {
	if call != nil && u.table.Remove(call) {
		call.ReplyError(mcp.CodeInternal, msg)
	}
}

// unavailable answers a request-mode call -31503 "Upstream unavailable"
// (with data.retry_after_ms) if it is still in flight: no URL could take
// it, and it never reached a server.
func (u *Upstream) unavailable(call *pool.Call) {
	if call != nil && u.table.Remove(call) {
		call.Unavailable(pool.RetryAfter)
	}
}

// onTimeout answers a request its server did not answer in time, tells the
// server to stop, and stops reading the answer: the late reply is dropped.
func (u *Upstream) onTimeout(call *pool.Call) {
	u.st.Error("timeout")
	call.TimedOut()
	e := call.Worker.(*exch)
	if t, sid, version := e.dest(); t != nil {
		var buf [160]byte
		u.notify(t, sid, version, pool.AppendCancel(buf[:0], call.GID, "request timed out"))
	}
	e.cancel()
}

// metaVersion returns the protocol version a stateless request carries in
// params._meta, for the MCP-Protocol-Version header.
func metaVersion(msg []byte) string {
	env, err := mcp.Scan(msg)
	if err != nil || env.Params == nil {
		return ""
	}
	meta, ok := mcp.Lookup(env.Params, "_meta")
	if !ok {
		return ""
	}
	v, ok := mcp.Lookup(meta, pool.MetaVersionKey)
	if !ok || v[0] != '"' || len(v) > 66 {
		return ""
	}
	s, ok := mcp.AppendUnquote(nil, v)
	if !ok {
		return ""
	}
	return string(s)
}

// The shared session the gateway opens, for request mode, on a server that
// only speaks sessions.
const (
	sharedVersion = "2025-11-25"
	sharedInit    = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"` + sharedVersion +
		`","capabilities":{},"clientInfo":{"name":"mcp-gateway","version":"1"}}}`
	sharedInitialized = `{"jsonrpc":"2.0","method":"notifications/initialized"}`
)

var errNoSession = errors.New("upstream gave no session id")

// shared returns the URL's shared session, opening it if needed.
func (u *Upstream) shared(ctx context.Context, t *target) (sid, version string, err error) {
	t.smu.Lock()
	defer t.smu.Unlock()
	if t.sharedSID != "" {
		return t.sharedSID, t.sharedVer, nil
	}
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	status, sid, msgs, err := u.roundTrip(ctx, t, "", "", []byte(sharedInit))
	if err != nil {
		return "", "", err
	}
	if status/100 != 2 || sid == "" {
		return "", "", errNoSession
	}
	version = sharedVersion
	for _, m := range msgs {
		if env, err := mcp.Scan(m); err == nil && env.Result != nil {
			if v, ok := mcp.Lookup(env.Result, "protocolVersion"); ok {
				if s, ok := mcp.AppendUnquote(nil, v); ok {
					version = string(s)
				}
			}
		}
	}
	if _, _, _, err := u.roundTrip(ctx, t, sid, version, []byte(sharedInitialized)); err != nil {
		return "", "", err
	}
	t.sharedSID, t.sharedVer = sid, version
	u.log.Info("shared upstream session opened", "upstream", u.name, "url", redact(t.url))
	return sid, version, nil
}

func (t *target) dropShared(sid string) {
	t.smu.Lock()
	if t.sharedSID == sid {
		t.sharedSID = ""
	}
	t.smu.Unlock()
}

// roundTrip POSTs msg and returns every message of the answer (JSON or SSE).
func (u *Upstream) roundTrip(ctx context.Context, t *target, sid, version string, msg []byte) (status int, rsid string, msgs [][]byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(msg))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	if version != "" {
		req.Header.Set("Mcp-Protocol-Version", version)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	body := io.LimitReader(resp.Body, 1<<20)
	if ct == "text/event-stream" {
		ev := newSSE(body)
		for {
			data, err := ev.next()
			if err != nil {
				break
			}
			msgs = append(msgs, append([]byte(nil), data...))
			if env, err := mcp.Scan(data); err == nil && env.Kind == mcp.KindResponse {
				break // the answer is in: the stream has nothing more for us
			}
		}
	} else if b, err := io.ReadAll(body); err == nil && len(b) > 0 {
		msgs = append(msgs, b)
	}
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), msgs, nil
}

// notify POSTs a message of the gateway's own (a cancellation, a refusal)
// in the background and ignores the answer. msg is copied.
func (u *Upstream) notify(t *target, sid, version string, msg []byte) {
	if u.ctx.Err() != nil {
		return
	}
	body := append([]byte(nil), msg...)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer u.recoverQuiet()
		ctx, cancel := context.WithTimeout(u.ctx, deleteTimeout)
		defer cancel()
		_, _, _, _ = u.roundTrip(ctx, t, sid, version, body)
	}()
}

// delete ends an upstream session (HTTP DELETE with its Mcp-Session-Id).
func (u *Upstream) delete(t *target, sid, version string) {
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, t.url, nil)
	if err != nil {
		return
	}
	req.Header.Set("Mcp-Session-Id", sid)
	if version != "" {
		req.Header.Set("Mcp-Protocol-Version", version)
	}
	start := time.Now()
	resp, err := u.client.Do(req)
	if err != nil {
		u.log.Debug("upstream session delete failed", "upstream", u.name, "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	u.log.Debug("upstream session deleted", "upstream", u.name, "status", resp.StatusCode, "took", time.Since(start))
}
