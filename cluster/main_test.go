package cluster

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the tests kill Redis on purpose.
	RouteRedisLogs(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
