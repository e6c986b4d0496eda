package main

import (
	"sync"
	"time"
)

// A timeline keeps the latency of the calls answered in each second of a
// run, by the second in which each call ended (was answered), counted from
// the start of the run. Only the second open now is a [histogram]; each
// second before it is kept as its count, p50, p99 and max, so that a
// timeline stays small however long the run. It is safe for concurrent
// use.
type timeline struct {
	start time.Time
	clock func() time.Time // tells the second of a call that ends

	mu      sync.Mutex
	seconds []secondLatency // the seconds closed, from the start
	open    int             // the second recorded into current
	current histogram
}

// secondLatency is the latency of the calls answered in one second of a
// run; all zero if none was.
type secondLatency struct {
	answered      uint64
	p50, p99, max time.Duration
}

// newTimeline returns an empty timeline of a run that started at start,
// with clock telling the time.
func newTimeline(start time.Time, clock func() time.Time) *timeline {
	return &timeline{start: start, clock: clock}
}

// record records the latency d of a call answered now. The time is read
// under the lock, so that the seconds recorded never go back and a second
// can be closed as soon as a call ends in a later one.
func (tl *timeline) record(d time.Duration) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if s := int(tl.clock().Sub(tl.start) / time.Second); s > tl.open {
		tl.close()
		tl.open = s
	}
	tl.current.record(d)
}

// close closes the open second: it adds the seconds up to it, those
// without a call answered as zero, then the open second's latencies.
func (tl *timeline) close() {
	for len(tl.seconds) < tl.open {
		tl.seconds = append(tl.seconds, secondLatency{})
	}
	h := &tl.current
	tl.seconds = append(tl.seconds, secondLatency{answered: h.total, p50: h.quantile(0.5), p99: h.quantile(0.99), max: h.quantile(1)})
	tl.current = histogram{}
}

// finish closes the timeline of a run that took elapsed and returns its
// seconds: one for each second begun, the last one maybe partial. A
// second in which no call was answered has answered 0.
func (tl *timeline) finish(elapsed time.Duration) []secondLatency {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.current.total > 0 {
		tl.close()
		tl.open++
	}
	n := int((elapsed + time.Second - 1) / time.Second)
	for len(tl.seconds) < n {
		tl.seconds = append(tl.seconds, secondLatency{})
	}
	return tl.seconds
}
