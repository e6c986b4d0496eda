package fanout_test

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
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
)

func newBatcher(t *testing.T, b fanout.Backend[int64, int64], opts ...fanout.BatcherOption) *fanout.Batcher[int64, int64] {
	t.Helper()
	bt, err := fanout.NewBatcher(b, opts...)
	require.NoError(t, err)
	return bt
}

// gate is a backend that hands every call to the test, which answers it, so
// a test decides when each dispatch returns. A call also returns when its
// context is done, or at the end of the test.
type gate struct {
	calls chan *gateCall
	stop  chan struct{}
}

type gateCall struct {
	ctx   context.Context
	items []int64 // a copy of what the backend was given
	reply chan gateReply
}

type gateReply struct {
	out []int64
	err error
}

func newGate(t *testing.T) *gate {
	g := &gate{calls: make(chan *gateCall, 64), stop: make(chan struct{})}
	t.Cleanup(func() { close(g.stop) })
	return g
}

func (g *gate) Process(ctx context.Context, items []int64) ([]int64, error) {
	c := &gateCall{ctx: ctx, items: slices.Clone(items), reply: make(chan gateReply, 1)}
	g.calls <- c // buffered beyond what any test sends
	select {
	case r := <-c.reply:
		return r.out, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-g.stop:
		return nil, errors.New("gate: closed at the end of the test")
	}
}

// next returns the next call the backend received.
func (g *gate) next(t *testing.T) *gateCall {
	t.Helper()
	select {
	case c := <-g.calls:
		return c
	case <-time.After(hangGuard):
		require.FailNow(t, "the backend was not called", "waited %v", hangGuard)
		return nil
	}
}

// noMore fails t if the backend received a call the test has not taken.
func (g *gate) noMore(t *testing.T) {
	t.Helper()
	select {
	case c := <-g.calls:
		require.FailNow(t, "unexpected backend call", "items %v", c.items)
	default:
	}
}

// answer answers c correctly: backendtest.Leaf of every item.
func (c *gateCall) answer() { c.reply <- gateReply{out: leafOf(c.items)} }

func (c *gateCall) fail(err error) { c.reply <- gateReply{err: err} }

func leafOf(items []int64) []int64 {
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = backendtest.Leaf(n)
	}
	return out
}

// pendingCall is a Process call running on its own goroutine.
type pendingCall struct {
	items []int64
	done  chan struct{}
	out   []int64
	err   error
}

func startProcess(ctx context.Context, b fanout.Backend[int64, int64], items []int64) *pendingCall {
	p := &pendingCall{items: items, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.out, p.err = b.Process(ctx, items)
	}()
	return p
}

// wait returns the call's results once it has returned.
func (p *pendingCall) wait(t *testing.T) ([]int64, error) {
	t.Helper()
	waitFor(t, p.done, "Process to return")
	return p.out, p.err
}

// requireAnswered checks that p returned the leaf's answers to its items.
func (p *pendingCall) requireAnswered(t *testing.T) {
	t.Helper()
	out, err := p.wait(t)
	require.NoError(t, err)
	require.Equal(t, leafOf(p.items), out)
}

// queue starts a call and waits until its items are queued, so that calls
// queued one after the other are queued in that order.
func queue(t *testing.T, ctx context.Context, b *fanout.Batcher[int64, int64], items []int64) *pendingCall {
	t.Helper()
	before := b.Queued()
	p := startProcess(ctx, b, items)
	eventually(t, func() bool { return b.Queued() == before+len(items) }, "items to be queued")
	return p
}

// eventually waits for cond, polling; the wait never decides an outcome, it
// only turns a hang into a failure.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNow(t, "timed out waiting", "%s", what)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// idle waits until the batcher has no dispatch in flight, so that goleak
// sees every goroutine gone.
func idle(t *testing.T, b *fanout.Batcher[int64, int64]) {
	t.Helper()
	eventually(t, func() bool { return b.InFlight() == 0 }, "dispatches to end")
	require.Zero(t, b.Queued())
}

// seq returns n consecutive values from start.
func seq(start, n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = int64(start + i)
	}
	return s
}

func TestBatcherConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []fanout.BatcherOption
	}{
		{"default", nil},
		{"split", []fanout.BatcherOption{fanout.WithMaxBatch(3), fanout.WithConcurrency(2)}},
		{"serial", []fanout.BatcherOption{fanout.WithMaxBatch(64), fanout.WithConcurrency(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
				return newBatcher(t, leaf, tc.opts...)
			})
		})
	}
}

