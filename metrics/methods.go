package metrics

import "github.com/prometheus/client_golang/prometheus"

// Methods are the JSON-RPC methods gateway_requests_total counts by name
// (MCP's, as of 2025-06-18); any other method is counted as "other", so a
// client cannot mint label values. A batch is counted once as "batch".
var Methods = []string{
	"initialize", "ping",
	"tools/list", "tools/call",
	"resources/list", "resources/read", "resources/templates/list",
	"resources/subscribe", "resources/unsubscribe",
	"prompts/list", "prompts/get",
	"completion/complete", "logging/setLevel",
	"notifications/initialized", "notifications/cancelled",
	"notifications/progress", "notifications/roots/list_changed",
	"batch", "other",
}

// methodCounters are the gateway_requests_total series, resolved once:
// counting a message is one atomic add, no label lookup, no allocation.
type methodCounters [methodOther + 1]prometheus.Counter

// methodIndex maps the named methods to their series (batch and other
// come after them).
var methodIndex = func() map[string]int {
	m := map[string]int{}
	for i, name := range Methods[:len(Methods)-2] {
		m[name] = i
	}
	return m
}()

const (
	methodBatch = 17 // index of "batch" in Methods
	methodOther = 18 // index of "other"
)

// Request counts one client message by its method (raw, unquoted; escaped
// methods count as other). A map lookup keyed by string(b) does not allocate.
func (m *Metrics) Request(method []byte) {
	i, ok := methodIndex[string(method)]
	if !ok {
		i = methodOther
	}
	m.methods[i].Inc()
}

// RequestBatch counts one batch.
func (m *Metrics) RequestBatch() { m.methods[methodBatch].Inc() }

// KnownMethod reports whether method is one of the named Methods (not
// batch or other).
func KnownMethod(method []byte) bool {
	_, ok := methodIndex[string(method)]
	return ok
}
