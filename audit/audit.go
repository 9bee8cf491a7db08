// Package audit implements `gateway audit URL`: it probes any MCP WebSocket
// endpoint (ours or another's) for the transport failures of SPEC section 1
// and grades it from A to F (SPEC section 8).
//
// The checks are TLS (wss, version, certificate), Origin validation, auth
// before service, the auth deadline, the message size limit, the rate limit,
// a token accepted in the URL, and cookies accepted as auth. Each check ends
// pass, fail, warn or skip, with its evidence: what was sent and what came
// back. The token given with --token is redacted from every line of output.
//
// Every probe is bounded: at most 10 connections at a time and 50 in all,
// at most ~1.2 MiB written and 4 MiB read per connection, and each probe
// within --timeout (the auth-deadline probe within --auth-deadline). Only the
// host and port of the given URL are contacted.
//
// audit/README.md documents the checks, the grading rubric and examples.
package audit

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Status is the outcome of one check.
type Status string

// The outcomes of a check.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Warn Status = "warn"
	Skip Status = "skip"
)

// Severity says how a check's outcome weighs in the grade (see grade.go).
type Severity string

// The severities of checks.
const (
	Critical Severity = "critical" // a fail is grade F
	Major    Severity = "major"    // each fail lowers the grade
	Minor    Severity = "minor"    // a warn caps the grade at B
	Info     Severity = "info"     // reported, not graded
)

// Evidence is one exchange of a probe: what was sent and what came back.
type Evidence struct {
	Sent     string `json:"sent,omitempty"`
	Received string `json:"received,omitempty"`
}

// Check is the result of one check.
type Check struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Status     Status     `json:"status"`
	Severity   Severity   `json:"severity"`
	Summary    string     `json:"summary"`
	Evidence   []Evidence `json:"evidence"`
	DurationMS int64      `json:"duration_ms"`
	start      time.Time
	a          *auditor
	tokenSkip  bool // skipped for want of a usable token
}

// Stats are what the audit cost the target.
type Stats struct {
	Connections   int64 `json:"connections"`
	MaxConcurrent int64 `json:"max_concurrent"`
	Handshakes    int64 `json:"upgrade_requests"`
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
}

// Report is the outcome of one audit.
type Report struct {
	URL          string     `json:"url"`
	Target       string     `json:"target"`
	Loopback     bool       `json:"loopback"`
	AuthMode     string     `json:"auth_mode"`
	AuthEvidence []Evidence `json:"auth_evidence,omitempty"`
	Grade        string     `json:"grade"`
	GradeReasons []string   `json:"grade_reasons"`
	Checks       []Check    `json:"checks"`
	Stats        Stats      `json:"stats"`
	Started      time.Time  `json:"started"`
	DurationMS   int64      `json:"duration_ms"`
}

// Check returns the check with the given ID, or nil.
func (r *Report) Check(id string) *Check {
	for i := range r.Checks {
		if r.Checks[i].ID == id {
			return &r.Checks[i]
		}
	}
	return nil
}

// How the audit authenticates its probes (Report.AuthMode).
const (
	modeNone    = "none"    // the server serves without credentials
	modeMessage = "message" // first message {"type":"auth","token":T}, answered auth_ok
	modeHeader  = "header"  // Authorization: Bearer T on the upgrade
	modeUnknown = "unknown" // no way found: checks that need auth are skipped
)

// Unreachable is the grade of an endpoint that never answered an upgrade.
const Unreachable = "-"

// probeOrigin is the unlisted Origin of the origin check; .invalid never
// resolves (RFC 2606), so no real site can be it.
const probeOrigin = "https://audit-probe.invalid"

type auditor struct {
	opt       Options
	u         *url.URL
	addr      string
	secure    bool
	loopback  bool
	probeTLS  *tls.Config
	tokenOK   bool   // the token may be sent (given, and the channel is safe)
	tokenWhy  string // why not, when !tokenOK
	mode      string
	modeWhy   string
	lim       *limiter
	ids       atomic.Int64
	baseUp    bool        // an upgrade without credentials got 101
	baseServe bool        // a JSON-RPC request without credentials got a result
	answered  atomic.Bool // some upgrade got an HTTP answer
	dlNoFrame bool        // the auth-deadline probe ended without a close frame
}

