package e2e

import (
	"net/http"
	"syscall"
	"testing"
	"time"
)

// SIGTERM: open connections get close 1001, the process exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	g := startGateway(t, with("drain_timeout", "5s"))
	a := dialAuthed(t, g.Addr, aliceToken)
	b := dialRaw(t, g.Addr, "/mcp") // still pending auth
	must(t, g.Signal(syscall.SIGTERM))
	a.expectClose(1001, "Going away", 5*time.Second)
	b.expectClose(1001, "Going away", 5*time.Second)
	select {
	case <-g.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not exit after drain")
	}
	if g.ExitErr() != nil {
		t.Fatalf("exit: %v\n%s", g.ExitErr(), g.Logs())
	}
	if _, err := http.Get("http://" + g.Admin + "/readyz"); err == nil {
		t.Fatal("admin still answering after exit")
	}
}
