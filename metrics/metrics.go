// Package metrics owns the gateway's Prometheus collectors (SPEC 6) and the
// registry /metrics serves. It uses the official client library
// (github.com/prometheus/client_golang): its text exposition, histograms and
// registry are what every Prometheus server expects, and hand-written
// exposition is a classic source of subtle format bugs.
//
// Labels are always from small fixed sets (results, close codes, reasons,
// upstream names from the config); never a value a client chooses: no
// subject, address, token, method, path, Origin, user agent or close reason,
// and a close code outside the registered ones is "other" (CloseLabels).
package metrics

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector. The zero value is not usable; call New.
type Metrics struct {
	Registry *prometheus.Registry

	ConnectionsOpen  prometheus.Gauge
	PendingAuth      prometheus.Gauge
	Handshakes       *prometheus.CounterVec // result
	Closes           *prometheus.CounterVec // code
	AuthFailures     *prometheus.CounterVec // reason
	Rejected         *prometheus.CounterVec // reason
	RateLimit        *prometheus.CounterVec // limiter, decision
	MessagesIn       prometheus.Counter
	MessagesOut      prometheus.Counter
	UpstreamRequests *prometheus.CounterVec // upstream
	UpstreamErrors   *prometheus.CounterVec // upstream, kind
	UpstreamLatency  *prometheus.HistogramVec
	WorkerPoolSize   *prometheus.GaugeVec // upstream
	WorkerPoolBusy   *prometheus.GaugeVec // upstream
	RedisErrors      prometheus.Counter
	// RedisUp is 1 while the per-subject limiter reaches Redis, 0 while it
	// does not (and without Redis); RedisFallback is 1 while the local
	// fallback (redis.on_failure: local) is serving.
	RedisUp       prometheus.Gauge
	RedisFallback prometheus.Gauge
	// Panics counts recovered panics by where they happened: "loop" (a
	// connection's event-loop callback), "upstream" (a worker's reader or
	// an upstream message), "builtin" (the builtin server).
	Panics *prometheus.CounterVec
	// DescriptorsOpen and DescriptorsLimit are the descriptor budget
	// (SPEC 10): every descriptor the process holds, and the open-file limit.
	DescriptorsOpen  prometheus.Gauge
	DescriptorsLimit prometheus.Gauge
	// BufferedBytes is the memory reserved for partially received messages
	// (limits.max_buffered_bytes).
	BufferedBytes prometheus.Gauge

	buildInfo *prometheus.GaugeVec // version, revision, goversion: always 1
	requests  *prometheus.CounterVec

	ConfigReloads *prometheus.CounterVec // result: ok, partial, invalid
	methods       methodCounters
	closeByCode   [1100]atomic.Pointer[counterBox]
}

