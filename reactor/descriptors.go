package reactor

import (
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/mcpgate/gateway/fdbudget"
)

// bootDescriptors ties the listeners to the descriptor budget (SPEC 10),
// once they are up (OnBoot).
//
// Client sockets are counted by the server's own counters: open (every
// socket OnOpen has seen and OnClose not yet) and heldFDs (lingering
// duplicates, holdFD).
//
// Without reuse_port, gnet's main reactor accepts everything in a
// listener's queue in one go before an event loop runs OnOpen, so the
// queue's length bounds how many descriptors accept() can take unseen: the
// backlog is lowered to fdbudget.Backlog (listen() on a listening socket
// only changes its backlog), and the budget keeps that burst free. With
// reuse_port each loop accepts one connection at a time and runs OnOpen at
// once: one descriptor per loop and listener.
func (s *Server) bootDescriptors(eng gnet.Engine) {
	b := s.opt.Descriptors
	if b == nil {
		return
	}
	b.Track(fdbudget.Client, func() int64 { return s.open.Load() + s.heldFDs.Load() })
	loops := int64(s.opt.Loops)
	if loops <= 0 {
		loops = int64(runtime.NumCPU())
	}
	listeners := int64(len(s.opt.Config.Listen))
	if s.opt.Config.ReusePort {
		b.SetAcceptBurst(listeners * loops)
		return
	}
	backlog := fdbudget.Backlog(b.Limit())
	var burst int64
	for _, a := range s.opt.Config.Listen {
		fd, err := eng.DupListener("tcp", a)
		if err == nil {
			err = unix.Listen(fd, backlog)
			_ = unix.Close(fd)
		}
		if err != nil {
			// The queue keeps the kernel's length (somaxconn).
			s.log.Warn("listen backlog not lowered; the descriptor budget keeps the kernel's for it", "addr", a, "error", err)
			burst += fdbudget.AcceptBurst(1, int64(somaxconn()), 0)
			continue
		}
		burst += fdbudget.AcceptBurst(1, int64(backlog), 0)
	}
	b.SetAcceptBurst(burst + loops)
	s.log.Info("descriptor budget", "limit", b.Limit(), "headroom", b.Headroom(), "client_margin", b.Margin(),
		"listen_backlog", backlog, "in_use", b.InUse())
}

// somaxconn is the kernel's cap on a listen queue, which gnet asks for.
func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 4096
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 4096
	}
	return n
}
