package pool

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgate/gateway/metrics"
)

// Stats are one upstream's collectors, with its label resolved once so the
// hot path does no label hashing. A nil *Stats (no metrics) does nothing.
type Stats struct {
	name     string
	m        *metrics.Metrics
	requests prometheus.Counter
	latency  prometheus.Observer
	size     prometheus.Gauge
	busy     prometheus.Gauge
	errs     sync.Map // kind -> prometheus.Counter
}

// NewStats resolves the collectors of upstream name; nil m gives nil.
func NewStats(m *metrics.Metrics, name string) *Stats {
	if m == nil {
		return nil
	}
	s := &Stats{
		name:     name,
		m:        m,
		requests: m.UpstreamRequests.WithLabelValues(name),
		latency:  m.UpstreamLatency.WithLabelValues(name),
		size:     m.WorkerPoolSize.WithLabelValues(name),
		busy:     m.WorkerPoolBusy.WithLabelValues(name),
	}
	s.size.Set(0)
	s.busy.Set(0)
	return s
}

// Metrics returns the collectors Stats was made from (nil for nil Stats),
// for the counters that are not the upstream's own (gateway_panics_total).
func (s *Stats) Metrics() *metrics.Metrics {
	if s == nil {
		return nil
	}
	return s.m
}

// Request counts one request handed to the upstream.
func (s *Stats) Request() {
	if s != nil {
		s.requests.Inc()
	}
}

// Done observes the latency of one answered request.
func (s *Stats) Done(start time.Time) {
	if s != nil {
		s.latency.Observe(time.Since(start).Seconds())
	}
}

// Error counts one failure of the given kind (a short fixed word).
func (s *Stats) Error(kind string) {
	if s == nil {
		return
	}
	c, ok := s.errs.Load(kind)
	if !ok {
		c, _ = s.errs.LoadOrStore(kind, s.m.UpstreamErrors.WithLabelValues(s.name, kind))
	}
	c.(prometheus.Counter).Inc()
}

// AddSize moves the pool size gauge (workers alive or starting).
func (s *Stats) AddSize(d int) {
	if s != nil {
		s.size.Add(float64(d))
	}
}

// AddBusy moves the busy gauge (workers serving a session or a request).
func (s *Stats) AddBusy(d int) {
	if s != nil {
		s.busy.Add(float64(d))
	}
}
