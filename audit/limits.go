package audit

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// sizeProbeBytes is the size of the oversized message: 1.1 MiB.
const sizeProbeBytes = 1153434

// checkMessageSize sends one 1.1 MiB message on an authenticated connection.
func (a *auditor) checkMessageSize(ctx context.Context) Check {
	c := a.newCheck("message-size", "Message size limit", Major)
	if why := a.needsAuth(c); why != "" {
		return c.done(Skip, "%s", why)
	}
	conn := a.openAuthed(ctx, c)
	if conn == nil {
		return c.done(Skip, "could not open an authenticated connection")
	}
	defer conn.close()
	id := a.ids.Add(1)
	head := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping","params":{"_audit_padding":"`, id)
	msg := make([]byte, sizeProbeBytes)
	copy(msg, head)
	for i := len(head); i < len(msg)-3; i++ {
		msg[i] = 'a'
	}
	copy(msg[len(msg)-3:], `"}}`)
	desc := fmt.Sprintf("one text frame of %d bytes (1.1 MiB): %saaaa…\"}}", len(msg), head)
	before := conn.mc.wrote.Load()
	wrote := make(chan error, 1)
	go func() { wrote <- conn.writeFrameWithin(ws.NewTextFrame(msg), a.opt.Timeout) }()

	var werr error
	var o outcome
	timer := time.NewTimer(a.opt.Timeout)
	defer timer.Stop()
	select {
	case werr = <-wrote:
	case m, open := <-conn.msgs: // the server answered before we finished writing
		if !open {
			m = message{at: time.Since(conn.opened), err: fmt.Errorf("closed")}
		}
		if m.isClose() {
			o.closed = &m
		} else {
			o.other = append(o.other, m.describe())
		}
		conn.nc.Close() // unblock the writer
		werr = <-wrote
	case <-timer.C:
		conn.nc.Close()
		werr = <-wrote
	}
	if werr != nil {
		desc += fmt.Sprintf(" (%d bytes written on the socket before the write failed)", conn.mc.wrote.Load()-before)
	}
	pingID := a.ids.Add(1)
	if o.closed == nil {
		if werr == nil {
			// Make the server show whether the connection still serves.
			_ = conn.sendText(request(pingID, "ping", ""))
			desc += fmt.Sprintf("; then a ping (id %d)", pingID)
		}
		o2 := conn.awaitAny([]int64{id, pingID}, a.replyWait())
		o2.other = append(o.other, o2.other...)
		o = o2
	}
	got := o.describe(a.replyWait())
	if werr != nil && o.closed == nil && o.resp == nil {
		got = "the write failed: " + describeErr(werr) + "; " + got
	}
	c.add(desc, got)
	switch {
	case o.resp != nil:
		return c.done(Fail, "a 1.1 MiB message was accepted and the connection still serves")
	case o.closed != nil && o.closed.op == ws.OpClose && o.closed.code == ws.StatusMessageTooBig:
		return c.done(Pass, "a 1.1 MiB message was refused: close 1009")
	case o.closed != nil && !o.closed.cut():
		return c.done(Pass, "a 1.1 MiB message was refused: %s", o.closed.describe())
	case o.closed != nil:
		return c.done(Warn, "a 1.1 MiB message was refused, but without a close frame (%s): the client sees an abnormal closure (1006), not 1009", o.closed.describe())
	case werr != nil:
		return c.done(Warn, "a 1.1 MiB message was refused, but without a close frame: the server closed the connection during the write; the client sees an abnormal closure (1006), not 1009")
	}
	return c.done(Warn, "no answer and no close within %s: the message may have been dropped silently", dur(a.replyWait()))
}

// awaitAny is await for whichever of ids answers first.
func (c *wsConn) awaitAny(ids []int64, wait time.Duration) outcome {
	end := time.Now().Add(wait)
	var o outcome
	for time.Now().Before(end) {
		m, ok := c.next(time.Until(end))
		if !ok {
			break
		}
		if m.isClose() {
			o.closed = &m
			return o
		}
		for _, r := range responses(m.data) {
			for _, id := range ids {
				if strings.TrimSpace(string(r.ID)) == fmt.Sprint(id) {
					o.resp = &r
					return o
				}
			}
		}
		if len(o.other) < 2 {
			o.other = append(o.other, m.describe())
		}
	}
	return o
}

