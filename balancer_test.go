package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
)

func newBalancer(t *testing.T, replicas []fanout.Backend[int64, int64], opts ...fanout.BalancerOption) *fanout.Balancer[int64, int64] {
	t.Helper()
	b, err := fanout.NewBalancer(replicas, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func TestBalancerConformance(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", n), func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
				replicas := make([]fanout.Backend[int64, int64], n)
				for i := range replicas {
					replicas[i] = leaf
				}
				return newBalancer(t, replicas)
			})
		})
	}
}

func TestNewBalancerErrors(t *testing.T) {
	var nilFunc fanout.BackendFunc[int64, int64]
	probeStrings := func(context.Context, fanout.Backend[string, int64]) error { return nil }
	probeInts := func(context.Context, fanout.Backend[int64, int]) error { return nil }
	for _, tc := range []struct {
		name     string
		replicas []fanout.Backend[int64, int64]
		opts     []fanout.BalancerOption
		want     string
	}{
		{"nil replica", []fanout.Backend[int64, int64]{echo(), nilFunc}, nil, "fanout: NewBalancer: replica 1 is nil"},
		{
			"names of other replicas", []fanout.Backend[int64, int64]{echo(), echo()},
			[]fanout.BalancerOption{fanout.WithReplicaNames("a:1")},
			"fanout: NewBalancer: WithReplicaNames gives 1 name for 2 replicas",
		},
		{
			"probe of other items", []fanout.Backend[int64, int64]{echo()},
			[]fanout.BalancerOption{fanout.WithProbe(probeStrings, time.Second)},
			"fanout: NewBalancer: WithProbe probes Backend[string, int64], the replicas are Backend[int64, int64]",
		},
		{
			"probe of other results", []fanout.Backend[int64, int64]{echo()},
			[]fanout.BalancerOption{fanout.WithEjection(1, time.Hour, time.Hour), fanout.WithProbe(probeInts, time.Second)},
			"fanout: NewBalancer: WithProbe probes Backend[int64, int], the replicas are Backend[int64, int64]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := fanout.NewBalancer(tc.replicas, tc.opts...)
			require.EqualError(t, err, tc.want)
			require.Nil(t, b)
		})
	}
}

// TestBalancerNilProbeIsTheDefault checks that the default probe, kept by
// WithProbeTimeout, is a call with an empty batch, and that WithProbe with
// a nil probe keeps it too.
func TestBalancerNilProbeIsTheDefault(t *testing.T) {
	for name, opt := range map[string]fanout.BalancerOption{
		"WithProbeTimeout": fanout.WithProbeTimeout(time.Second),
		"WithProbe(nil)":   fanout.WithProbe[int64, int64](nil, time.Second), // nil has no type to infer from
	} {
		t.Run(name, func(t *testing.T) {
			rs, bs := stubs(1)
			b := newBalancer(t, bs, fanout.WithEjection(1, time.Millisecond, time.Millisecond), opt)
			rs[0].fail(unreachable)
			_, err := b.Process(context.Background(), []int64{1})
			require.ErrorIs(t, err, fanout.ErrUnavailable)
			rs[0].fail(nil)
			require.Eventually(t, func() bool {
				_, err := b.Process(context.Background(), []int64{1})
				return err == nil
			}, hangGuard, time.Millisecond, "the replica is probed with an empty batch and readmitted")
			require.Positive(t, rs[0].probes.Load())
		})
	}
}