func TestNewBatcherRejectsBadArguments(t *testing.T) {
	_, err := fanout.NewBatcher[int64, int64](nil)
	require.ErrorContains(t, err, "fanout: NewBatcher: nil backend")
	var nilFunc fanout.BackendFunc[int64, int64]
	_, err = fanout.NewBatcher(nilFunc)
	require.ErrorContains(t, err, "nil backend")

	for _, n := range []int{0, -3} {
		_, err = fanout.NewBatcher(echo(), fanout.WithMaxBatch(n))
		require.ErrorContains(t, err, fmt.Sprintf("WithMaxBatch(%d): want at least 1", n))
		_, err = fanout.NewBatcher(echo(), fanout.WithConcurrency(n))
		require.ErrorContains(t, err, fmt.Sprintf("WithConcurrency(%d): want at least 1", n))
	}
	b, err := fanout.NewBatcher(echo(), fanout.WithMaxBatch(1), fanout.WithConcurrency(1))
	require.NoError(t, err)
	out, err := backendtest.Process(t, t.Context(), b, []int64{4, 5})
	require.NoError(t, err)
	require.Equal(t, []int64{4, 5}, out)
}

// TestBatcherConcurrentCallersGetTheirOwnAnswers checks every answer of many
// concurrent callers, some larger than a batch, against the reference, and
// that the backend never gets more than a batch or more calls at once than
// allowed.
func TestBatcherConcurrentCallersGetTheirOwnAnswers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		maxBatch    = 16
		concurrency = 3
		goroutines  = 48
		calls       = 40
	)
	var inFlight, peak, dispatches, full atomic.Int64
	var tooBig, answered atomic.Int64
	leaf := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		dispatches.Add(1)
		if len(items) > maxBatch {
			tooBig.Add(1)
		}
		if len(items) == maxBatch {
			full.Add(1)
		}
		out := leafOf(items)
		time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond) // let calls pile up
		return out, nil
	})
	b := newBatcher(t, leaf, fanout.WithMaxBatch(maxBatch), fanout.WithConcurrency(concurrency))

	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls)
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for c := range calls {
				items := make([]int64, 1+rng.IntN(3*maxBatch))
				for i := range items {
					items[i] = rng.Int64N(1<<40) - 1<<39
				}
				kept := slices.Clone(items)
				out, err := b.Process(t.Context(), items)
				answered.Add(1)
				switch {
				case err != nil:
					errs <- fmt.Errorf("goroutine %d call %d: %w", g, c, err)
				case !slices.Equal(out, leafOf(kept)):
					errs <- fmt.Errorf("goroutine %d call %d of %d items: wrong answers", g, c, len(items))
				case !slices.Equal(items, kept):
					errs <- fmt.Errorf("goroutine %d call %d: items modified", g, c)
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	// Fail only when no call returns for a whole hangGuard: slow progress
	// is fine, no progress is a hang.
	for last := int64(-1); ; {
		select {
		case <-time.After(hangGuard):
			n := answered.Load()
			require.NotEqual(t, last, n, "calls stopped returning: %d of %d returned", n, goroutines*calls)
			last = n
			continue
		case <-finished:
		}
		break
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Zero(t, tooBig.Load(), "batches larger than the maximum")
	require.LessOrEqual(t, peak.Load(), int64(concurrency), "calls in flight at once")
	require.Positive(t, full.Load(), "no full batch: nothing was merged or split")
	t.Logf("%d calls, %d dispatches, %d full", goroutines*calls, dispatches.Load(), full.Load())
	idle(t, b)
}

func TestBatcherMergesCallsThatArriveWhileBusy(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))

	first := startProcess(t.Context(), b, []int64{-1, -2})
	held := g.next(t)
	require.Equal(t, []int64{-1, -2}, held.items)
	require.Equal(t, 1, b.InFlight())

	const n = 20
	var callers []*pendingCall
	var all []int64
	for i := range n {
		items := seq(100*i, 1+i%4)
		callers = append(callers, queue(t, t.Context(), b, items))
		all = append(all, items...)
	}
	g.noMore(t)

	held.answer()
	first.requireAnswered(t)
	merged := g.next(t)
	require.Equal(t, all, merged.items, "the second call carries every queued item, in FIFO order")
	merged.answer()
	for _, c := range callers {
		c.requireAnswered(t)
	}
	idle(t, b)
	g.noMore(t)
}

