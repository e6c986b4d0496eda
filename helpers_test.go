package fanout_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// The routes of the example system (DESIGN.md): x gets negative numbers and
// squares them, y gets even numbers >= 0 and halves them, z gets odd positive
// numbers and computes 3n+1. Answers can be checked by hand.
var xyz = fanout.ClassifierFunc[int64](func(n int64) (string, error) {
	switch {
	case n < 0:
		return "x", nil
	case n%2 == 0:
		return "y", nil
	default:
		return "z", nil
	}
})

var xyzFuncs = map[string]func(int64) int64{
	"x": func(n int64) int64 { return n * n },
	"y": func(n int64) int64 { return n / 2 },
	"z": func(n int64) int64 { return 3*n + 1 },
}

// bySign routes n to "neg" or "nonneg".
var bySign = fanout.ClassifierFunc[int64](func(n int64) (string, error) {
	if n < 0 {
		return "neg", nil
	}
	return "nonneg", nil
})

// xyzAnswer is what a router over the xyz routes answers for n.
func xyzAnswer(n int64) int64 {
	route, _ := xyz(n)
	return xyzFuncs[route](n)
}

// recorder is a backend that records every batch it is given, then answers
// with answer (by default, by applying fn to every item).
type recorder struct {
	fn     func(int64) int64
	answer func(ctx context.Context, items []int64) ([]int64, error)

	mu      sync.Mutex
	batches [][]int64
}

func (r *recorder) Process(ctx context.Context, items []int64) ([]int64, error) {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(items))
	r.mu.Unlock()
	if r.answer != nil {
		return r.answer(ctx, items)
	}
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = r.fn(n)
	}
	return out, nil
}

func (r *recorder) calls() [][]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

// blocker is a backend that announces each call on started, then waits for
// its context to be done (recording that it saw it) or for the end of the
// test.
type blocker struct {
	started   chan struct{}
	release   chan struct{}
	mu        sync.Mutex
	cancelled int // calls that returned because their context was done
}

func newBlocker(t *testing.T) *blocker {
	b := &blocker{started: make(chan struct{}, 16), release: make(chan struct{})}
	t.Cleanup(func() { close(b.release) })
	return b
}

func (b *blocker) Process(ctx context.Context, items []int64) ([]int64, error) {
	b.started <- struct{}{}
	select {
	case <-ctx.Done():
		b.mu.Lock()
		b.cancelled++
		b.mu.Unlock()
		return nil, ctx.Err()
	case <-b.release:
		return nil, errors.New("blocker released at the end of the test")
	}
}

func (b *blocker) sawCancel() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cancelled
}

// hangGuard turns a hang into a test failure. It is never a speed limit: a
// correct router returns in microseconds.
const hangGuard = 5 * time.Second

// waitFor receives from ch, failing t if that takes longer than hangGuard.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		require.FailNow(t, "timed out waiting", "%s", what)
	}
}

func mustRouter(t *testing.T, c fanout.Classifier[int64], routes map[string]fanout.Backend[int64, int64], opts ...fanout.RouterOption) *fanout.Router[int64, int64] {
	t.Helper()
	r, err := fanout.NewRouter(c, routes, opts...)
	require.NoError(t, err)
	return r
}