// TestBalancerOptionsNeedNoTypeArguments is a compile-level check: every
// balancer option is called without type arguments, WithProbe's inferred
// from its probe.
func TestBalancerOptionsNeedNoTypeArguments(t *testing.T) {
	probeStrings := func(ctx context.Context, r fanout.Backend[string, int]) error {
		_, err := r.Process(ctx, nil)
		return err
	}
	opts := []fanout.BalancerOption{
		fanout.WithIdempotent(),
		fanout.WithMaxAttempts(2),
		fanout.WithEjection(3, time.Second, time.Minute),
		fanout.WithProbe(probeStrings, time.Second),
		fanout.WithProbe(func(context.Context, fanout.Backend[string, int]) error { return nil }, time.Second),
		fanout.WithProbeTimeout(time.Second),
		fanout.WithBalancerLogger(nil),
		fanout.WithReplicaNames("one"),
	}
	length := fanout.BackendFunc[string, int](func(_ context.Context, in []string) ([]int, error) {
		out := make([]int, len(in))
		for i, s := range in {
			out[i] = len(s)
		}
		return out, nil
	})
	b, err := fanout.NewBalancer([]fanout.Backend[string, int]{length}, opts...)
	require.NoError(t, err)
	defer b.Close()
	out, err := b.Process(context.Background(), []string{"a", "bcd"})
	require.NoError(t, err)
	require.Equal(t, []int{1, 3}, out)

	// The limiter's and batcher's options are not generic at all.
	_, err = fanout.NewLimiter(length, 1, fanout.WithLimiterLogger(nil))
	require.NoError(t, err)
	_, err = fanout.NewBatcher(length, fanout.WithMaxBatch(1), fanout.WithConcurrency(1))
	require.NoError(t, err)
}

// replicaStub is a replica whose answer the test sets, and which counts its
// calls and probes (empty batches).
type replicaStub struct {
	calls, probes atomic.Int64
	mu            sync.Mutex
	err           error // returned by calls and probes while set
	block         chan struct{}
}

func (r *replicaStub) Process(ctx context.Context, items []int64) ([]int64, error) {
	if len(items) == 0 {
		r.probes.Add(1)
	} else {
		r.calls.Add(1)
	}
	r.mu.Lock()
	err, block := r.err, r.block
	r.mu.Unlock()
	if block != nil && len(items) > 0 {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return items, nil
}

func (r *replicaStub) fail(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

func stubs(n int) ([]*replicaStub, []fanout.Backend[int64, int64]) {
	rs := make([]*replicaStub, n)
	bs := make([]fanout.Backend[int64, int64], n)
	for i := range rs {
		rs[i] = &replicaStub{}
		bs[i] = rs[i]
	}
	return rs, bs
}

var (
	unreachable = fmt.Errorf("dial 10.0.0.1:7001: %w", fanout.ErrUnavailable)
	interrupted = fmt.Errorf("connection lost: %w", fanout.ErrInterrupted)
	overloaded  = fmt.Errorf("server busy: %w", fanout.ErrOverloaded)
	backendErr  = errors.New("3n+1 overflows int64 for n=7")
)

func TestBalancerPrefersTheLessLoadedReplica(t *testing.T) {
	rs, bs := stubs(2)
	rs[0].block = make(chan struct{})
	b := newBalancer(t, bs)

	// Load replica 0 with a call that waits; with two replicas the power of
	// two choices always compares both, so every other call goes to
	// replica 1.
	var wg sync.WaitGroup
	for rs[0].calls.Load() == 0 {
		wg.Go(func() { b.Process(context.Background(), []int64{1}) })
		time.Sleep(time.Millisecond)
	}
	before := rs[0].calls.Load()
	for range 100 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}
	require.Equal(t, before, rs[0].calls.Load(), "the loaded replica got calls while the other was idle")
	close(rs[0].block)
	wg.Wait()
}

func TestBalancerSpreadsCalls(t *testing.T) {
	rs, bs := stubs(3)
	b := newBalancer(t, bs)
	for range 300 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}
	for i, r := range rs {
		require.Positive(t, r.calls.Load(), "replica %d got no call", i)
	}
}

