package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// refusedAnswer reports whether an upgrade refusal is the server saying
// "not without credentials" (as opposed to a wrong URL or an overload).
func refusedAnswer(status int) bool { return status == 401 || status == 403 }

// inconclusive is the summary for an upgrade that neither succeeded nor was
// refused for a reason the check can judge.
func inconclusive(r *upgradeResult) string {
	switch {
	case r.lost:
		return "the server closed the connection without an HTTP answer (" + strings.TrimPrefix(r.line, "no HTTP answer: ") + "): a refusal that never reaches the client cannot be told from a failure, so this is not verified"
	case r.status == 0:
		return "could not reach the endpoint: " + r.line
	case r.status == 429 || r.status == 503:
		return "the server refused the probe's upgrade as overloaded or rate-limited (" + r.line + "); rerun later"
	}
	return "the server refused the upgrade (" + r.line + "); is the URL right?"
}

// checkAuthBeforeService connects without credentials and sends initialize,
// then (on a second connection) tools/list, as the first message.
func (a *auditor) checkAuthBeforeService(ctx context.Context) Check {
	c := a.newCheck("auth-before-service", "Auth before service", Critical)
	var served, rpcErr, refused, closed, cut int
	var last *upgradeResult
	for _, method := range []string{"initialize", "tools/list"} {
		params := ""
		if method == "initialize" {
			params = initializeParams
		}
		r := a.upgrade(ctx, creds{origin: a.opt.Origin})
		last = r
		if !r.upgraded() {
			c.add(r.sent, r.received())
			if refusedAnswer(r.status) {
				refused++
			}
			continue
		}
		a.baseUp = true
		c.add(r.sent, r.received())
		id := a.ids.Add(1)
		if a.sendRequest(c, r.conn, id, method, params) != nil {
			closed++
			r.conn.close()
			continue
		}
		o := r.conn.await(id, a.replyWait())
		c.add("text "+string(request(id, method, params)), o.describe(a.replyWait()))
		switch {
		case o.resp != nil && o.resp.isResult():
			served++
		case o.resp != nil && !o.resp.isAuthError():
			rpcErr++
		default:
			closed++
			if o.closed != nil && o.closed.cut() {
				cut++
			}
		}
		r.conn.close()
	}
	a.baseServe = served > 0
	switch {
	case served > 0:
		return c.done(Fail, "answered %d of 2 JSON-RPC requests sent without any credentials", served)
	case rpcErr > 0:
		return c.done(Warn, "not served, but a JSON-RPC handler answered requests sent before authentication")
	case refused == 2:
		return c.done(Pass, "upgrades without credentials are refused (%s)", last.line)
	case refused+closed == 2 && cut > 0:
		return c.done(Warn, "requests sent before authentication were not answered, but %d of 2 connections ended without a close frame: the client sees an abnormal closure (1006) and cannot tell why", cut)
	case refused+closed == 2:
		return c.done(Pass, "requests sent before authentication were not answered")
	}
	return c.done(Skip, "%s", inconclusive(last))
}

// discoverAuth finds how a token authenticates: first-message auth, then an
// Authorization header. It returns the evidence of the attempts.
func (a *auditor) discoverAuth(ctx context.Context) []Evidence {
	c := a.newCheck("auth", "Authentication", Info)
	switch {
	case a.baseServe:
		a.mode = modeNone
		return nil
	case a.opt.Token == "":
		a.mode, a.modeWhy = modeUnknown, "no --token given"
		return nil
	case !a.tokenOK:
		a.mode, a.modeWhy = modeUnknown, a.tokenWhy
		return nil
	}
	if conn := a.authMessage(ctx, c); conn != nil {
		conn.close()
		a.mode = modeMessage
		return c.Evidence
	}
	if conn := a.authHeader(ctx, c); conn != nil {
		conn.close()
		a.mode = modeHeader
		return c.Evidence
	}
	a.mode, a.modeWhy = modeUnknown, "the token was accepted neither as a first message nor as a bearer header"
	return c.Evidence
}

// authMessage opens a connection and authenticates with a first message.
func (a *auditor) authMessage(ctx context.Context, c *Check) *wsConn {
	r := a.upgrade(ctx, creds{origin: a.opt.Origin})
	c.add(r.sent, r.received())
	if !r.upgraded() {
		return nil
	}
	msg, _ := json.Marshal(map[string]string{"type": "auth", "token": a.opt.Token})
	desc := "text " + string(msg)
	if err := r.conn.sendText(msg); err != nil {
		c.add(desc, "send failed: "+describeErr(err))
		r.conn.close()
		return nil
	}
	m, ok := r.conn.next(a.replyWait())
	if !ok {
		c.add(desc, "no answer within "+dur(a.replyWait()))
		r.conn.close()
		return nil
	}
	c.add(desc, m.describe())
	var reply struct {
		Type string `json:"type"`
	}
	if m.isClose() || json.Unmarshal(m.data, &reply) != nil || reply.Type != "auth_ok" {
		r.conn.close()
		return nil
	}
	return r.conn
}

