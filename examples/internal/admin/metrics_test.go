package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/seed-c94cd834/fanout"
	"github.com/stretchr/testify/require"
)

var (
	errRefused = fmt.Errorf("dial tcp 127.0.0.1:7011: connect: connection refused: %w", fanout.ErrUnavailable)
	errFull    = fmt.Errorf("server full: %w", fanout.ErrOverloaded)
)

func TestMetricsNamesAndValues(t *testing.T) {
	m := NewMetrics()
	src := newReplicas("127.0.0.1:7001", "127.0.0.1:7011")
	src.set(1, fanout.ReplicaEjected, time.Now(), errRefused)
	m.AddRoute("x", src.read)
	base := serve(t, Handler(Options{Program: "middle", Metrics: m}))

	now := time.Now()
	observe(m, route("x", 3), now, 2*time.Millisecond, nil)
	observe(m, route("x", 5), now, 4*time.Millisecond, nil)
	observe(m, route("x", 2), now, time.Millisecond, &fanout.RouteError{Route: "x", Err: errRefused})
	observe(m, route("y", 4), now, time.Millisecond, &fanout.PartialError{})
	observe(m, attempt("x", "127.0.0.1:7001", false), now, time.Millisecond, nil)
	observe(m, attempt("x", "127.0.0.1:7001", true), now, time.Millisecond, nil)
	observe(m, attempt("x", "127.0.0.1:7011", false), now, time.Millisecond, errRefused)
	observe(m, fanout.Work{Kind: fanout.WorkServe, Items: 10, Bytes: 80}, now, time.Millisecond, nil)
	observe(m, fanout.Work{Kind: fanout.WorkServe, Bytes: 80}, now, 0, errFull)
	observe(m, fanout.Work{Kind: fanout.WorkMerge, Items: 30, Merged: 3}, now, time.Millisecond, nil)
	observe(m, fanout.Work{Kind: fanout.WorkCall, Items: 10}, now, time.Millisecond, nil) // counted by no metric
	serving := fanout.Work{Kind: fanout.WorkServe, Items: 1, Start: now}
	ctx := m.Start(context.Background(), &serving) // a call being served during the scrape

	ms := scrape(t, base)

	var names []string
	for name := range maps.Keys(ms) {
		if strings.HasPrefix(name, "fanout_") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	require.Equal(t, []string{
		"fanout_batcher_merged_calls",
		"fanout_hedges_total",
		"fanout_replica_calls_total",
		"fanout_replica_up",
		"fanout_route_call_duration_seconds",
		"fanout_route_calls_total",
		"fanout_route_items_total",
		"fanout_server_calls_total",
		"fanout_server_inflight_calls",
	}, names)
	for name, typ := range map[string]dto.MetricType{
		"fanout_batcher_merged_calls":        dto.MetricType_HISTOGRAM,
		"fanout_hedges_total":                dto.MetricType_COUNTER,
		"fanout_replica_calls_total":         dto.MetricType_COUNTER,
		"fanout_replica_up":                  dto.MetricType_GAUGE,
		"fanout_route_call_duration_seconds": dto.MetricType_HISTOGRAM,
		"fanout_route_calls_total":           dto.MetricType_COUNTER,
		"fanout_route_items_total":           dto.MetricType_COUNTER,
		"fanout_server_calls_total":          dto.MetricType_COUNTER,
		"fanout_server_inflight_calls":       dto.MetricType_GAUGE,
	} {
		require.Equal(t, typ, ms[name].GetType(), name)
		require.NotEmpty(t, ms[name].GetHelp(), name)
	}

	// Routes: every outcome from 0.
	require.Equal(t, 2.0, ms.value(t, "fanout_route_calls_total", "route", "x", "outcome", "ok"))
	require.Equal(t, 1.0, ms.value(t, "fanout_route_calls_total", "route", "x", "outcome", "unavailable"))
	require.Equal(t, 0.0, ms.value(t, "fanout_route_calls_total", "route", "x", "outcome", "error"))
	require.Equal(t, 1.0, ms.value(t, "fanout_route_calls_total", "route", "y", "outcome", "partial"))
	require.Len(t, ms["fanout_route_calls_total"].GetMetric(), 2*len(outcomes))
	require.Equal(t, 10.0, ms.value(t, "fanout_route_items_total", "route", "x"))
	require.Equal(t, 4.0, ms.value(t, "fanout_route_items_total", "route", "y"))
	h := ms.find("fanout_route_call_duration_seconds", "route", "x").GetHistogram()
	require.Equal(t, uint64(3), h.GetSampleCount())
	require.InDelta(t, 0.007, h.GetSampleSum(), 1e-9)
	require.Len(t, h.GetBucket(), len(durationBuckets)+1) // and +Inf

	// Replicas.
	require.Equal(t, 1.0, ms.value(t, "fanout_replica_up", "route", "x", "replica", "127.0.0.1:7001"))
	require.Equal(t, 0.0, ms.value(t, "fanout_replica_up", "route", "x", "replica", "127.0.0.1:7011"))
	require.Equal(t, 2.0, ms.value(t, "fanout_replica_calls_total", "route", "x", "replica", "127.0.0.1:7001", "outcome", "ok"))
	require.Equal(t, 1.0, ms.value(t, "fanout_replica_calls_total", "route", "x", "replica", "127.0.0.1:7011", "outcome", "unavailable"))
	require.Equal(t, 0.0, ms.value(t, "fanout_replica_calls_total", "route", "x", "replica", "127.0.0.1:7011", "outcome", "ok"))
	require.Equal(t, 1.0, ms.value(t, "fanout_hedges_total", "route", "x"))

	// The server.
	require.Equal(t, 1.0, ms.value(t, "fanout_server_calls_total", "outcome", "ok"))
	require.Equal(t, 1.0, ms.value(t, "fanout_server_calls_total", "outcome", "overloaded"))
	require.Equal(t, 0.0, ms.value(t, "fanout_server_calls_total", "outcome", "error"))
	require.Equal(t, 1.0, ms.value(t, "fanout_server_inflight_calls"))
	merged := ms.find("fanout_batcher_merged_calls").GetHistogram()
	require.Equal(t, uint64(1), merged.GetSampleCount())
	require.Equal(t, 3.0, merged.GetSampleSum())

	// The registry's own, not the global one: the Go and process collectors.
	require.Contains(t, ms, "go_goroutines")
	if runtime.GOOS == "linux" {
		require.Contains(t, ms, "process_start_time_seconds")
	}

	serving.Duration = time.Millisecond
	m.End(ctx, &serving)
	ms = scrape(t, base)
	require.Equal(t, 0.0, ms.value(t, "fanout_server_inflight_calls"))
	require.Equal(t, 2.0, ms.value(t, "fanout_server_calls_total", "outcome", "ok"))
}

func TestOutcomeLabelsAreFanouts(t *testing.T) {
	for _, err := range []error{nil, &fanout.PartialError{}, context.Canceled, context.DeadlineExceeded,
		fanout.ErrUnavailable, fanout.ErrInterrupted, fanout.ErrOverloaded, errors.New("boom")} {
		require.Equal(t, fanout.Outcome(err), outcomes[outcomeIndex(err)], "%v", err)
	}
}

// A real balancer whose replica refuses connections until it is ejected,
// then comes back: fanout_replica_up goes 1, 0, 1, and the status and its
// log of changes say so.
func TestReplicaUpFollowsBalancer(t *testing.T) {
	m := NewMetrics()
	var refusing atomic.Bool
	refusing.Store(true)
	good := fanout.BackendFunc[int, int](func(_ context.Context, items []int) ([]int, error) { return items, nil })
	flaky := fanout.BackendFunc[int, int](func(_ context.Context, items []int) ([]int, error) {
		if refusing.Load() {
			return nil, errRefused
		}
		return items, nil
	})
	b, err := fanout.NewBalancer([]fanout.Backend[int, int]{good, flaky},
		fanout.WithBalancerName("x"), fanout.WithReplicaNames("good", "flaky"), fanout.WithBalancerObserver(m),
		fanout.WithEjection(1, 20*time.Millisecond, 40*time.Millisecond))
	require.NoError(t, err)
	defer b.Close()
	m.AddRoute("x", b.Replicas)
	base := serve(t, Handler(Options{Program: "middle", Metrics: m}))

	up := func() float64 { return scrape(t, base).value(t, "fanout_replica_up", "route", "x", "replica", "flaky") }
	require.Equal(t, 1.0, up())
	require.Equal(t, 1.0, scrape(t, base).value(t, "fanout_replica_up", "route", "x", "replica", "good"))

	call := func() {
		_, err := b.Process(context.Background(), []int{1})
		require.NoError(t, err) // a refused call is retried on the good replica
	}
	waitFor(t, "the refusing replica to be ejected", func() bool { call(); return up() == 0 })
	st := status(t, base)
	require.Len(t, st.Routes, 1)
	flakyRow := st.Routes[0].Replicas[1]
	require.Equal(t, "flaky", flakyRow.Replica)
	require.Equal(t, StateDown, flakyRow.State)
	require.Contains(t, flakyRow.Error, "connection refused")
	require.False(t, flakyRow.Since.IsZero())
	require.Equal(t, StateHealthy, st.Routes[0].Replicas[0].State)

	refusing.Store(false)
	waitFor(t, "the replica to be readmitted", func() bool { call(); return up() == 1 })

	ms := scrape(t, base)
	require.GreaterOrEqual(t, ms.value(t, "fanout_replica_calls_total", "route", "x", "replica", "flaky", "outcome", "unavailable"), 1.0)
	require.GreaterOrEqual(t, ms.value(t, "fanout_replica_calls_total", "route", "x", "replica", "good", "outcome", "ok"), 1.0)

	st = status(t, base)
	var seen []string
	for _, c := range slices.Backward(st.Changes) {
		require.Equal(t, "x", c.Route)
		require.Equal(t, "flaky", c.Replica)
		seen = append(seen, c.From+" -> "+c.To)
	}
	require.NotEmpty(t, seen)
	require.Equal(t, "healthy -> down", seen[0])
	require.Equal(t, "healthy", st.Changes[0].To, "the newest change comes first")
}

func TestReplicaState(t *testing.T) {
	interrupted := fmt.Errorf("connection reset: %w", fanout.ErrInterrupted)
	for _, tc := range []struct {
		status fanout.ReplicaStatus
		want   string
	}{
		{fanout.ReplicaStatus{State: fanout.ReplicaHealthy}, StateHealthy},
		{fanout.ReplicaStatus{State: fanout.ReplicaEjected, Err: errRefused}, StateDown},
		{fanout.ReplicaStatus{State: fanout.ReplicaProbing, Err: errRefused}, StateDown},
		{fanout.ReplicaStatus{State: fanout.ReplicaEjected, Err: interrupted}, StateEjected},
		{fanout.ReplicaStatus{State: fanout.ReplicaProbing, Err: interrupted}, StateProbing},
		{fanout.ReplicaStatus{State: fanout.ReplicaEjected, Err: context.DeadlineExceeded}, StateEjected},
		{fanout.ReplicaStatus{State: fanout.ReplicaEjected}, StateEjected},
	} {
		require.Equal(t, tc.want, ReplicaState(tc.status), "%v %v", tc.status.State, tc.status.Err)
	}
}

func TestStatusCountsAndWindow(t *testing.T) {
	m := NewMetrics()
	now := time.Now()
	// 100 answered calls of 1ms..100ms, in a shuffled order.
	for i := range 100 {
		d := time.Duration((i*37)%100+1) * time.Millisecond
		observe(m, route("x", 1), now.Add(-d), d, nil)
	}
	// Failures count as calls and errors, not in the latencies; a
	// cancelled call is no error; a partial one is, and answered.
	observe(m, route("x", 1), now, time.Hour, errRefused)
	observe(m, route("x", 1), now, time.Hour, context.Canceled)
	observe(m, route("x", 1), now.Add(-time.Millisecond), 50*time.Millisecond, &fanout.PartialError{})
	// A call that ended more than RecentAge ago counts, but not in the
	// window.
	observe(m, route("x", 1), now.Add(-2*RecentAge), time.Millisecond, nil)
	w := route("x", 1)
	w.Start = now
	m.Start(context.Background(), &w) // in flight

	st := m.Status()
	require.Len(t, st.Routes, 1)
	x := st.Routes[0]
	require.Equal(t, "x", x.Route)
	require.Equal(t, CallStats{Calls: 104, Errors: 2, InFlight: 1, Recent: 101, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond}, x.CallStats)
	require.Empty(t, x.Replicas)

	// Only the last RecentCalls answered calls are kept.
	m = NewMetrics()
	for i := range RecentCalls + 500 {
		d := time.Second
		if i >= 500 {
			d = time.Millisecond
		}
		observe(m, fanout.Work{Kind: fanout.WorkServe}, now, d, nil)
	}
	st = m.Status()
	require.Equal(t, CallStats{Calls: RecentCalls + 500, Recent: RecentCalls, P50: time.Millisecond, P99: time.Millisecond}, st.Server)
	require.Equal(t, []RouteStatus{}, st.Routes)
}

func TestNearestRank(t *testing.T) {
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, time.Duration(5), nearestRank(ds, 500))
	require.Equal(t, time.Duration(10), nearestRank(ds, 990))
	require.Equal(t, time.Duration(1), nearestRank(ds[:1], 990))
	require.Equal(t, time.Duration(1), nearestRank(ds[:2], 500))
}

