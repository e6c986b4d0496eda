package admin

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/seed-c94cd834/fanout"
)

// Metrics is a [fanout.Observer] that counts what it is told in a
// Prometheus registry of its own, and keeps the status data of
// [Metrics.Status]. Give it to a router ([fanout.WithObserver]), to each
// balancer ([fanout.WithBalancerObserver], named with
// [fanout.WithBalancerName]), to a batcher and to a transport server
// (transport.WithObserver), and register each balancer's replicas with
// [Metrics.AddRoute]. The package doc lists the metrics.
//
// Metrics is safe for concurrent use. Start and End take no lock once a
// route, replica or server has been seen: they load its series from a
// copy-on-write map and update atomics.
type Metrics struct {
	reg *prometheus.Registry

	routeCalls    *prometheus.CounterVec
	routeItems    *prometheus.CounterVec
	routeDuration *prometheus.HistogramVec
	replicaCalls  *prometheus.CounterVec
	hedges        *prometheus.CounterVec
	merged        prometheus.Histogram

	routes    seriesMap[*routeSeries]    // from WorkRoute, by route
	balancers seriesMap[*balancerSeries] // from WorkAttempt, by route
	server    serverSeries

	mu      sync.Mutex
	sources []source              // AddRoute's, in its order
	last    map[replicaKey]string // each replica's state when status was last read
	changes []StateChange         // the most recent last, at most maxChanges
}

var _ fanout.Observer = (*Metrics)(nil)

// maxChanges is how many replica state changes Status keeps.
const maxChanges = 50

// Outcomes are the values of the outcome label: those of
// [fanout.Outcome].
var outcomes = [...]string{"ok", "partial", "canceled", "deadline_exceeded", "unavailable", "overloaded", "error"}

const (
	outcomeOK = iota
	outcomePartial
	outcomeCanceled
)

// outcomeIndex returns the index in outcomes of fanout.Outcome(err).
func outcomeIndex(err error) int {
	switch o := fanout.Outcome(err); o {
	case "ok":
		return outcomeOK
	case "partial":
		return outcomePartial
	case "canceled":
		return outcomeCanceled
	default:
		for i, name := range outcomes {
			if name == o {
				return i
			}
		}
		return len(outcomes) - 1 // "error"
	}
}

// Buckets of the histograms.
var (
	// fanout_route_call_duration_seconds, in seconds: 50µs doubling up to
	// 6.6s (18 buckets), from a call over loopback to a backend slowed
	// with -delay.
	durationBuckets = prometheus.ExponentialBuckets(50e-6, 2, 18)

	// fanout_batcher_merged_calls: 1, 2, 4, ... 128 callers.
	mergedBuckets = prometheus.ExponentialBuckets(1, 2, 8)
)

// NewMetrics returns a Metrics with a registry of its own, which also
// holds the Go runtime's and the process's collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		routeCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_route_calls_total",
			Help: "Calls of a route's backend by a router, by how they ended.",
		}, []string{"route", "outcome"}),
		routeItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_route_items_total",
			Help: "Items a router sent to a route's backend.",
		}, []string{"route"}),
		routeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fanout_route_call_duration_seconds",
			Help:    "How long a route's backend took to end a router's call, whatever its outcome.",
			Buckets: durationBuckets,
		}, []string{"route"}),
		replicaCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_replica_calls_total",
			Help: "Calls of a replica by a balancer (tries, retries and hedges), by how they ended.",
		}, []string{"route", "replica", "outcome"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_hedges_total",
			Help: "Hedges a route's balancer sent.",
		}, []string{"route"}),
		merged: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fanout_batcher_merged_calls",
			Help:    "Callers whose batches a batcher merged into one call of its backend.",
			Buckets: mergedBuckets,
		}),
		last: make(map[replicaKey]string),
	}
	serverCalls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fanout_server_calls_total",
		Help: "Calls this program's transport server served or refused, by how they ended.",
	}, []string{"outcome"})
	for i, o := range outcomes {
		m.server.calls[i] = serverCalls.WithLabelValues(o)
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fanout_server_inflight_calls",
		Help: "Calls this program's transport server is serving now.",
	}, func() float64 { return float64(m.server.stats.inFlight.Load()) })
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.routeCalls, m.routeItems, m.routeDuration, m.replicaCalls, m.hedges, m.merged,
		serverCalls, inFlight, replicaUpCollector{m},
	)
	return m
}