func TestBatcherSplitsLargeCalls(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithMaxBatch(10), fanout.WithConcurrency(2))

	items := seq(1, 35)
	p := startProcess(t.Context(), b, items)
	c1, c2 := g.next(t), g.next(t)
	// Dispatches are formed in order, but reach the backend in any order.
	if c1.items[0] > c2.items[0] {
		c1, c2 = c2, c1
	}
	require.Equal(t, items[0:10], c1.items)
	require.Equal(t, items[10:20], c2.items)
	eventually(t, func() bool { return b.Queued() == 15 }, "the rest to be queued")
	require.Equal(t, 2, b.InFlight())
	g.noMore(t)

	c2.answer()
	c3 := g.next(t)
	require.Equal(t, items[20:30], c3.items)
	g.noMore(t)
	c1.answer()
	c4 := g.next(t)
	require.Equal(t, items[30:35], c4.items)
	c4.answer()
	c3.answer()
	p.requireAnswered(t)
	idle(t, b)
	g.noMore(t)
}

func TestBatcherDoesNotWaitAtLowLoad(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rec := &recorder{fn: backendtest.Leaf}
	b := newBatcher(t, rec, fanout.WithMaxBatch(100), fanout.WithConcurrency(1))
	var want [][]int64
	for i, size := range []int{1, 7, 100, 3, 1, 50} {
		items := seq(1000*i, size)
		out, err := backendtest.Process(t, t.Context(), b, items)
		require.NoError(t, err)
		require.Equal(t, leafOf(items), out)
		want = append(want, items)
		require.Equal(t, want, rec.calls(), "call %d: one backend call with exactly its items", i)
	}
	idle(t, b)

	// Such a call runs on its caller's context itself: its deadline, its
	// values and its cancellation.
	type key struct{}
	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), key{}, "mine"), time.Hour)
	defer cancel()
	seen := make(chan context.Context, 1)
	spy := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		seen <- ctx
		return leafOf(items), nil
	})
	_, err := newBatcher(t, spy).Process(ctx, []int64{1})
	require.NoError(t, err)
	got := <-seen
	require.Equal(t, "mine", got.Value(key{}))
	wantDeadline, _ := ctx.Deadline()
	gotDeadline, ok := got.Deadline()
	require.True(t, ok)
	require.Equal(t, wantDeadline, gotDeadline)
	cancel()
	require.ErrorIs(t, got.Err(), context.Canceled)
}

func TestBatcherDispatchErrorReachesEveryCallerInIt(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithMaxBatch(4), fanout.WithConcurrency(2))

	a1 := startProcess(t.Context(), b, []int64{-1})
	a2 := startProcess(t.Context(), b, []int64{-2})
	h1, h2 := g.next(t), g.next(t)
	if h1.items[0] != -1 {
		h1, h2 = h2, h1
	}
	pb := queue(t, t.Context(), b, []int64{10, 11, 12})
	pc := queue(t, t.Context(), b, []int64{20, 21, 22})
	pd := queue(t, t.Context(), b, []int64{30, 31})

	h1.answer()
	a1.requireAnswered(t)
	bc := g.next(t)
	require.Equal(t, []int64{10, 11, 12, 20}, bc.items)
	h2.answer()
	a2.requireAnswered(t)
	cd := g.next(t)
	require.Equal(t, []int64{21, 22, 30, 31}, cd.items)

	down := fmt.Errorf("dial 10.0.0.7:7001: %w", fanout.ErrUnavailable)
	bc.fail(down)
	_, err := pb.wait(t)
	require.ErrorIs(t, err, fanout.ErrUnavailable, "none of B's items was sent: safe to send again")
	require.ErrorContains(t, err, "dial 10.0.0.7:7001")
	// C's other items are in the other dispatch, perhaps processed already:
	// sending C's call again is not safe.
	_, err = pc.wait(t)
	require.ErrorIs(t, err, fanout.ErrInterrupted)
	require.NotErrorIs(t, err, fanout.ErrUnavailable)
	require.ErrorContains(t, err, "dial 10.0.0.7:7001")
	require.NoError(t, cd.ctx.Err(), "the other dispatch still has a caller waiting for it")
	cd.answer() // C's part of it is discarded
	pd.requireAnswered(t)
	idle(t, b)
	g.noMore(t)
}