func TestStatusRoutesAndReplicas(t *testing.T) {
	m := NewMetrics()
	z, x := newReplicas("z1", "z2"), newReplicas("", "")
	m.AddRoute("z", z.read)
	m.AddRoute("x", x.read)
	now := time.Now()
	observe(m, route("a-router-only-route", 1), now, time.Millisecond, nil)
	observe(m, attempt("x", "#1", false), now, time.Millisecond, nil)
	observe(m, attempt("z", "z3", false), now, time.Millisecond, errRefused) // no source lists it
	observe(m, attempt("shadow", "s1", false), now, time.Millisecond, nil)   // a balancer with no source

	st := m.Status()
	var routes []string
	for _, r := range st.Routes {
		routes = append(routes, r.Route)
	}
	require.Equal(t, []string{"z", "x", "a-router-only-route", "shadow"}, routes, "AddRoute's order, then by name")

	zs := st.Routes[0].Replicas
	require.Len(t, zs, 3)
	require.Equal(t, "z1", zs[0].Replica)
	require.Equal(t, StateHealthy, zs[0].State)
	require.Equal(t, ReplicaStatus{Replica: "z3", State: StateUnknown, CallStats: CallStats{Calls: 1, Errors: 1}}, zs[2])

	xs := st.Routes[1].Replicas
	require.Equal(t, "#0", xs[0].Replica, "a replica without a name is named by its index, as in a Work")
	require.Equal(t, "#1", xs[1].Replica)
	require.Equal(t, int64(1), xs[1].Calls)

	require.Equal(t, StateUnknown, st.Routes[3].Replicas[0].State)
}