// Burst parameters of the rate-limit probe: 500 pings over about a second.
const (
	burstMessages = 500
	burstSpan     = time.Second
)

// checkRateLimit sends a burst of small pings on an authenticated connection.
func (a *auditor) checkRateLimit(ctx context.Context) Check {
	c := a.newCheck("rate-limit", "Rate limit", Major)
	if why := a.needsAuth(c); why != "" {
		return c.done(Skip, "%s", why)
	}
	conn := a.openAuthed(ctx, c)
	if conn == nil {
		return c.done(Skip, "could not open an authenticated connection")
	}
	defer conn.close()
	first := a.ids.Add(burstMessages) - burstMessages + 1
	var sent atomic.Int64
	stop := make(chan struct{})
	senderDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(senderDone)
		for i := range int64(burstMessages) {
			select {
			case <-stop:
				return
			default:
			}
			if conn.sendText(request(first+i, "ping", "")) != nil {
				return
			}
			sent.Add(1)
			if (i+1)%25 == 0 { // pace: 25 at a time, spread over burstSpan
				time.Sleep(time.Until(start.Add(burstSpan * time.Duration(i+1) / burstMessages)))
			}
		}
	}()
	var answered, rateErrs, otherErrs int
	otherCodes := map[int]int{} // the other errors, by code
	var firstRate string
	var closed *message
	var sentAtClose int64
	quiet := a.replyWait()
	hardEnd := start.Add(a.opt.Timeout)
	lastSeen := time.Now()
loop:
	for closed == nil && time.Now().Before(hardEnd) {
		m, ok := conn.next(100 * time.Millisecond)
		if !ok {
			select {
			case <-senderDone:
				if int64(answered+rateErrs+otherErrs) >= sent.Load() || time.Since(lastSeen) > quiet {
					break loop
				}
			default:
			}
			continue
		}
		lastSeen = time.Now()
		if m.isClose() {
			closed, sentAtClose = &m, sent.Load()
			break
		}
		for _, r := range responses(m.data) {
			switch {
			case r.isResult():
				answered++
			case r.isRateError():
				rateErrs++
				if firstRate == "" {
					firstRate = fmt.Sprintf("JSON-RPC error %s %q", describeCode(r.Error.Code), r.Error.Message)
				}
			default:
				otherErrs++
				otherCodes[r.Error.Code]++
			}
		}
	}
	close(stop)
	select {
	case <-senderDone:
	case <-time.After(a.replyWait()):
		conn.nc.Close() // a sender stuck on a server that stopped reading
		<-senderDone
	}
	elapsed := time.Since(start)
	sentDesc := fmt.Sprintf("%d ping requests (ids %d…), paced over %s; %d sent in %s", burstMessages, first, burstSpan, sent.Load(), dur(elapsed))
	got := fmt.Sprintf("%d answered, %d rate-limit errors, %d other errors", answered, rateErrs, otherErrs)
	if len(otherCodes) > 0 {
		// Say what they were: -31503 (no worker free) or -31504 (upstream
		// timeout) under a burst is load, not a limit.
		codes := make([]int, 0, len(otherCodes))
		for code := range otherCodes {
			codes = append(codes, code)
		}
		sort.Ints(codes)
		var parts []string
		for _, code := range codes {
			parts = append(parts, fmt.Sprintf("%s x%d", describeCode(code), otherCodes[code]))
		}
		got += " (" + strings.Join(parts, ", ") + ")"
	}
	if firstRate != "" {
		got += "; first: " + firstRate
	}
	if closed != nil {
		got += fmt.Sprintf("; then %s, with %d messages sent", closed.describe(), sentAtClose)
	} else {
		got += "; connection still open"
	}
	c.add(sentDesc, got)
	switch {
	case closed != nil && closed.op == ws.OpClose && closed.code == ws.StatusPolicyViolation:
		return c.done(Pass, "the burst was cut: close 1008 after %d messages", sentAtClose)
	case rateErrs > 0:
		return c.done(Pass, "the burst was limited: %d requests got rate-limit errors", rateErrs)
	case closed != nil:
		return c.done(Warn, "the connection ended during the burst, but not with close 1008 (%s)", closed.describe())
	}
	return c.done(Fail, "a burst of %d messages in %s was not limited (%d answered)", sent.Load(), dur(elapsed), answered)
}
