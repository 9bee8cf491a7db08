// Package fault owns what the gateway does about its own bugs (SPEC 10: a
// panic while handling one connection or one upstream message closes that
// connection with 1011 and counts gateway_panics_total; the process lives
// on), and the fault injection that tests it.
//
// Recovery: every goroutine and callback that handles one connection's or
// one upstream message's work defers a recover and hands what it got to
// Recovered, which counts gateway_panics_total{site} and logs the panic
// with its stack; the caller then fails the connection the work was for
// with Code and Reason (close 1011 "Internal error"), or drops the message
// when nobody can be named.
//
//	defer func() {
//		if r := recover(); r != nil {
//			fault.Recovered(m, log, fault.SiteUpstream, r)
//			route.Fail(fault.Code, fault.Reason)
//		}
//	}()
//
// Injection: Hit(point) marks a place where a test may make the gateway
// panic. Without the build tag faultinject it is an empty function the
// compiler inlines away, so production binaries contain no injection code.
// Built with -tags faultinject, Hit panics (with an Injected value) when
// the environment variable GATEWAY_FAULT, read once at start, names the
// point. GATEWAY_FAULT is a comma-separated list of rules:
//
//	point      every hit of point panics
//	point:N    only the Nth hit of point panics (counting from 1)
//
// e.g. GATEWAY_FAULT=builtin.handle:3,stdio.line:2. Hits are counted per
// point across the whole process.
//
// The points:
//
//	builtin.handle  the builtin server answers one message (on a worker
//	                goroutine, or inline on an event loop)
//	stdio.line      a stdio worker's stdout reader got one line, before
//	                routing it
//	pool.route      a message from a worker (stdio or HTTP) is about to be
//	                delivered to the connection it is for (pool.Routing)
//	http.response   one message read from an HTTP upstream's POST answer
//	                (JSON body or SSE event), before routing it
//	http.listen     one message read from an HTTP upstream session's GET
//	                stream, before routing it
//	loop.open, loop.text, loop.close, ...
//	                the event loop's callbacks (package reactor; site "loop")
package fault

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"

	"github.com/mcpgate/gateway/metrics"
)

// The close a connection gets when a panic ended its work (RFC 6455 1011,
// "Internal Error").
const (
	Code   uint16 = 1011
	Reason        = "Internal error"
)

// Sites: the values of gateway_panics_total's site label
// (metrics.PanicSites).
const (
	SiteLoop     = "loop"     // an event-loop callback of a connection
	SiteUpstream = "upstream" // a stdio or HTTP upstream's reader, or routing a worker's message
	SiteBuiltin  = "builtin"  // the builtin server
)

// maxValue bounds the text of a panic value in the log; maxStack the stack.
const (
	maxValue = 200
	maxStack = 16 << 10
)

// Recovered counts one recovered panic in gateway_panics_total{site} and
// logs it at error level with its stack. r is what recover returned (nil
// does nothing). The log holds the panic value's type and its text cut to
// 200 bytes, never the message being handled (it may carry tokens). m and
// log may be nil (no count; slog.Default()). It is safe on any goroutine,
// event loops included, and does not panic.
func Recovered(m *metrics.Metrics, log *slog.Logger, site string, r any) {
	if r == nil {
		return
	}
	if m != nil && m.Panics != nil {
		m.Panics.WithLabelValues(site).Inc()
	}
	if log == nil {
		log = slog.Default()
	}
	stack := debug.Stack()
	if len(stack) > maxStack {
		stack = stack[:maxStack]
	}
	log.Error("panic recovered", "site", site,
		"panic_type", fmt.Sprintf("%T", r), "panic", Describe(r),
		"stack", string(stack))
}

// Describe is the bounded text of a panic value for a log: its error or
// String text (or %v), at most 200 bytes, quoted when it is not printable.
func Describe(r any) (s string) {
	defer func() {
		if recover() != nil { // a String or Error method that panics
			s = fmt.Sprintf("(%T)", r)
		}
	}()
	switch v := r.(type) {
	case error:
		s = v.Error()
	case fmt.Stringer:
		s = v.String()
	case string:
		s = v
	default:
		s = fmt.Sprintf("%v", v)
	}
	if len(s) > maxValue {
		s = s[:maxValue] + "..."
	}
	if !strconv.CanBackquote(s) {
		s = strconv.Quote(s)
	}
	return s
}

// Injected is the value Hit panics with (faultinject builds only).
type Injected struct {
	Point string
	N     int64 // which hit of Point it was
}

func (i Injected) Error() string {
	return "fault: injected panic at " + i.Point + " (hit " + strconv.FormatInt(i.N, 10) + ")"
}
