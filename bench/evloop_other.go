//go:build !linux

package bench

import (
	"context"
	"errors"
	"time"
)

// evLoopSupported: the event-loop engine is Linux only (epoll); elsewhere
// every run uses the goroutine engine.
const evLoopSupported = false

type evEngine struct{}

func newEvEngine(*engine, int) (*evEngine, error) { return nil, errors.New("no epoll") }

func (*evEngine) adopt(int, *wsConn) error                              { return errors.New("no epoll") }
func (*evEngine) run(context.Context, *callPhase, time.Time, time.Time) {}
func (*evEngine) inFlight() int                                         { return 0 }
func (*evEngine) clearPending() int                                     { return 0 }
func (*evEngine) close()                                                {}