func TestStateChangesLogged(t *testing.T) {
	m := NewMetrics()
	x := newReplicas("x1", "x2")
	m.AddRoute("x", x.read)
	require.Empty(t, m.Status().Changes, "the first read sees states, not changes")

	x.set(1, fanout.ReplicaEjected, time.Now(), errRefused)
	m.Status()
	x.set(1, fanout.ReplicaProbing, time.Now(), errors.New("probe: deadline exceeded"))
	m.Status()
	x.set(1, fanout.ReplicaHealthy, time.Time{}, nil)
	st := m.Status()
	require.Len(t, st.Changes, 3)
	var seen []string
	for _, c := range st.Changes {
		require.Equal(t, "x", c.Route)
		require.Equal(t, "x2", c.Replica)
		require.False(t, c.Time.IsZero())
		seen = append(seen, c.From+" -> "+c.To)
	}
	require.Equal(t, []string{"probing -> healthy", "down -> probing", "healthy -> down"}, seen, "the newest first")

	// A scrape reads the states too; only the last maxChanges are kept.
	for i := range maxChanges {
		state := fanout.ReplicaEjected
		if i%2 == 1 {
			state = fanout.ReplicaHealthy
		}
		x.set(0, state, time.Now(), errRefused)
		_, err := m.Registry().Gather()
		require.NoError(t, err)
	}
	st = m.Status()
	require.Len(t, st.Changes, maxChanges)
	require.Equal(t, "x1", st.Changes[0].Replica)
	require.Equal(t, StateHealthy, st.Changes[0].To)
}