// Registry returns the registry the metrics are in, which [Handler] serves
// at /metrics; a program may register collectors of its own in it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// AddRoute registers the replicas of route's balancer, read when the
// metrics are scraped (fanout_replica_up) and when the status is read:
// pass the balancer's [fanout.Balancer.Replicas]. Routes are shown in the
// order they were added. Adding a route again replaces its source.
func (m *Metrics) AddRoute(route string, replicas func() []fanout.ReplicaStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.sources {
		if m.sources[i].route == route {
			m.sources[i].replicas = replicas
			return
		}
	}
	m.sources = append(m.sources, source{route: route, replicas: replicas})
}

// Start implements [fanout.Observer]: it counts the work in flight.
func (m *Metrics) Start(ctx context.Context, w *fanout.Work) context.Context {
	switch w.Kind {
	case fanout.WorkRoute:
		m.route(w.Route).stats.inFlight.Add(1)
	case fanout.WorkAttempt:
		b := m.balancer(w.Route)
		b.replica(w.Replica).stats.inFlight.Add(1)
		if w.Hedge {
			b.hedges.Inc()
		}
	case fanout.WorkServe:
		m.server.stats.inFlight.Add(1)
	}
	return ctx
}

// End implements [fanout.Observer]: it counts the work by outcome and
// records its duration.
func (m *Metrics) End(_ context.Context, w *fanout.Work) {
	o := outcomeIndex(w.Err)
	switch w.Kind {
	case fanout.WorkRoute:
		s := m.route(w.Route)
		s.calls[o].Inc()
		s.items.Add(float64(w.Items))
		s.duration.Observe(w.Duration.Seconds())
		s.stats.end(w, o)
	case fanout.WorkAttempt:
		r := m.balancer(w.Route).replica(w.Replica)
		r.calls[o].Inc()
		r.stats.end(w, o)
	case fanout.WorkServe:
		m.server.calls[o].Inc()
		m.server.stats.end(w, o)
	case fanout.WorkMerge:
		m.merged.Observe(float64(w.Merged))
	}
}

// routeSeries are a route's metrics, curried, and its status counts.
type routeSeries struct {
	calls    [len(outcomes)]prometheus.Counter
	items    prometheus.Counter
	duration prometheus.Observer
	stats    callStats
}

// balancerSeries are a balancer's: its hedges and its replicas'.
type balancerSeries struct {
	route    string
	hedges   prometheus.Counter
	replicas seriesMap[*replicaSeries]
	vec      *prometheus.CounterVec // fanout_replica_calls_total, to curry a new replica's
}

type replicaSeries struct {
	calls [len(outcomes)]prometheus.Counter
	stats callStats
}

type serverSeries struct {
	calls [len(outcomes)]prometheus.Counter
	stats callStats
}

// route returns the series of route, made at its first sight with every
// outcome's counter, so that each starts from 0.
func (m *Metrics) route(route string) *routeSeries {
	return m.routes.get(route, func() *routeSeries {
		s := &routeSeries{
			items:    m.routeItems.WithLabelValues(route),
			duration: m.routeDuration.WithLabelValues(route),
		}
		for i, o := range outcomes {
			s.calls[i] = m.routeCalls.WithLabelValues(route, o)
		}
		return s
	})
}

func (m *Metrics) balancer(route string) *balancerSeries {
	return m.balancers.get(route, func() *balancerSeries {
		return &balancerSeries{route: route, hedges: m.hedges.WithLabelValues(route), vec: m.replicaCalls}
	})
}

func (b *balancerSeries) replica(name string) *replicaSeries {
	return b.replicas.get(name, func() *replicaSeries {
		s := new(replicaSeries)
		for i, o := range outcomes {
			s.calls[i] = b.vec.WithLabelValues(b.route, name, o)
		}
		return s
	})
}

// seriesMap maps a name to its series. Reads take no lock: the map is
// copied on write, and names (routes, replicas) are few and added rarely.
type seriesMap[V any] struct {
	m  atomic.Pointer[map[string]V]
	mu sync.Mutex // serializes writers
}