// TestBatcherSplitCallFailureKeepsOthersRetrySafe fails a dispatch that
// carries the second part of a split call, then a whole call: the split
// call fails as interrupted, and the whole call, none of whose items was
// sent, still as unavailable.
func TestBatcherSplitCallFailureKeepsOthersRetrySafe(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithMaxBatch(4), fanout.WithConcurrency(2))

	a1 := startProcess(t.Context(), b, []int64{-1})
	a2 := startProcess(t.Context(), b, []int64{-2})
	h1, h2 := g.next(t), g.next(t)
	pc := queue(t, t.Context(), b, []int64{10, 11, 12, 20, 21, 22})
	pd := queue(t, t.Context(), b, []int64{30, 31})

	h1.answer()
	h2.answer()
	a1.requireAnswered(t)
	a2.requireAnswered(t)
	first, second := g.next(t), g.next(t)
	if first.items[0] != 10 {
		first, second = second, first
	}
	require.Equal(t, []int64{10, 11, 12, 20}, first.items)
	require.Equal(t, []int64{21, 22, 30, 31}, second.items)

	first.answer()
	down := fmt.Errorf("dial 10.0.0.7:7001: %w", fanout.ErrUnavailable)
	second.fail(down)
	_, err := pc.wait(t)
	require.ErrorIs(t, err, fanout.ErrInterrupted, "part of C's call was processed")
	_, err = pd.wait(t)
	require.ErrorIs(t, err, fanout.ErrUnavailable, "none of D's items was sent: safe to send again")
	require.NotErrorIs(t, err, fanout.ErrInterrupted)
	idle(t, b)
	g.noMore(t)
}

// TestBatcherIsolatesCallersWhenAMergedCallFails checks that a merged call
// that fails with the backend's own error (one caller's item overflows, say)
// is sent again caller by caller, so that the others get their answers and
// only the caller whose items fail gets the error.
func TestBatcherIsolatesCallersWhenAMergedCallFails(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))
	type caller struct{}

	first := startProcess(t.Context(), b, []int64{-1})
	held := g.next(t)
	ctxB := context.WithValue(t.Context(), caller{}, "B")
	ctxC := context.WithValue(t.Context(), caller{}, "C")
	ctxD, cancelD := context.WithCancel(context.WithValue(t.Context(), caller{}, "D"))
	pb := queue(t, ctxB, b, []int64{10, 11, 12})
	pc := queue(t, ctxC, b, []int64{20, 21})
	pd := queue(t, ctxD, b, []int64{30})
	held.answer()
	first.requireAnswered(t)

	merged := g.next(t)
	require.Equal(t, []int64{10, 11, 12, 20, 21, 30}, merged.items)
	cancelD() // D gives up: its share is not sent again
	_, err := pd.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	bad := errors.New("11 overflows")
	merged.fail(bad)

	aloneB := g.next(t)
	require.Equal(t, []int64{10, 11, 12}, aloneB.items)
	require.Equal(t, "B", aloneB.ctx.Value(caller{}), "a share goes again on its caller's context")
	aloneB.fail(bad)
	_, err = pb.wait(t)
	require.ErrorIs(t, err, bad)

	aloneC := g.next(t)
	require.Equal(t, []int64{20, 21}, aloneC.items)
	require.Equal(t, "C", aloneC.ctx.Value(caller{}))
	aloneC.answer()
	pc.requireAnswered(t)
	idle(t, b)
	g.noMore(t)
}

func TestBatcherPassesSentinelsOn(t *testing.T) {
	for _, sentinel := range []error{fanout.ErrUnavailable, fanout.ErrOverloaded, fanout.ErrInterrupted, context.DeadlineExceeded} {
		fail := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
			return nil, fmt.Errorf("replica 2: %w", sentinel)
		})
		b := newBatcher(t, fail)
		_, err := backendtest.Process(t, t.Context(), b, []int64{1, 2})
		require.ErrorIs(t, err, sentinel)
	}
}