// Run audits opt.URL and returns the report. The error is only for a bad URL.
func Run(ctx context.Context, opt Options) (*Report, error) {
	u, addr, err := parseTarget(opt.URL)
	if err != nil {
		return nil, err
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.AuthDeadline <= 0 {
		opt.AuthDeadline = 30 * time.Second
	}
	a := &auditor{opt: opt, u: u, addr: addr, secure: u.Scheme == "wss", lim: newLimiter()}
	a.ids.Store(100)
	a.loopback = isLoopback(ctx, u.Hostname())
	rep := &Report{URL: a.redact(u.String()), Target: addr, Loopback: a.loopback, Started: time.Now()}

	a.progress("TLS")
	tlsCheck := a.checkTLS(ctx)
	// The auth-deadline probe mostly waits, so it runs beside the others.
	deadline := make(chan Check, 1)
	go func() { deadline <- a.checkAuthDeadline(ctx) }()

	a.progress("auth before service")
	abs := a.checkAuthBeforeService(ctx)
	a.progress("authentication mode")
	rep.AuthEvidence = a.discoverAuth(ctx)
	rep.AuthMode = a.mode
	if a.modeWhy != "" {
		rep.AuthMode += " (" + a.modeWhy + ")"
	}
	a.progress("origin validation")
	origin := a.checkOrigin(ctx)
	a.progress("message size limit")
	size := a.checkMessageSize(ctx)
	a.progress("rate limit")
	rate := a.checkRateLimit(ctx)
	a.progress("token in URL")
	tok := a.checkTokenInURL(ctx)
	a.progress("cookies as auth")
	cookie := a.checkCookieAuth(ctx)
	a.progress("auth deadline (up to " + opt.AuthDeadline.String() + ")")
	dl := <-deadline
	a.progress("availability")
	avail := a.checkAvailability(ctx)
	if avail.Status == Fail && (dl.Status == Pass || dl.Status == Warn) && a.dlNoFrame {
		// The idle connection may have ended because the server went down.
		dl.Status = Skip
		dl.Summary = "inconclusive: the idle connection ended without a close frame, and the server went down during the audit"
	}

	rep.Checks = []Check{tlsCheck, origin, abs, dl, size, rate, tok, cookie, avail}
	rep.Grade, rep.GradeReasons = grade(rep.Checks)
	if !a.answered.Load() {
		rep.Grade = Unreachable
		rep.GradeReasons = []string{"no upgrade request got an HTTP answer: the endpoint could not be audited"}
	}
	rep.Stats = Stats{
		Connections:   min(a.lim.total.Load(), maxTotalConns),
		MaxConcurrent: a.lim.maxOpen.Load(),
		Handshakes:    a.lim.handshake.Load(),
		BytesSent:     a.lim.bytesOut.Load(),
		BytesReceived: a.lim.bytesIn.Load(),
	}
	rep.DurationMS = time.Since(rep.Started).Milliseconds()
	return rep, nil
}

func (a *auditor) progress(what string) {
	if a.opt.Progress != nil {
		fmt.Fprintf(a.opt.Progress, "audit: %s…\n", what)
	}
}

// replyWait bounds each wait for an answer inside a probe.
func (a *auditor) replyWait() time.Duration { return min(5*time.Second, a.opt.Timeout) }

// redact hides the token (raw and URL-escaped) in s.
func (a *auditor) redact(s string) string {
	t := a.opt.Token
	if t == "" {
		return s
	}
	s = strings.ReplaceAll(s, t, "<token>")
	if e := url.QueryEscape(t); e != t {
		s = strings.ReplaceAll(s, e, "<token>")
	}
	return s
}

func (a *auditor) newCheck(id, name string, sev Severity) *Check {
	return &Check{ID: id, Name: name, Severity: sev, start: time.Now(), a: a}
}

// add records one exchange, redacted.
func (c *Check) add(sent, received string) {
	c.Evidence = append(c.Evidence, Evidence{Sent: c.a.redact(sent), Received: c.a.redact(received)})
}

// done sets the outcome and returns the finished check.
func (c *Check) done(s Status, format string, args ...any) Check {
	c.Status = s
	c.Summary = c.a.redact(fmt.Sprintf(format, args...))
	c.DurationMS = time.Since(c.start).Milliseconds()
	return *c
}

// rpcResponse is the part of a JSON-RPC response the checks look at.
type rpcResponse struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r *rpcResponse) isResult() bool { return r.Error == nil && len(r.Result) > 0 }

// isRateError reports whether a JSON-RPC error says "slow down".
func (r *rpcResponse) isRateError() bool {
	if r.Error == nil {
		return false
	}
	m := strings.ToLower(r.Error.Message)
	return r.Error.Code == -31029 || r.Error.Code == -32029 || strings.Contains(m, "rate") || strings.Contains(m, "too many") || strings.Contains(m, "throttl")
}