// get returns the series of name, made with newSeries if there is none.
func (s *seriesMap[V]) get(name string, newSeries func() V) V {
	if m := s.m.Load(); m != nil {
		if v, ok := (*m)[name]; ok {
			return v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.load()
	if v, ok := old[name]; ok {
		return v
	}
	next := make(map[string]V, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	v := newSeries()
	next[name] = v
	s.m.Store(&next)
	return v
}

// load returns the map now; it must not be changed.
func (s *seriesMap[V]) load() map[string]V {
	if m := s.m.Load(); m != nil {
		return *m
	}
	return nil
}

// source is a route's replicas, as AddRoute registered them.
type source struct {
	route    string
	replicas func() []fanout.ReplicaStatus
}

type replicaKey struct{ route, replica string }

// Replica states, as Status and the page show them.
const (
	StateHealthy = "healthy"
	StateEjected = "ejected"
	StateProbing = "probing"
	StateDown    = "down"
)

// ReplicaState returns the state shown for a replica: "healthy" in
// service; out of service, "down" when the error that took it out matches
// [fanout.ErrUnavailable] (a dial failed, the connection was down, the
// server refused the call as it shut down: nothing reached the backend),
// else its balancer's state, "ejected" or "probing" (for example after
// [fanout.ErrInterrupted], a connection lost mid-call, or a probe that
// timed out: the backend was reached but did not answer well).
func ReplicaState(s fanout.ReplicaStatus) string {
	switch {
	case s.State == fanout.ReplicaHealthy:
		return StateHealthy
	case errors.Is(s.Err, fanout.ErrUnavailable):
		return StateDown
	case s.State == fanout.ReplicaProbing:
		return StateProbing
	}
	return StateEjected
}

// replicaName is how a replica is named in labels: its name, or its index
// as "#2", as a [fanout.Work]'s Replica is.
func replicaName(s fanout.ReplicaStatus) string {
	if s.Name != "" {
		return s.Name
	}
	return "#" + strconv.Itoa(s.Index)
}

// replicaRead is one replica as its route's source gave it.
type replicaRead struct {
	route, name, state string
	status             fanout.ReplicaStatus
}

// routeRead is a route's replicas, as its source gave them.
type routeRead struct {
	route    string
	replicas []replicaRead
}

// readReplicas reads every registered source, in AddRoute's order, and
// logs each replica whose state changed since the last read.
func (m *Metrics) readReplicas() []routeRead {
	m.mu.Lock()
	sources := append([]source(nil), m.sources...)
	m.mu.Unlock()

	// The sources are called without the lock: they are the balancers'.
	out := make([]routeRead, len(sources))
	for i, src := range sources {
		out[i].route = src.route
		seen := make(map[string]bool)
		for _, s := range src.replicas() {
			name := replicaName(s)
			if seen[name] { // a replica given twice: its series must differ
				name += "#" + strconv.Itoa(s.Index)
			}
			seen[name] = true
			out[i].replicas = append(out[i].replicas, replicaRead{route: src.route, name: name, state: ReplicaState(s), status: s})
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for _, rr := range out {
		for _, r := range rr.replicas {
			k := replicaKey{r.route, r.name}
			if from, ok := m.last[k]; ok && from != r.state {
				if len(m.changes) == maxChanges {
					m.changes = append(m.changes[:0], m.changes[1:]...)
				}
				m.changes = append(m.changes, StateChange{Time: now, Route: r.route, Replica: r.name, From: from, To: r.state})
			}
			m.last[k] = r.state
		}
	}
	return out
}

// replicaUpCollector is fanout_replica_up, read from the sources at
// scrape time.
type replicaUpCollector struct{ m *Metrics }

var replicaUpDesc = prometheus.NewDesc("fanout_replica_up",
	"1 if a route's replica is in service (healthy), 0 if it is ejected, probing or down.",
	[]string{"route", "replica"}, nil)

func (c replicaUpCollector) Describe(ch chan<- *prometheus.Desc) { ch <- replicaUpDesc }

func (c replicaUpCollector) Collect(ch chan<- prometheus.Metric) {
	for _, rr := range c.m.readReplicas() {
		for _, r := range rr.replicas {
			up := 0.0
			if r.state == StateHealthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(replicaUpDesc, prometheus.GaugeValue, up, r.route, r.name)
		}
	}
}