// authHeader opens a connection with Authorization: Bearer and checks that
// it is served.
func (a *auditor) authHeader(ctx context.Context, c *Check) *wsConn {
	r := a.upgrade(ctx, creds{origin: a.opt.Origin, bearer: a.opt.Token})
	c.add(r.sent, r.received())
	if !r.upgraded() {
		return nil
	}
	id := a.ids.Add(1)
	if a.sendRequest(c, r.conn, id, "ping", "") != nil {
		r.conn.close()
		return nil
	}
	o := r.conn.await(id, a.replyWait())
	c.add("text "+string(request(id, "ping", "")), o.describe(a.replyWait()))
	if o.resp == nil || !o.resp.isResult() {
		r.conn.close()
		return nil
	}
	return r.conn
}

// openAuthed opens a connection authenticated the way discoverAuth found.
func (a *auditor) openAuthed(ctx context.Context, c *Check) *wsConn {
	switch a.mode {
	case modeMessage:
		return a.authMessage(ctx, c)
	case modeHeader:
		r := a.upgrade(ctx, creds{origin: a.opt.Origin, bearer: a.opt.Token})
		c.add(r.sent, r.received())
		return r.conn
	case modeNone:
		r := a.upgrade(ctx, creds{origin: a.opt.Origin})
		c.add(r.sent, r.received())
		return r.conn
	}
	return nil
}

// checkOrigin sends an upgrade with an unlisted Origin and otherwise the
// credentials of an upgrade that succeeded (the control).
func (a *auditor) checkOrigin(ctx context.Context) Check {
	c := a.newCheck("origin", "Origin validation", Critical)
	probe := creds{origin: probeOrigin}
	control := "an upgrade without credentials"
	switch {
	case a.baseUp:
	case a.mode == modeHeader:
		probe.bearer = a.opt.Token
		control = "an upgrade with the bearer token"
	default:
		return c.done(Skip, "no upgrade succeeded without credentials and none with a token, so a refusal would prove nothing")
	}
	if a.opt.Origin != "" {
		control += " and Origin " + a.opt.Origin
	}
	r := a.upgrade(ctx, probe)
	c.add(r.sent, r.received())
	switch {
	case r.upgraded():
		r.conn.close()
		return c.done(Fail, "upgrade with the unlisted Origin %s accepted (101), where %s also succeeds: cross-site WebSocket hijacking is possible", probeOrigin, control)
	case r.status == 0 || r.status == 429 || r.status == 503:
		return c.done(Skip, "%s", inconclusive(r))
	}
	return c.done(Pass, "upgrade with the unlisted Origin %s refused before upgrade (%s), where %s succeeds", probeOrigin, r.line, control)
}

// checkAuthDeadline connects without credentials, sends nothing and waits
// for the server to close.
func (a *auditor) checkAuthDeadline(ctx context.Context) Check {
	bound := a.opt.AuthDeadline
	c := a.newCheck("auth-deadline", "Auth deadline", Major)
	r := a.upgrade(ctx, creds{origin: a.opt.Origin})
	if !r.upgraded() {
		c.add(r.sent, r.received())
		if refusedAnswer(r.status) {
			return c.done(Pass, "upgrades without credentials are refused (%s): nothing is left open", r.line)
		}
		return c.done(Skip, "%s", inconclusive(r))
	}
	defer r.conn.close()
	// A little slack over the bound for scheduling and the network.
	end := time.Now().Add(bound + bound/50 + 100*time.Millisecond)
	var seen []string
	for {
		m, ok := r.conn.next(time.Until(end))
		if !ok {
			c.add(r.sent+"; then sent nothing", r.received()+"; still open after "+dur(time.Since(r.conn.opened)))
			return c.done(Fail, "an unauthenticated idle connection was still open after %s", dur(bound))
		}
		if !m.isClose() {
			if len(seen) < 2 {
				seen = append(seen, m.describe())
			}
			continue
		}
		a.dlNoFrame = m.cut()
		got := append([]string{r.received()}, seen...)
		c.add(r.sent+"; then sent nothing", strings.Join(append(got, m.describe()), "; then "))
		if m.cut() {
			return c.done(Warn, "an unauthenticated idle connection was closed after %s (bound %s), but without a close frame: the client sees an abnormal closure (1006) and cannot tell it must authenticate", dur(m.at), dur(bound))
		}
		return c.done(Pass, "an unauthenticated idle connection was closed after %s (bound %s)", dur(m.at), dur(bound))
	}
}