// codeName names a JSON-RPC error code: JSON-RPC's own, and the codes an
// MCP gateway answers with itself (SPEC 4.6), so that evidence says what an
// error meant (a rate limit, an upstream with no worker free, an upstream
// timeout) and not only its number. Codes of earlier builds that SPEC 4.6
// retired are named as such. "" for any other code.
func codeName(code int) string {
	switch code {
	case -32700:
		return "Parse error"
	case -32600:
		return "Invalid Request"
	case -32601:
		return "Method not found"
	case -32602:
		return "Invalid params"
	case -32603:
		return "Internal error"
	case -31000:
		return "Reconnect (draining)"
	case -31003:
		return "Forbidden"
	case -31029:
		return "Rate limit exceeded"
	case -31503:
		return "Upstream unavailable"
	case -31504:
		return "Upstream timeout"
	case -32029:
		return "rate limit (retired code; SPEC 4.6: -31029)"
	case -32000:
		return "legacy server error (retired for reconnect; SPEC 4.6: -31000)"
	}
	return ""
}

// describeCode is code with its name, if it has one.
func describeCode(code int) string {
	if n := codeName(code); n != "" {
		return fmt.Sprintf("%d (%s)", code, n)
	}
	return fmt.Sprint(code)
}

// isAuthError reports whether a JSON-RPC error says "authenticate first".
func (r *rpcResponse) isAuthError() bool {
	if r.Error == nil {
		return false
	}
	m := strings.ToLower(r.Error.Message)
	for _, w := range []string{"auth", "credential", "token", "forbidden", "permission", "login"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return r.Error.Code == -32001 || r.Error.Code == -31003 || r.Error.Code == 401 || r.Error.Code == 403
}

// responses parses a text message as JSON-RPC responses (one or a batch).
func responses(data []byte) []rpcResponse {
	d := strings.TrimSpace(string(data))
	if strings.HasPrefix(d, "[") {
		var batch []rpcResponse
		if json.Unmarshal(data, &batch) == nil {
			return batch
		}
		return nil
	}
	var r rpcResponse
	if json.Unmarshal(data, &r) != nil || (r.Result == nil && r.Error == nil) {
		return nil
	}
	return []rpcResponse{r}
}

// request builds a JSON-RPC request. Ids are numbers: some bridges (e.g.
// supergateway) rewrite ids and turn strings into null.
func request(id int64, method string, params string) []byte {
	if params == "" {
		return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":%q}`, id, method)
	}
	return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, id, method, params)
}

const initializeParams = `{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcpgate-audit","version":"1"}}`

// outcome is how a request on one connection ended.
type outcome struct {
	resp   *rpcResponse // the response to the request, if any
	closed *message     // the close or end of stream, if any
	other  []string     // other messages seen meanwhile
}

func (o outcome) describe(wait time.Duration) string {
	var parts []string
	parts = append(parts, o.other...)
	switch {
	case o.resp != nil && o.resp.isResult():
		parts = append(parts, "JSON-RPC result for id "+string(o.resp.ID)+": "+clip(string(o.resp.Result)))
	case o.resp != nil:
		parts = append(parts, fmt.Sprintf("JSON-RPC error for id %s: %s %q", o.resp.ID, describeCode(o.resp.Error.Code), o.resp.Error.Message))
	case o.closed != nil:
		parts = append(parts, o.closed.describe())
	default:
		parts = append(parts, fmt.Sprintf("no answer within %s", dur(wait)))
	}
	return strings.Join(parts, "; then ")
}

// await reads until the response to id, the end of the connection, or wait.
func (c *wsConn) await(id int64, wait time.Duration) outcome {
	var o outcome
	want := strconv.FormatInt(id, 10)
	end := time.Now().Add(wait)
	for {
		left := time.Until(end)
		if left <= 0 {
			return o
		}
		m, ok := c.next(left)
		if !ok {
			return o
		}
		if m.isClose() {
			o.closed = &m
			return o
		}
		for _, r := range responses(m.data) {
			if strings.TrimSpace(string(r.ID)) == want {
				o.resp = &r
				return o
			}
		}
		if len(o.other) < 2 {
			o.other = append(o.other, m.describe())
		}
	}
}

// sendRequest sends a request and records it; the error is recorded too.
func (a *auditor) sendRequest(c *Check, conn *wsConn, id int64, method, params string) error {
	req := request(id, method, params)
	desc := "text " + string(req)
	err := conn.sendText(req)
	if err != nil {
		c.add(desc, "send failed: "+describeErr(err))
	}
	return err
}
