package reactor

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/panjf2000/gnet/v2/pkg/logging"
)

// gnetLog routes gnet's own log lines into the gateway's slog logger
// (SPEC 12: every library's lines through slog), so that its zap-format
// lines no longer reach stdout next to our JSON or text logs. gnet logs
// rarely: start-up at debug and errors of an event loop or of accept.
type gnetLog struct{ l *slog.Logger }

var _ logging.Logger = gnetLog{}

func (g gnetLog) log(level slog.Level, format string, args []any) {
	if !g.l.Enabled(context.Background(), level) {
		return // no Sprintf for a line nobody reads
	}
	g.l.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "gnet")
}

func (g gnetLog) Debugf(format string, args ...any) { g.log(slog.LevelDebug, format, args) }

// Infof is gnet's start-up chatter ("Launching gnet with 2 event-loops"):
// debug here, as our own "listening" line says the same.
func (g gnetLog) Infof(format string, args ...any)  { g.log(slog.LevelDebug, format, args) }
func (g gnetLog) Warnf(format string, args ...any)  { g.log(slog.LevelWarn, format, args) }
func (g gnetLog) Errorf(format string, args ...any) { g.log(slog.LevelError, format, args) }

// Fatalf is logged as an error; the caller (gnet) then stops the engine
// and Serve returns its error, which ends `gateway serve` with exit 1.
func (g gnetLog) Fatalf(format string, args ...any) { g.log(slog.LevelError, format, args) }
