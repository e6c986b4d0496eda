package admin

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/seed-c94cd834/fanout"
)

// The window of the recent latencies (p50, p99) of [CallStats]: the last
// RecentCalls answered calls that ended within RecentAge. A series that
// answered no call in RecentAge has no recent latency.
const (
	RecentCalls = 1024
	RecentAge   = time.Minute
)

// StateUnknown is the state of a replica that calls were seen for but
// that no source given to [Metrics.AddRoute] lists.
const StateUnknown = "unknown"

// Status is what the admin endpoint shows: /status.json is it as JSON,
// and the page at / draws it.
type Status struct {
	Program  string        `json:"program"`             // the program's name, see [Options]
	Time     time.Time     `json:"time"`                // when it was read
	Ready    bool          `json:"ready"`               // what /readyz says
	NotReady string        `json:"not_ready,omitempty"` // why not, when not Ready
	Server   CallStats     `json:"server"`              // the calls the program's transport server served (WorkServe)
	Routes   []RouteStatus `json:"routes"`              // AddRoute's order, then the others seen, by name
	Changes  []StateChange `json:"changes"`             // recent replica state changes, the newest first
}

// CallStats counts the calls of a route, a replica or the server.
type CallStats struct {
	Calls    int64 `json:"calls"`     // calls ended
	Errors   int64 `json:"errors"`    // calls ended other than "ok" or "canceled" (see below)
	InFlight int64 `json:"in_flight"` // calls started and not ended
	Recent   int   `json:"recent"`    // answered calls in the window of RecentCalls and RecentAge

	// The median and 99th percentile (nearest rank) of the durations of
	// the Recent calls; 0 when Recent is 0.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
}

// RouteStatus is one route: its router calls (WorkRoute) and its
// balancer's replicas.
type RouteStatus struct {
	Route string `json:"route"`
	CallStats
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica of a route's balancer: its state and its
// calls (WorkAttempt: tries, retries and hedges).
type ReplicaStatus struct {
	Replica string    `json:"replica"`         // its name, or its index as "#1"
	State   string    `json:"state"`           // see [ReplicaState]; [StateUnknown] if no source lists it
	Since   time.Time `json:"since,omitzero"`  // out of service: since when
	Error   string    `json:"error,omitempty"` // out of service: the error that took it out
	CallStats
}

// StateChange is a change of a replica's state, seen between two reads of
// the replicas' states (a scrape of /metrics, a read of the status): a
// change and its reversal between two reads are not seen.
type StateChange struct {
	Time    time.Time `json:"time"` // when it was seen
	Route   string    `json:"route"`
	Replica string    `json:"replica"`
	From    string    `json:"from"`
	To      string    `json:"to"`
}

// Status returns the status now: the server's calls, every route with
// its replicas, and the recent state changes. Program, Ready and NotReady
// are left for [Handler] to fill. In flight for a listed replica is its
// balancer's count, hedges included.
func (m *Metrics) Status() Status {
	reads := m.readReplicas()
	now := time.Now()
	st := Status{Time: now, Server: m.server.stats.read(now), Routes: []RouteStatus{}}

	routes, balancers := m.routes.load(), m.balancers.load()
	shown := make(map[string]bool)
	add := func(route string, listed []replicaRead) {
		shown[route] = true
		rs := RouteStatus{Route: route, Replicas: []ReplicaStatus{}}
		if s := routes[route]; s != nil {
			rs.CallStats = s.stats.read(now)
		}
		var called map[string]*replicaSeries
		if b := balancers[route]; b != nil {
			called = b.replicas.load()
		}
		inList := make(map[string]bool)
		for _, r := range listed {
			inList[r.name] = true
			row := ReplicaStatus{Replica: r.name, State: r.state, Since: r.status.Since}
			if r.status.Err != nil {
				row.Error = r.status.Err.Error()
			}
			if s := called[r.name]; s != nil {
				row.CallStats = s.stats.read(now)
			}
			row.InFlight = int64(r.status.InFlight)
			rs.Replicas = append(rs.Replicas, row)
		}
		for _, name := range sortedKeys(called) {
			if !inList[name] {
				rs.Replicas = append(rs.Replicas, ReplicaStatus{Replica: name, State: StateUnknown, CallStats: called[name].stats.read(now)})
			}
		}
		st.Routes = append(st.Routes, rs)
	}
	for _, r := range reads {
		add(r.route, r.replicas)
	}
	others := append(sortedKeys(routes), sortedKeys(balancers)...)
	slices.Sort(others)
	for _, route := range slices.Compact(others) {
		if !shown[route] {
			add(route, nil)
		}
	}

	m.mu.Lock()
	st.Changes = slices.Clone(m.changes)
	m.mu.Unlock()
	if st.Changes == nil {
		st.Changes = []StateChange{}
	}
	slices.Reverse(st.Changes)
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// callStats are the counts behind a [CallStats], updated with atomics.
type callStats struct {
	inFlight atomic.Int64
	calls    atomic.Int64
	errors   atomic.Int64
	recent   window
}

// end counts w, which ended with outcome o (an index in outcomes). A
// canceled call is not an error: its caller gave up, or its hedge won. A
// partial one is: some of its items failed. Both ok and partial calls
// answered, and their durations are recorded.
func (s *callStats) end(w *fanout.Work, o int) {
	s.inFlight.Add(-1)
	s.calls.Add(1)
	if o != outcomeOK && o != outcomeCanceled {
		s.errors.Add(1)
	}
	if o == outcomeOK || o == outcomePartial {
		s.recent.add(w.Start.UnixNano()+int64(w.Duration), w.Duration)
	}
}

func (s *callStats) read(now time.Time) CallStats {
	c := CallStats{Calls: s.calls.Load(), Errors: s.errors.Load(), InFlight: s.inFlight.Load()}
	c.Recent, c.P50, c.P99 = s.recent.quantiles(now)
	return c
}

// window holds the end times and durations of the last RecentCalls
// answered calls, in a ring written with atomics. A reader may pair one
// call's end with another's duration while they are written: either is a
// recent call's, which is all a status page needs.
type window struct {
	next  atomic.Uint64
	slots [RecentCalls]struct{ end, dur atomic.Int64 } // end in Unix nanoseconds; 0 for none yet
}

func (w *window) add(end int64, d time.Duration) {
	s := &w.slots[(w.next.Add(1)-1)%RecentCalls]
	s.dur.Store(int64(d))
	s.end.Store(end)
}

// quantiles returns how many calls ended within RecentAge of now, and the
// median and 99th percentile of their durations.
func (w *window) quantiles(now time.Time) (n int, p50, p99 time.Duration) {
	since := now.Add(-RecentAge).UnixNano()
	ds := make([]time.Duration, 0, min(w.next.Load(), RecentCalls))
	for i := range w.slots {
		if w.slots[i].end.Load() > since {
			ds = append(ds, time.Duration(w.slots[i].dur.Load()))
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	return len(ds), nearestRank(ds, 500), nearestRank(ds, 990)
}

// nearestRank returns the quantile of sorted ds, which is not empty, given
// in thousandths: the smallest value with at least that share of them at
// or below it.
func nearestRank(ds []time.Duration, permille int) time.Duration {
	rank := (len(ds)*permille + 999) / 1000 // ceil(n * q)
	return ds[max(rank, 1)-1]
}
