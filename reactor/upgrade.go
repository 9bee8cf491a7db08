package reactor

import (
	"bytes"
	"io"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/session"
)

var headerEnd = []byte("\r\n\r\n")

// handshake looks for a complete request head in the peeked bytes. The head
// must end within max_header_bytes; past that the answer is 431 and the
// connection closes without reading on. Upgrade is given a reader over exactly
// the head, so frames a client sends eagerly stay buffered for the frame reader.
func (c *conn) handshake(now int64) (done bool, act gnet.Action) {
	s := c.srv
	buf := c.input()
	window := buf
	if len(window) > s.lim().maxHeader {
		window = window[:s.lim().maxHeader]
	}
	end := bytes.Index(window, headerEnd)
	if end < 0 {
		if len(buf) >= s.lim().maxHeader {
			// Nothing more is read (SPEC 4.1): no lingering close here.
			c.noLinger = true
			c.refusal = "request head over max_header_bytes"
			return false, c.refuse(431, 0)
		}
		return false, gnet.None
	}
	head := buf[:end+4]
	if c.reject != 0 {
		return false, c.refuse(int(c.reject), int(c.retryAfter))
	}
	if s.opt.Tickets != nil {
		if isTicketsRequest(head) {
			return false, c.serveTickets(head)
		}
		if !c.ticketChecked {
			if t := ticketParam(head); t != "" {
				// A ticket is spent only by an upgrade that passes every
				// other check (SPEC 4.3): try them first with a stand-in
				// subject; on a refusal, fall through to answer it.
				if _, hs, err := s.upgrade(head, true, "-"); err == nil {
					if st, retry := c.forwardedFor(hs.xff, now); st != 0 {
						return false, c.refuse(st, retry)
					}
					return false, c.consumeTicket(t)
				}
			}
		}
	}
	resp, hs, err := s.upgrade(head, c.ticketChecked, c.ticketSubject)
	c.consume(len(head))
	if err != nil {
		status := hs.status
		if status == 0 {
			status = 400
			if rej, ok := err.(interface{ StatusCode() int }); ok && rej.StatusCode() != 0 {
				status = rej.StatusCode()
			}
		}
		c.status = int16(status)
		switch {
		case hs.reason != "":
			c.refusal = hs.reason
		case status == 404:
			c.refusal = "no route for the path"
		default:
			c.refusal = "bad upgrade request" // gobwas/ws's checks: method, version, key, headers
		}
		s.m.Handshakes.WithLabelValues(statusLabel(status)).Inc()
		if len(resp) == 0 {
			resp = httpStatus(status, 0)
		}
		c.send(resp)
		return false, gnet.Close
	}
	if st, retry := c.forwardedFor(hs.xff, now); st != 0 {
		return false, c.refuse(st, retry)
	}
	c.send(resp)
	s.m.Handshakes.WithLabelValues("ok").Inc()
	c.sess.RouteIdx = uint8(hs.route)
	c.status = 101
	if hs.principal != "" {
		if !c.authenticated(now, hs.principal) {
			return false, gnet.Close
		}
	} else {
		c.sess.State = session.PendingAuth
		c.sess.Deadline.Store(now + s.lim().auth)
	}
	return true, gnet.None
}