func TestBatcherFailedCallCancelsItsOtherChunks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithMaxBatch(10), fanout.WithConcurrency(2))

	p := startProcess(t.Context(), b, seq(0, 35))
	c1, c2 := g.next(t), g.next(t)
	if c1.items[0] != 0 {
		c1, c2 = c2, c1
	}
	eventually(t, func() bool { return b.Queued() == 15 }, "the rest to be queued")
	c1.fail(fanout.ErrInterrupted)
	_, err := p.wait(t)
	require.ErrorIs(t, err, fanout.ErrInterrupted)
	waitFor(t, c2.ctx.Done(), "the other chunk's context to be cancelled")
	idle(t, b)
	g.noMore(t) // the chunks still queued were never sent
}

// TestBatcherSplitCallIsNotRetrySafeOnceAPartWasSent checks that a split
// call whose part is refused (ErrUnavailable) after another part was
// answered fails with ErrInterrupted, so that no layer above sends it again.
func TestBatcherSplitCallIsNotRetrySafeOnceAPartWasSent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithMaxBatch(10), fanout.WithConcurrency(1))

	p := startProcess(t.Context(), b, seq(0, 25))
	g.next(t).answer()
	second := g.next(t)
	require.Equal(t, seq(10, 10), second.items)
	second.fail(fmt.Errorf("replica 2: %w", fanout.ErrUnavailable))
	_, err := p.wait(t)
	require.ErrorIs(t, err, fanout.ErrInterrupted)
	require.NotErrorIs(t, err, fanout.ErrUnavailable)
	idle(t, b)
	g.noMore(t) // the last part was never sent
}

func TestBatcherRejectsWrongResultCount(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))

	for _, delta := range []int{-1, +1} {
		a := startProcess(t.Context(), b, []int64{1, 2, 3})
		held := g.next(t)
		pb := queue(t, t.Context(), b, []int64{4, 5})
		pc := queue(t, t.Context(), b, []int64{6, 7, 8})
		held.answer()
		a.requireAnswered(t)

		bad := g.next(t)
		require.Equal(t, []int64{4, 5, 6, 7, 8}, bad.items)
		out := leafOf(bad.items)
		if delta < 0 {
			out = out[:len(out)-1]
		} else {
			out = append(out, 99)
		}
		bad.reply <- gateReply{out: out}
		for _, p := range []*pendingCall{pb, pc} {
			out, err := p.wait(t)
			require.ErrorIs(t, err, fanout.ErrResultCount)
			require.ErrorContains(t, err, fmt.Sprintf("%d for 5 items", 5+delta))
			require.Nil(t, out)
		}
		idle(t, b)
	}
	g.noMore(t)
}

func TestBatcherCallerCancelledWhileQueued(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))

	a := startProcess(t.Context(), b, []int64{1})
	held := g.next(t)
	ctx, cancel := context.WithCancel(t.Context())
	gone := []int64{-7, -8, -9}
	pb := queue(t, ctx, b, gone)
	pc := queue(t, t.Context(), b, []int64{3, 4})
	require.Equal(t, 5, b.Queued())

	cancel()
	_, err := pb.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 2, b.Queued(), "the cancelled caller's items left the queue")
	gone[0] = 1000 // the caller may reuse its slice at once

	held.answer()
	a.requireAnswered(t)
	next := g.next(t)
	require.Equal(t, []int64{3, 4}, next.items, "the cancelled caller's items are never sent")
	next.answer()
	pc.requireAnswered(t)
	idle(t, b)
	g.noMore(t)
}

func TestBatcherCallerCancelledWhileInFlight(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))

	// Alone in its dispatch: the dispatch is cancelled with the caller.
	ctxA, cancelA := context.WithCancel(t.Context())
	a := startProcess(ctxA, b, []int64{1})
	held := g.next(t)
	cancelA()
	_, err := a.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	waitFor(t, held.ctx.Done(), "the dispatch of a caller who left to be cancelled")
	idle(t, b)

	// Two callers in one dispatch: it is cancelled when both have left.
	first := startProcess(t.Context(), b, []int64{1})
	held = g.next(t)
	ctxB, cancelB := context.WithCancel(t.Context())
	ctxC, cancelC := context.WithCancel(t.Context())
	pb := queue(t, ctxB, b, []int64{2, 3})
	pc := queue(t, ctxC, b, []int64{4})
	held.answer()
	first.requireAnswered(t)
	both := g.next(t)
	require.Equal(t, []int64{2, 3, 4}, both.items)

	cancelB()
	_, err = pb.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, both.ctx.Err(), "C still waits for the dispatch")
	cancelC()
	_, err = pc.wait(t)
	require.ErrorIs(t, err, context.Canceled)
	waitFor(t, both.ctx.Done(), "the dispatch to be cancelled once every caller left")
	require.ErrorIs(t, both.ctx.Err(), context.Canceled)
	idle(t, b)
	g.noMore(t)
}