// Replicas given twice under one name still scrape: the second is told
// apart by its index.
func TestReplicaNamedTwice(t *testing.T) {
	m := NewMetrics()
	m.AddRoute("x", newReplicas("127.0.0.1:7001", "127.0.0.1:7001").read)
	fams, err := m.Registry().Gather()
	require.NoError(t, err)
	var labels []string
	for _, f := range fams {
		if f.GetName() == "fanout_replica_up" {
			for _, mt := range f.GetMetric() {
				for _, l := range mt.GetLabel() {
					if l.GetName() == "replica" {
						labels = append(labels, l.GetValue())
					}
				}
			}
		}
	}
	require.ElementsMatch(t, []string{"127.0.0.1:7001", "127.0.0.1:7001#1"}, labels)
}

// Many goroutines tell the observer of work while the metrics are scraped
// and the status read: no race, and every call counted.
func TestConcurrentUse(t *testing.T) {
	m := NewMetrics()
	m.AddRoute("x", newReplicas("x1", "x2").read)
	base := serve(t, Handler(Options{Metrics: m}))
	const workers, calls = 8, 500
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range calls {
				r := []string{"x", "y"}[i%2]
				observe(m, route(r, 2), time.Now(), time.Microsecond, nil)
				observe(m, attempt(r, fmt.Sprintf("%s%d", r, g%3), i%10 == 0), time.Now(), time.Microsecond, nil)
				observe(m, fanout.Work{Kind: fanout.WorkServe}, time.Now(), time.Microsecond, nil)
			}
		})
	}
	done := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				scrape(t, base)
				m.Status()
			}
		}
	})
	wg.Wait()
	close(done)
	readers.Wait()

	ms := scrape(t, base)
	require.Equal(t, float64(workers*calls/2), ms.value(t, "fanout_route_calls_total", "route", "x", "outcome", "ok"))
	require.Equal(t, float64(workers*calls), ms.value(t, "fanout_route_items_total", "route", "y"))
	require.Equal(t, float64(workers*calls), ms.value(t, "fanout_server_calls_total", "outcome", "ok"))
	require.Equal(t, float64(workers*calls/10), ms.value(t, "fanout_hedges_total", "route", "x"))
	st := m.Status()
	require.Equal(t, int64(workers*calls), st.Server.Calls)
	var replicaCalls int64
	for _, r := range st.Routes {
		require.Zero(t, r.InFlight)
		for _, p := range r.Replicas {
			replicaCalls += p.Calls
		}
	}
	require.Equal(t, int64(workers*calls), replicaCalls)
}
