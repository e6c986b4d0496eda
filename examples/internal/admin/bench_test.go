package admin

import (
	"context"
	"testing"
	"time"

	"github.com/seed-c94cd834/fanout"
)

// The cost of telling Metrics of a balancer's attempt, Start and End, from
// every core at once: it loads the replica's series from a copy-on-write
// map and updates its curried counter and atomics.
func BenchmarkObserveAttempt(b *testing.B) {
	m := NewMetrics()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := fanout.Work{Kind: fanout.WorkAttempt, Route: "x", Replica: "127.0.0.1:7001", Items: 64, Attempt: 1}
		for pb.Next() {
			w.Start = time.Now()
			ctx := m.Start(context.Background(), &w)
			w.Duration, w.Err = time.Microsecond, nil
			m.End(ctx, &w)
		}
	})
}

// What the counter alone costs when its child is looked up by its label
// values for every event, as End would without the curried series: the
// reason they are kept (compare with BenchmarkObserveAttempt, which does
// all of an attempt's work).
func BenchmarkWithLabelValues(b *testing.B) {
	m := NewMetrics()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.replicaCalls.WithLabelValues("x", "127.0.0.1:7001", "ok").Inc()
		}
	})
}

// The cost of a read of the status with three routes of two replicas,
// each window full: what the page costs its program each refresh.
func BenchmarkStatus(b *testing.B) {
	m, _ := busyMiddle()
	b.ReportAllocs()
	for b.Loop() {
		m.Status()
	}
}