func TestBatcherDeadlineIsTheLatestOfItsCallers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))
	now := time.Now()
	withDeadline := func(d time.Duration) context.Context {
		ctx, cancel := context.WithDeadline(t.Context(), now.Add(d))
		t.Cleanup(cancel)
		return ctx
	}
	type key struct{}
	valued := context.WithValue(withDeadline(time.Hour), key{}, "first caller")

	a := startProcess(valued, b, []int64{1})
	held := g.next(t)
	dl, ok := held.ctx.Deadline()
	require.True(t, ok)
	require.Equal(t, now.Add(time.Hour), dl, "a lone caller's deadline")
	require.Equal(t, "first caller", held.ctx.Value(key{}))

	pb := queue(t, context.WithValue(withDeadline(time.Hour), key{}, "B"), b, []int64{2})
	pc := queue(t, withDeadline(3*time.Hour), b, []int64{3})
	pd := queue(t, withDeadline(2*time.Hour), b, []int64{4})
	held.answer()
	a.requireAnswered(t)
	bcd := g.next(t)
	dl, ok = bcd.ctx.Deadline()
	require.True(t, ok)
	require.Equal(t, now.Add(3*time.Hour), dl, "the latest deadline of the callers")
	require.Equal(t, "B", bcd.ctx.Value(key{}), "the first caller's values")

	pe := queue(t, withDeadline(time.Minute), b, []int64{5})
	pf := queue(t, t.Context(), b, []int64{6})
	bcd.answer()
	for _, p := range []*pendingCall{pb, pc, pd} {
		p.requireAnswered(t)
	}
	ef := g.next(t)
	require.Equal(t, []int64{5, 6}, ef.items)
	_, ok = ef.ctx.Deadline()
	require.False(t, ok, "no deadline when a caller has none")
	ef.answer()
	pe.requireAnswered(t)
	pf.requireAnswered(t)
	idle(t, b)
	g.noMore(t)
}

func TestBatcherEmptyBatchBypassesTheQueue(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))

	a := startProcess(t.Context(), b, []int64{1})
	held := g.next(t)
	pb := queue(t, t.Context(), b, []int64{2})

	type key struct{}
	ctx := context.WithValue(t.Context(), key{}, "probe")
	probe := startProcess(ctx, b, nil)
	call := g.next(t)
	require.Empty(t, call.items, "an empty batch reaches the backend while every slot is busy")
	require.Equal(t, "probe", call.ctx.Value(key{}), "on the caller's own context")
	call.reply <- gateReply{out: []int64{}}
	out, err := probe.wait(t)
	require.NoError(t, err)
	require.Empty(t, out)

	held.answer()
	a.requireAnswered(t)
	next := g.next(t)
	next.answer()
	pb.requireAnswered(t)
	idle(t, b)
	g.noMore(t)
}

// BenchmarkBatcher measures the batcher's own cost over a trivial backend:
// one caller at a time (no merging), many callers of small batches (merged),
// and one caller of a large batch (split).
func BenchmarkBatcher(b *testing.B) {
	for _, bc := range []struct {
		name    string
		callers int
		size    int
	}{
		{"callers=1/items=10", 1, 10},
		{"callers=64/items=10", 64, 10},
		{"callers=1/items=100000", 1, 100_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var dispatches atomic.Int64
			leaf := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
				dispatches.Add(1)
				return increment(ctx, items)
			})
			bt, err := fanout.NewBatcher(leaf)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(bc.size) * 8)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range bc.callers {
				wg.Go(func() {
					items := seq(0, bc.size)
					for next.Add(1) <= int64(b.N) {
						out, err := bt.Process(ctx, items)
						if err != nil || len(out) != len(items) || out[len(out)-1] != items[len(items)-1]+1 {
							b.Error("wrong answer", err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(dispatches.Load()), "calls/dispatch")
		})
	}
}