func TestBalancerRetries(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		idempotent bool
		retried    bool
	}{
		{"unavailable", unreachable, false, true},
		{"overloaded", overloaded, false, true},
		{"interrupted", interrupted, false, false},
		{"interrupted, idempotent", interrupted, true, true},
		{"backend error", backendErr, false, false},
		{"backend error, idempotent", backendErr, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs, bs := stubs(2)
			var opts []fanout.BalancerOption
			if tc.idempotent {
				opts = append(opts, fanout.WithIdempotent())
			}
			b := newBalancer(t, bs, opts...)
			rs[0].fail(tc.err)
			rs[1].fail(tc.err)
			_, err := b.Process(context.Background(), []int64{1})
			require.ErrorIs(t, err, tc.err)
			calls := rs[0].calls.Load() + rs[1].calls.Load()
			if tc.retried {
				require.EqualValues(t, 2, calls, "a retryable failure is tried on the other replica")
				require.ErrorContains(t, err, "every replica tried")
			} else {
				require.EqualValues(t, 1, calls, "this failure must not be retried")
			}

			// With one replica healthy, a retryable failure never reaches
			// the caller.
			rs[1].fail(nil)
			for range 20 {
				out, err := b.Process(context.Background(), []int64{4})
				if tc.retried {
					require.NoError(t, err)
					require.Equal(t, []int64{4}, out)
				} else if err != nil {
					require.ErrorIs(t, err, tc.err)
				}
			}
		})
	}
}

func TestBalancerBoundsAttempts(t *testing.T) {
	rs, bs := stubs(5)
	for _, r := range rs {
		r.fail(unreachable)
	}
	b := newBalancer(t, bs, fanout.WithMaxAttempts(2))
	_, err := b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	var calls int64
	for _, r := range rs {
		calls += r.calls.Load()
	}
	require.EqualValues(t, 2, calls)
}

func TestBalancerDoesNotRetryACancelledCall(t *testing.T) {
	rs, bs := stubs(2)
	for _, r := range rs {
		r.block = make(chan struct{})
	}
	b := newBalancer(t, bs, fanout.WithEjection(1, time.Hour, time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for rs[0].calls.Load()+rs[1].calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := b.Process(ctx, []int64{1})
	require.ErrorIs(t, err, context.Canceled)
	require.EqualValues(t, 1, rs[0].calls.Load()+rs[1].calls.Load())

	// Nor does it count against the replica: a single failure would eject.
	for _, r := range rs {
		close(r.block)
	}
	for range 20 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}
	require.Positive(t, rs[0].calls.Load()-1+rs[1].calls.Load()-1)
}

func TestBalancerEjectsAFailingReplica(t *testing.T) {
	rs, bs := stubs(2)
	rs[0].fail(unreachable)
	b := newBalancer(t, bs, fanout.WithEjection(3, time.Hour, time.Hour))
	for range 50 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err, "the failing replica's calls are retried on the other")
	}
	require.EqualValues(t, 3, rs[0].calls.Load(), "ejected after 3 failures in a row, then left alone")
	require.Zero(t, rs[0].probes.Load(), "not probed before its ejection time is up")
}

func TestBalancerOverloadDoesNotEject(t *testing.T) {
	rs, bs := stubs(2)
	rs[0].fail(overloaded)
	b := newBalancer(t, bs, fanout.WithEjection(1, time.Hour, time.Hour))
	for range 50 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}
	require.Greater(t, rs[0].calls.Load(), int64(1), "an overloaded replica stays in service")
}

func TestBalancerProbesBeforeReadmitting(t *testing.T) {
	rs, bs := stubs(2)
	rs[0].fail(unreachable)
	const base = 20 * time.Millisecond
	var mu sync.Mutex
	var answered []time.Time // when replica 0 answered a call or a probe
	b := newBalancer(t, bs,
		fanout.WithEjection(1, base, time.Hour),
		fanout.WithProbe(func(ctx context.Context, r fanout.Backend[int64, int64]) error {
			_, err := r.Process(ctx, nil)
			mu.Lock()
			answered = append(answered, time.Now())
			mu.Unlock()
			return err
		}, time.Second))
	call := func() {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}

	var ejected time.Time // no later than the ejection
	for rs[0].calls.Load() == 0 {
		ejected = time.Now()
		call()
	}
	// Calls after the ejection time start a probe, which fails while the
	// replica is down: it is ejected again, for twice as long.
	require.Eventually(t, func() bool { call(); return rs[0].probes.Load() >= 2 }, 10*time.Second, time.Millisecond)
	require.EqualValues(t, 1, rs[0].calls.Load(), "no call reaches an ejected replica, only probes")
	mu.Lock()
	first, second := answered[0], answered[1]
	mu.Unlock()
	// A probe answers after it started, which is no earlier than the end of
	// the ejection; a failed probe ejects again from the moment it answered.
	require.GreaterOrEqual(t, first.Sub(ejected), base, "probed before the ejection time was up")
	require.GreaterOrEqual(t, second.Sub(first), 2*base, "the second ejection lasts twice the first")

	// Once it is back, a probe succeeds and calls reach it again.
	rs[0].fail(nil)
	require.Eventually(t, func() bool { call(); return rs[0].calls.Load() > 1 }, 10*time.Second, time.Millisecond)
}