// New registers every collector on a fresh registry, with the Go runtime and
// process collectors beside them.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		ConnectionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_connections_open", Help: "WebSocket connections open (all states)."}),
		PendingAuth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_connections_pending_auth", Help: "Connections upgraded but not yet authenticated."}),
		Handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_handshakes_total", Help: "Upgrade attempts by result (ok or the HTTP status refused with, or timeout)."}, []string{"result"}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_closes_total", Help: "Connections closed, by WebSocket close code (0: closed before or without a WebSocket close)."}, []string{"code"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_auth_failures_total", Help: "Failed authentications by reason."}, []string{"reason"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_messages_rejected_total", Help: "Inbound messages refused, by reason."}, []string{"reason"}),
		RateLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_ratelimit_decisions_total", Help: "Rate-limit decisions by limiter and decision."}, []string{"limiter", "decision"}),
		MessagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_messages_in_total", Help: "Text messages relayed from clients to upstreams."}),
		MessagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_messages_out_total", Help: "Text messages sent to clients."}),
		UpstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_upstream_requests_total", Help: "Messages handed to each upstream."}, []string{"upstream"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_upstream_errors_total", Help: "Upstream failures by kind."}, []string{"upstream", "kind"}),
		UpstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_upstream_latency_seconds", Help: "Time from handing a request to an upstream to its answer.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"upstream"}),
		WorkerPoolSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_worker_pool_size", Help: "Workers in each upstream pool."}, []string{"upstream"}),
		WorkerPoolBusy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_worker_pool_busy", Help: "Workers busy in each upstream pool."}, []string{"upstream"}),
		RedisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_redis_errors_total", Help: "Failed Redis calls."}),
		RedisUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_redis_up", Help: "1 while the per-subject limiter reaches Redis; 0 while it does not, or without Redis."}),
		RedisFallback: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_redis_fallback", Help: "1 while Redis is unreachable and the node-local fallback (redis.on_failure: local) limits subjects."}),
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_panics_total", Help: "Panics recovered; each closed one connection (1011) or dropped one upstream message."}, []string{"site"}),
		DescriptorsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_descriptors_open", Help: "File descriptors the process holds (all kinds)."}),
		DescriptorsLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_descriptors_limit", Help: "The process's open-file limit (soft RLIMIT_NOFILE)."}),
		BufferedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_buffered_bytes", Help: "Bytes reserved for partially received messages (limits.max_buffered_bytes)."}),
	}
	m.buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gateway_build_info", Help: "1, labelled with the binary's version, source revision and Go version (SPEC 12)."},
		[]string{"version", "revision", "goversion"})
	r.MustRegister(m.buildInfo)
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_requests_total", Help: "Client messages by JSON-RPC method (MCP's methods by name, any other as other; a batch once as batch)."},
		[]string{"method"})
	for i, name := range Methods {
		m.methods[i] = m.requests.WithLabelValues(name)
	}
	r.MustRegister(m.requests)
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_config_reloads_total", Help: "Config reloads (SIGHUP, POST /admin/reload) by result: ok, partial (some changes need a restart) or invalid (nothing changed)."},
		[]string{"result"})
	r.MustRegister(m.ConfigReloads)
	r.MustRegister(m.ConnectionsOpen, m.PendingAuth, m.Handshakes, m.Closes, m.AuthFailures,
		m.Rejected, m.RateLimit, m.MessagesIn, m.MessagesOut, m.UpstreamRequests, m.UpstreamErrors,
		m.UpstreamLatency, m.WorkerPoolSize, m.WorkerPoolBusy, m.RedisErrors, m.RedisUp, m.RedisFallback,
		m.Panics, m.DescriptorsOpen, m.DescriptorsLimit, m.BufferedBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"ok", "400", "401", "403", "404", "429", "431", "503", "timeout"} {
		m.Handshakes.WithLabelValues(r)
	}
	for _, s := range PanicSites {
		m.Panics.WithLabelValues(s)
	}
	return m
}

// PanicSites are the values of gateway_panics_total's site label.
var PanicSites = []string{"loop", "upstream", "builtin"}

type counterBox struct{ c prometheus.Counter }

// Close counts one closed connection. The close-code label comes from a
// fixed set (SPEC 10, [CloseLabel]), so a hostile client cannot mint label
// values. Counters are cached so the close path does no label hashing.
func (m *Metrics) Close(code int) {
	if code < 0 || code >= len(m.closeByCode) {
		code = len(m.closeByCode) - 1 // not registered: "other"
	}
	b := m.closeByCode[code].Load()
	if b == nil {
		b = &counterBox{m.Closes.WithLabelValues(CloseLabel(code))}
		m.closeByCode[code].Store(b) // any goroutine stores the same child
	}
	b.c.Inc()
}

// CloseLabels are the values of gateway_closes_total's code label: "0" (the
// connection closed without a WebSocket close: before the upgrade, or cut),
// the codes the IANA WebSocket Close Code registry assigns in the range
// RFC 6455 reserves for the protocol (1000-1003, 1005-1015: RFC 6455 7.4.1
// plus 1012 Service Restart, 1013 Try Again Later, 1014 Bad Gateway), and
// "other". Every code the gateway sends is in the set (1000, 1001, 1002,
// 1003, 1007, 1008, 1009, 1011, 1013), and so is every code a client may
// send that has a meaning of its own (1000-1003, 1007-1011; 1005 when its
// close frame had no code). 1004 (reserved, no meaning), 1016-2999
// (unassigned), 3000-3999 (registered per library or framework, first come)
// and 4000-4999 (private use) are chosen by applications: "other".
var CloseLabels = []string{"0", "1000", "1001", "1002", "1003", "1005", "1006", "1007",
	"1008", "1009", "1010", "1011", "1012", "1013", "1014", "1015", "other"}

// CloseLabel is the gateway_closes_total label of a close code: one of
// [CloseLabels].
func CloseLabel(code int) string {
	switch {
	case code == 0, code >= 1000 && code <= 1003, code >= 1005 && code <= 1015:
		return strconv.Itoa(code)
	}
	return "other"
}

// SetBuildInfo sets gateway_build_info's one series.
func (m *Metrics) SetBuildInfo(version, revision, goversion string) {
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(version, revision, goversion).Set(1)
}