// upgrade runs the RFC 6455 handshake over one complete request head and
// returns the response to send: 101, or the refusal chosen by the checks
// (404 route, 403 Origin, 401 bearer) or by gobwas/ws (400 and kin). It
// touches no connection, so it can be fuzzed on its own.
//
// ticketChecked says a ?ticket= was consumed before: ticketSubject is its
// subject, or empty when the ticket was unknown, used or expired (401).
func (s *Server) upgrade(head []byte, ticketChecked bool, ticketSubject string) (resp []byte, hs handshakeState, err error) {
	var respBuf bytes.Buffer
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			path := uri
			if i := bytes.IndexByte(path, '?'); i >= 0 {
				path = path[:i]
			}
			idx, ok := s.routing.Load().byPath[string(path)]
			if !ok {
				return ws.RejectConnectionError(ws.RejectionStatus(404))
			}
			hs.route = idx
			return nil
		},
		OnHeader: func(key, value []byte) error {
			switch {
			case equalFold(key, "Origin"):
				hs.multiOrigin = hs.hasOrigin // never "the last one wins"
				hs.origin = string(value)
				hs.hasOrigin = true
			case equalFold(key, "X-Forwarded-For"):
				if len(hs.xff) < 8 {
					hs.xff = append(hs.xff, string(value))
				}
			case equalFold(key, "Authorization"):
				if len(value) > 7 && equalFold(value[:7], "Bearer ") {
					hs.bearer = string(bytes.TrimSpace(value[7:]))
				}
				// Cookie is never read: cookies never authenticate (SPEC 4.1).
			}
			return nil
		},
		Protocol: func(p []byte) bool { return string(p) == "mcp" },
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if hs.multiOrigin {
				hs.status, hs.reason = 403, "more than one Origin"
				return nil, ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("more than one Origin"))
			}
			origins := s.origins.Load()
			if hs.hasOrigin {
				if !origins.allowed(hs.origin) {
					hs.status, hs.reason = 403, "origin not allowed"
					return nil, ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin not allowed"))
				}
			} else if !origins.allowAbsent {
				hs.status, hs.reason = 403, "origin required"
				return nil, ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin required"))
			}
			if ticketChecked {
				if ticketSubject == "" {
					hs.status, hs.reason = 401, "ticket unknown, used or expired"
					return nil, ws.RejectConnectionError(ws.RejectionStatus(401), ws.RejectionReason("invalid ticket"))
				}
				hs.principal = ticketSubject
				return nil, nil
			}
			// A bearer header authenticates only requests without Origin:
			// a browser page cannot set it, and must not ride on one.
			if hs.bearer != "" && s.lim().headerAuth && !hs.hasOrigin {
				p, err := s.opt.Verifier.Verify(hs.bearer)
				if err != nil {
					s.m.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
					hs.status, hs.reason = 401, bearerRefusal(auth.Reason(err))
					return nil, ws.RejectConnectionError(ws.RejectionStatus(401), ws.RejectionReason("invalid credentials"))
				}
				hs.principal = p.Subject
			}
			return nil, nil
		},
	}
	_, err = u.Upgrade(&headRW{r: bytes.NewReader(head), w: &respBuf})
	if err != nil && respBuf.Len() == 0 {
		// A request too broken for gobwas/ws to answer (no request line).
		return httpStatus(400, 0), hs, err
	}
	return respBuf.Bytes(), hs, err
}

// isTicketsRequest reports whether the request line targets /tickets.
func isTicketsRequest(head []byte) bool {
	sp := bytes.IndexByte(head, ' ')
	if sp < 0 {
		return false
	}
	rest := head[sp+1:]
	return bytes.HasPrefix(rest, []byte(ticketsPath+" ")) || bytes.HasPrefix(rest, []byte(ticketsPath+"?"))
}

// refuse answers a request that was refused before parsing (431, or a 429/503
// decided at accept time) and closes.
func (c *conn) refuse(status, retryAfter int) gnet.Action {
	c.status = int16(status)
	c.srv.m.Handshakes.WithLabelValues(statusLabel(status)).Inc()
	c.send(httpStatus(status, retryAfter))
	return gnet.Close
}

type handshakeState struct {
	reason      string // why OnBeforeUpgrade refused (a constant)
	route       int
	origin      string
	hasOrigin   bool
	multiOrigin bool
	bearer      string
	principal   string
	xff         []string
	status      int
}

type headRW struct {
	r io.Reader
	w io.Writer
}

func (h *headRW) Read(p []byte) (int, error)  { return h.r.Read(p) }
func (h *headRW) Write(p []byte) (int, error) { return h.w.Write(p) }

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func statusLabel(code int) string {
	switch code {
	case 400, 401, 403, 404, 429, 431, 503:
		return statusText3[code]
	}
	return "other"
}

var statusText3 = map[int]string{400: "400", 401: "401", 403: "403", 404: "404", 429: "429", 431: "431", 503: "503"}

// bearerRefusal is the close line's reason for a refused bearer header;
// auth.Reason's labels are a fixed set (no token bytes).
func bearerRefusal(reason string) string { return "bearer: " + reason }
