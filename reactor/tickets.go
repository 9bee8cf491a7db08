package reactor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/mcpgate/gateway/auth"
)

// TicketStore issues and consumes single-use upgrade tickets (SPEC 4.3). Its
// calls may do network I/O (Redis), so the reactor runs them off the loop.
type TicketStore interface {
	Issue(ctx context.Context, subject string) (ticket string, err error)
	Consume(ctx context.Context, ticket string) (subject string, ok bool, err error)
}

// ticketsPath is where POST /tickets is served on the main listener.
const ticketsPath = "/tickets"

// asyncTimeout bounds one off-loop call (a Redis round trip with retries).
const asyncTimeout = 3 * time.Second

// goAsync runs work on a goroutine from a bounded pool and then done on the
// connection's loop. While it runs, the connection reads nothing (its bytes
// stay buffered). It returns false when the pool is full.
func (c *conn) goAsync(work func(ctx context.Context), done func()) bool {
	select {
	case c.srv.asyncSem <- struct{}{}:
	default:
		return false
	}
	c.async = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), asyncTimeout)
		work(ctx)
		cancel()
		<-c.srv.asyncSem
		c.runOnLoop(func() {
			c.async = false
			done()
		})
	}()
	return true
}

// resume re-runs the state machine after an off-loop step, over whatever
// stayed buffered, and applies its verdict.
func (c *conn) resume() {
	if act := c.onTraffic(); act == gnet.Close {
		if c.shutting { // shut's own verdict: close now
			_ = c.gc.EventLoop().Close(c.gc)
		} else {
			c.closeSocket()
		}
	}
}

// ticketParam finds ?ticket= in the request line without allocating for the
// common case of no query at all.
func ticketParam(head []byte) string {
	line := head
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	q := bytes.IndexByte(line, '?')
	if q < 0 {
		return ""
	}
	sp := bytes.IndexByte(line[q:], ' ')
	if sp < 0 {
		return ""
	}
	vals, err := url.ParseQuery(string(line[q+1 : q+sp]))
	if err != nil {
		return ""
	}
	return vals.Get("ticket")
}

// consumeTicket resolves a ?ticket= off the loop, then resumes the handshake
// with its verdict.
func (c *conn) consumeTicket(ticket string) gnet.Action {
	s := c.srv
	var subject string
	ok := c.goAsync(func(ctx context.Context) {
		sub, valid, err := s.opt.Tickets.Consume(ctx, ticket)
		if err != nil {
			s.log.Warn("ticket store unavailable", "error", err.Error())
		}
		if valid && (s.opt.Revoked == nil || !s.opt.Revoked(sub)) {
			subject = sub // a revoked subject's ticket is refused like its tokens
		}
	}, func() {
		c.ticketChecked = true
		c.ticketSubject = subject
		c.resume()
	})
	if !ok {
		c.refusal = "ticket lookup: too many off-loop steps"
		return c.refuse(503, 1)
	}
	return gnet.None
}

// serveTickets answers POST /tickets (and its CORS preflight) on the main
// listener: a bearer token buys one single-use ticket for the same subject.
func (c *conn) serveTickets(head []byte) gnet.Action {
	s := c.srv
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		c.refusal = "tickets: bad request"
		return c.refuse(400, 0)
	}
	origin := req.Header.Get("Origin")
	cors := ""
	if origin != "" {
		if !s.origins.Load().allowed(origin) {
			c.refusal = "tickets: origin not allowed"
			return c.refuse(403, 0)
		}
		cors = "Access-Control-Allow-Origin: " + origin + "\r\nVary: Origin\r\n"
	}
	switch req.Method {
	case http.MethodOptions:
		return c.respond(204, cors+"Access-Control-Allow-Methods: POST\r\n"+
			"Access-Control-Allow-Headers: Authorization\r\nAccess-Control-Max-Age: 600\r\n", "")
	case http.MethodPost:
	default:
		return c.respond(405, "Allow: POST, OPTIONS\r\n", "")
	}
	if req.ContentLength > 0 {
		c.refusal = "tickets: request with a body"
		return c.refuse(400, 0) // no body is expected, and none is read
	}
	authz := req.Header.Get("Authorization")
	if len(authz) < 8 || !strings.EqualFold(authz[:7], "Bearer ") {
		c.refusal = "tickets: no bearer token"
		return c.respond(401, cors+"WWW-Authenticate: Bearer\r\n", "")
	}
	p, err := s.opt.Verifier.Verify(strings.TrimSpace(authz[7:]))
	if err != nil {
		s.m.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
		c.refusal = bearerRefusal(auth.Reason(err))
		return c.respond(401, cors+"WWW-Authenticate: Bearer\r\n", "")
	}
	var ticket string
	var issueErr error
	ok := c.goAsync(func(ctx context.Context) {
		ticket, issueErr = s.opt.Tickets.Issue(ctx, p.Subject)
	}, func() {
		if issueErr != nil {
			s.log.Warn("ticket store unavailable", "error", issueErr.Error())
			c.refusal = "ticket store unavailable"
			c.respond(503, cors+"Retry-After: 1\r\n", "")
		} else {
			body := fmt.Sprintf(`{"ticket":%q,"expires_in":%d}`, ticket, int(s.ticketTTL/time.Second))
			c.respond(200, cors+"Content-Type: application/json\r\nCache-Control: no-store\r\n", body)
		}
		c.closeSocket()
	})
	if !ok {
		c.refusal = "tickets: too many off-loop steps"
		return c.refuse(503, 1)
	}
	return gnet.None
}

// respond writes a complete closing HTTP/1.1 response.
func (c *conn) respond(status int, headers, body string) gnet.Action {
	c.status = int16(status)
	text := statusText[status]
	if text == "" {
		text = http.StatusText(status)
	}
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nConnection: close\r\n%sContent-Length: %d\r\n\r\n%s",
		status, text, headers, len(body), body)
	c.send([]byte(resp))
	return gnet.Close
}