func TestBalancerFailsFastWhenEveryReplicaIsEjected(t *testing.T) {
	rs, bs := stubs(2)
	for _, r := range rs {
		r.fail(unreachable)
	}
	b := newBalancer(t, bs, fanout.WithEjection(1, time.Hour, time.Hour))
	_, err := b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)

	_, err = b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.ErrorContains(t, err, "all 2 replicas are ejected")
	require.ErrorContains(t, err, "dial 10.0.0.1:7001", "the error says what went wrong last")
	require.EqualValues(t, 2, rs[0].calls.Load()+rs[1].calls.Load(), "no replica is called")

	// In a router, the error names the route.
	r := mustRouter(t, fanout.ClassifierFunc[int64](func(int64) (string, error) { return "x", nil }),
		map[string]fanout.Backend[int64, int64]{"x": b})
	_, err = r.Process(context.Background(), []int64{-3})
	var re *fanout.RouteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "x", re.Route)
}

func TestBalancerCloseEndsProbes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	probing := make(chan struct{})
	hang := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		if len(items) == 0 {
			close(probing)
			<-ctx.Done() // a probe that would hang until its timeout
			return nil, ctx.Err()
		}
		return nil, unreachable
	})
	b, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{hang},
		fanout.WithEjection(1, time.Millisecond, time.Millisecond),
		fanout.WithProbe(func(ctx context.Context, r fanout.Backend[int64, int64]) error {
			_, err := r.Process(ctx, nil)
			return err
		}, time.Hour))
	require.NoError(t, err)
	b.Process(context.Background(), []int64{1})
	time.Sleep(2 * time.Millisecond)
	_, err = b.Process(context.Background(), []int64{1})
	require.ErrorContains(t, err, "the only replica is ejected")
	waitFor(t, probing, "the probe")
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
}

func TestLimiter(t *testing.T) {
	_, err := fanout.NewLimiter[int64, int64](nil, 1)
	require.ErrorContains(t, err, "nil backend")
	_, err = fanout.NewLimiter(echo(), 0)
	require.ErrorContains(t, err, "want at least 1")

	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	l, err := fanout.NewLimiter(fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		<-release
		return in, nil
	}), 2)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			_, err := l.Process(context.Background(), []int64{1})
			require.NoError(t, err)
		})
		<-entered
	}
	require.Equal(t, 2, l.InFlight())
	_, err = l.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrOverloaded)
	require.ErrorContains(t, err, "2 calls already in flight")
	close(release)
	wg.Wait()
	require.Zero(t, l.InFlight())
	out, err := l.Process(context.Background(), []int64{5})
	require.NoError(t, err)
	require.Equal(t, []int64{5}, out)
}

func TestLimiterConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		l, err := fanout.NewLimiter(leaf, 64)
		require.NoError(t, err)
		return l
	})
}

func echo() fanout.Backend[int64, int64] {
	return fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) { return in, nil })
}

func TestBalancerProbesAtOnceWhenEveryReplicaIsEjected(t *testing.T) {
	rs, bs := stubs(1)
	rs[0].fail(unreachable)
	b := newBalancer(t, bs, fanout.WithEjection(1, time.Hour, time.Hour))
	_, err := b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)

	// The replica comes back long before its hour is up: the calls that
	// find no replica in service probe it, and it is readmitted.
	rs[0].fail(nil)
	require.Eventually(t, func() bool {
		_, err := b.Process(context.Background(), []int64{1})
		return err == nil
	}, 10*time.Second, time.Millisecond)
	require.Positive(t, rs[0].probes.Load())
}