// needsAuth returns a skip reason when the check cannot get an
// authenticated connection.
func (a *auditor) needsAuth(c *Check) string {
	if a.mode == modeUnknown {
		c.tokenSkip = true
		return "needs an authenticated connection: " + a.modeWhy
	}
	return ""
}

// credsOnlyServed is the shape of the token-in-URL and cookie checks: the
// token goes only where the variant puts it, and the first message is an
// initialize request, which a served connection answers.
func (a *auditor) credsOnlyServed(ctx context.Context, c *Check, cr creds) (served bool, ok bool) {
	r := a.upgrade(ctx, cr)
	if !r.upgraded() {
		c.add(r.sent, r.received())
		return false, r.status != 0 && r.status != 429 && r.status != 503
	}
	c.add(r.sent, r.received())
	defer r.conn.close()
	id := a.ids.Add(1)
	if a.sendRequest(c, r.conn, id, "initialize", initializeParams) != nil {
		return false, true
	}
	o := r.conn.await(id, a.replyWait())
	c.add("text "+string(request(id, "initialize", initializeParams)), o.describe(a.replyWait()))
	return o.resp != nil && o.resp.isResult(), true
}

// credsOnlySkip says why the token-in-URL and cookie checks cannot run.
func (a *auditor) credsOnlySkip(c *Check) string {
	c.tokenSkip = a.opt.Token == "" || a.mode == modeUnknown
	switch {
	case a.mode == modeNone:
		return "the server serves without any credentials (see auth-before-service), so whether it also reads them from here cannot be told"
	case a.opt.Token == "":
		return "needs --token"
	case a.mode == modeUnknown:
		return "needs a token the server accepts: " + a.modeWhy
	}
	return ""
}

// checkTokenInURL offers the token only as ?token= and ?access_token=.
func (a *auditor) checkTokenInURL(ctx context.Context) Check {
	c := a.newCheck("token-in-url", "Token in URL", Minor)
	if why := a.credsOnlySkip(c); why != "" {
		return c.done(Skip, "%s", why)
	}
	var accepted []string
	conclusive := 0
	for _, p := range []string{"token", "access_token"} {
		served, ok := a.credsOnlyServed(ctx, c, creds{origin: a.opt.Origin, query: p + "=" + url.QueryEscape(a.opt.Token)})
		if served {
			accepted = append(accepted, "?"+p+"=")
		}
		if ok {
			conclusive++
		}
	}
	switch {
	case len(accepted) > 0:
		return c.done(Warn, "a token in the URL (%s) authenticates: it ends up in access logs, proxies and history", strings.Join(accepted, ", "))
	case conclusive < 2:
		return c.done(Skip, "the probes could not reach the endpoint")
	}
	return c.done(Pass, "a token in ?token= or ?access_token= does not authenticate")
}

// checkCookieAuth offers the token only as cookies.
func (a *auditor) checkCookieAuth(ctx context.Context) Check {
	c := a.newCheck("cookie-auth", "Cookies as auth", Critical)
	if why := a.credsOnlySkip(c); why != "" {
		return c.done(Skip, "%s", why)
	}
	t := url.QueryEscape(a.opt.Token)
	cookie := fmt.Sprintf("token=%s; access_token=%s; auth_token=%s; session=%s; mcp_token=%s", t, t, t, t, t)
	served, ok := a.credsOnlyServed(ctx, c, creds{origin: a.opt.Origin, cookie: cookie})
	switch {
	case served:
		return c.done(Fail, "a token sent only as a cookie authenticates: with any Origin gap, a cross-site page rides on it")
	case !ok:
		return c.done(Skip, "the probe could not reach the endpoint")
	}
	return c.done(Pass, "a token sent only as a cookie does not authenticate")
}

// checkAvailability makes one last upgrade: a server that answered before
// and no longer does went down during the audit (a probe crashed it).
func (a *auditor) checkAvailability(ctx context.Context) Check {
	c := a.newCheck("availability", "Still up after the probes", Major)
	before := a.answered.Load()
	r := a.upgrade(ctx, creds{origin: a.opt.Origin})
	c.add(r.sent, r.received())
	if r.upgraded() {
		r.conn.close()
	}
	switch {
	case r.status != 0:
		return c.done(Pass, "the endpoint still answers upgrades (%s)", r.line)
	case before:
		return c.done(Fail, "the endpoint stopped answering during the audit (%s): a probe may have crashed it", r.line)
	}
	return c.done(Skip, "%s", inconclusive(r))
}
