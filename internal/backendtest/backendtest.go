package backendtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// Wrap builds the backend under test around leaf. The returned backend must
// answer exactly what leaf answers (it may route, nest or call over a network).
type Wrap func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64]

// Leaf is the reference function the suite's leaf backend applies to every item.
// The suite keeps its inputs within ±2^40, so it never overflows.
func Leaf(n int64) int64 { return 7*n - 3 }

const (
	// maxValue bounds the random inputs: |n| < maxValue.
	maxValue = 1 << 40
	// poison makes the leaf fail. It lies outside the random range, so only
	// the batches that mean to carry it do.
	poison = maxValue + 17
	// leafErrText is the leaf's error message. Errors may cross a network as
	// text, so the suite looks for this text rather than an error value.
	leafErrText = "backendtest: leaf refuses poison value"
)

// hangGuard bounds every wait on the backend under test. It only turns a hang
// into a failure; a correct backend never comes near it.
var hangGuard = 5 * time.Second

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, wrap Wrap) {
	t.Run("Order", func(t *testing.T) { testOrder(t, wrap) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, wrap) })
	t.Run("LeafError", func(t *testing.T) { testLeafError(t, wrap) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, wrap) })
	t.Run("Deadline", func(t *testing.T) { testDeadline(t, wrap) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, wrap) })
}

// leaf is the instrumented backend at the bottom of every backend under test.
type leaf struct {
	block bool // wait for ctx to be done instead of answering

	calls atomic.Int64

	startOnce sync.Once
	started   chan struct{} // closed when the first blocking call starts

	cancelOnce sync.Once
	cancelled  chan struct{} // closed when a blocking call sees its ctx done

	release chan struct{} // closed at the end of the test, so no call outlives it

	mu        sync.Mutex
	sightings []deadlineSighting
}

// deadlineSighting is what one call saw of its context's deadline.
type deadlineSighting struct {
	deadline time.Time
	ok       bool
	at       time.Time // when the leaf looked
}

// setup builds a leaf, wraps it and arranges for the leaf to be released
// before the wrap's own cleanups run (cleanups run last-in first-out), so a
// server that waits for calls in flight never waits for a blocked leaf.
func setup(t *testing.T, wrap Wrap, block bool) (*leaf, fanout.Backend[int64, int64]) {
	t.Helper()
	l := &leaf{
		block:     block,
		started:   make(chan struct{}),
		cancelled: make(chan struct{}),
		release:   make(chan struct{}),
	}
	b := wrap(t, l)
	require.NotNil(t, b, "wrap returned a nil backend")
	t.Cleanup(func() { close(l.release) })
	return l, b
}

func (l *leaf) Process(ctx context.Context, items []int64) ([]int64, error) {
	l.calls.Add(1)
	d, ok := ctx.Deadline()
	l.mu.Lock()
	l.sightings = append(l.sightings, deadlineSighting{deadline: d, ok: ok, at: time.Now()})
	l.mu.Unlock()

	if l.block {
		l.startOnce.Do(func() { close(l.started) })
		select {
		case <-ctx.Done():
			l.cancelOnce.Do(func() { close(l.cancelled) })
			return nil, ctx.Err()
		case <-l.release:
			return nil, errors.New("backendtest: leaf released at the end of the test")
		}
	}

	out := make([]int64, len(items))
	for i, n := range items {
		if n == poison {
			return nil, fmt.Errorf("%s %d", leafErrText, n)
		}
		out[i] = Leaf(n)
	}
	return out, nil
}

func (l *leaf) deadlines() []deadlineSighting {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]deadlineSighting(nil), l.sightings...)
}

// randomBatch returns n values in (-maxValue, maxValue).
func randomBatch(rng *rand.Rand, n int) []int64 {
	items := make([]int64, n)
	for i := range items {
		items[i] = rng.Int64N(2*maxValue-1) - (maxValue - 1)
	}
	return items
}

// want returns the leaf's answer to items.
func want(items []int64) []int64 {
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = Leaf(n)
	}
	return out
}

// Process calls b.Process on another goroutine and fails t if it has not
// returned within a generous bound: it turns a hang into a failure and is
// never a speed limit.
func Process(t *testing.T, ctx context.Context, b fanout.Backend[int64, int64], items []int64) ([]int64, error) {
	t.Helper()
	type result struct {
		out []int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := b.Process(ctx, items)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-time.After(hangGuard):
		require.FailNow(t, "Process did not return", "still running after %v", hangGuard)
		return nil, nil
	}
}

func testOrder(t *testing.T, wrap Wrap) {
	l, b := setup(t, wrap, false)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 2, 7, 1000, 100000} {
		items := randomBatch(rng, size)
		kept := append([]int64(nil), items...)
		out, err := Process(t, t.Context(), b, items)
		require.NoError(t, err, "batch of %d", size)
		require.Len(t, out, size)
		for i := range items {
			if out[i] != Leaf(items[i]) {
				require.Failf(t, "wrong answer", "batch of %d: out[%d] = %d, want Leaf(%d) = %d", size, i, out[i], items[i], Leaf(items[i]))
			}
		}
		require.Equal(t, kept, items, "Process modified the caller's batch of %d", size)
	}
	require.Positive(t, l.calls.Load(), "the leaf was never called: the backend answered on its own")
}

// testEmpty checks that an empty batch gets an empty answer. Whether it
// reaches the leaf is the backend's choice: a router calls no route, a
// balancer passes it on (it is how a replica is probed).
func testEmpty(t *testing.T, wrap Wrap) {
	_, b := setup(t, wrap, false)
	for _, tc := range []struct {
		name  string
		items []int64
	}{
		{"nil", nil},
		{"zero-length", []int64{}},
	} {
		out, err := Process(t, t.Context(), b, tc.items)
		require.NoError(t, err, tc.name)
		require.Empty(t, out, tc.name)
	}
}

func testLeafError(t *testing.T, wrap Wrap) {
	l, b := setup(t, wrap, false)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, at := range []int{0, 5, 9} {
		items := randomBatch(rng, 10)
		items[at] = poison
		_, err := Process(t, t.Context(), b, items)
		require.Error(t, err, "poison at index %d", at)
		require.ErrorContains(t, err, leafErrText, "poison at index %d", at)
	}
	require.Positive(t, l.calls.Load(), "the leaf was never called")
}

func testCancel(t *testing.T, wrap Wrap) {
	l, b := setup(t, wrap, true)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	type result struct {
		out []int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := b.Process(ctx, []int64{-4, -3, -2, -1, 0, 1, 2, 3, 4, 5})
		done <- result{out, err}
	}()

	select {
	case <-l.started:
	case r := <-done:
		require.FailNow(t, "Process returned before the leaf started", "err: %v", r.err)
	case <-time.After(hangGuard):
		require.FailNow(t, "the leaf never started", "waited %v", hangGuard)
	}
	cancel()

	select {
	case r := <-done:
		require.ErrorIs(t, r.err, context.Canceled)
	case <-time.After(hangGuard):
		require.FailNow(t, "Process did not return after cancel", "waited %v", hangGuard)
	}
	select {
	case <-l.cancelled:
	case <-time.After(hangGuard):
		require.FailNow(t, "the leaf never saw its context cancelled", "waited %v", hangGuard)
	}
}

func testDeadline(t *testing.T, wrap Wrap) {
	l, b := setup(t, wrap, false)
	// Slack for reading clocks: a remote peer may rebuild the deadline from
	// the time left, a little later than the caller's own reading.
	const slack = time.Second
	callerDeadline := time.Now().Add(10 * time.Second)
	ctx, cancel := context.WithDeadline(t.Context(), callerDeadline)
	defer cancel()

	items := []int64{-4, -3, -2, -1, 0, 1, 2, 3, 4, 5}
	out, err := Process(t, ctx, b, items)
	require.NoError(t, err)
	require.Equal(t, want(items), out)

	seen := l.deadlines()
	require.NotEmpty(t, seen, "the leaf was never called")
	for i, s := range seen {
		require.True(t, s.ok, "call %d: the leaf's context has no deadline", i)
		require.True(t, s.deadline.After(s.at), "call %d: deadline %v already passed when the leaf ran at %v", i, s.deadline, s.at)
		require.False(t, s.deadline.After(callerDeadline.Add(slack)), "call %d: deadline %v is later than the caller's %v", i, s.deadline, callerDeadline)
	}
}

func testConcurrent(t *testing.T, wrap Wrap) {
	const (
		goroutines = 32
		calls      = 20
	)
	_, b := setup(t, wrap, false)
	errs := make(chan error, goroutines*calls)
	var answered atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			for c := range calls {
				items := randomBatch(rng, 1+rng.IntN(64))
				items[0] = int64(g*calls + c) // no two batches are equal
				out, err := b.Process(t.Context(), items)
				answered.Add(1)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d call %d: %w", g, c, err)
					continue
				}
				if w := want(items); !slices.Equal(out, w) {
					errs <- fmt.Errorf("goroutine %d call %d: got %v, want %v", g, c, out, w)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	// Fail only when no call at all returns for a whole hangGuard: slow
	// progress is fine, no progress is a hang.
	tick := time.NewTicker(hangGuard)
	defer tick.Stop()
	for last := int64(-1); ; {
		select {
		case <-done:
			close(errs)
			var failures []string
			for err := range errs {
				failures = append(failures, err.Error())
			}
			require.Empty(t, failures)
			return
		case <-tick.C:
			n := answered.Load()
			if n == last {
				require.FailNow(t, "concurrent calls stopped returning", "%d of %d calls returned, none in the last %v", n, goroutines*calls, hangGuard)
			}
			last = n
		}
	}
}
