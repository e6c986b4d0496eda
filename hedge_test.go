package fanout_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
)

// replicaGate is a replica's backend: it doubles every item, at once while open,
// and while closed it announces each call on started, then waits for
// release (and answers) or for its context to end (and says so on
// cancelled).
type replicaGate struct {
	name      string
	closed    atomic.Bool
	started   chan string
	release   chan struct{}
	cancelled chan string
	calls     atomic.Int64
}

func newReplicaGate(name string, started, cancelled chan string) *replicaGate {
	return &replicaGate{name: name, started: started, cancelled: cancelled, release: make(chan struct{}, 16)}
}

func (g *replicaGate) Process(ctx context.Context, items []int64) ([]int64, error) {
	if len(items) > 0 {
		g.calls.Add(1)
	}
	if g.closed.Load() && len(items) > 0 {
		g.started <- g.name
		select {
		case <-g.release:
		case <-ctx.Done():
			g.cancelled <- g.name
			return nil, ctx.Err()
		}
	}
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = 2 * n
	}
	return out, nil
}

// hedged is a balancer built WithHedging over two replicas, a and b,
// served over loopback TCP, whose gates report on started and cancelled.
type hedged struct {
	b                  *fanout.Balancer[int64, int64]
	gates              map[string]*replicaGate
	started, cancelled chan string
	decided            chan bool // each hedge decision (SetHedgeHook)
}

func newHedged(t *testing.T, budget float64, delay time.Duration) *hedged {
	h := &hedged{started: make(chan string, 16), cancelled: make(chan string, 16), decided: make(chan bool, 16), gates: map[string]*replicaGate{}}
	var replicas []fanout.Backend[int64, int64]
	for _, name := range []string{"a", "b"} {
		g := newReplicaGate(name, h.started, h.cancelled)
		h.gates[name] = g
		replicas = append(replicas, served(t, g))
	}
	b, err := fanout.NewBalancer(replicas, fanout.WithIdempotent(), fanout.WithHedging(fanout.DefaultHedgeQuantile, budget))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	if delay > 0 {
		fanout.SetHedgeDelay(b, delay)
	}
	h.b = b
	return h
}

// close closes both gates, and from then on reports each hedge decision on
// decided.
func (h *hedged) close() {
	fanout.SetHedgeHook(h.b, func(sent bool) { h.decided <- sent })
	for _, g := range h.gates {
		g.closed.Store(true)
	}
}

// calls returns the calls with items both replicas have had.
func (h *hedged) calls() int64 { return h.gates["a"].calls.Load() + h.gates["b"].calls.Load() }

// warm makes n calls with both gates open, which earn the budget its share
// of hedges and, without a set delay, feed the latency sketch.
func (h *hedged) warm(t *testing.T, n int) {
	for range n {
		out, err := h.b.Process(context.Background(), []int64{1, 2})
		require.NoError(t, err)
		require.Equal(t, []int64{2, 4}, out)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		require.FailNow(t, "timed out waiting", "%s", what)
		panic("unreachable")
	}
}

func other(name string) string {
	if name == "a" {
		return "b"
	}
	return "a"
}

// A hedge is won by whichever replica answers first, and the other call is
// cancelled at once, over the wire: its replica's backend sees its context
// end.
func TestHedgeWonByEitherSide(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, winner := range []string{"first", "hedge"} {
		t.Run(winner+" answers first", func(t *testing.T) {
			h := newHedged(t, 1, time.Millisecond)
			h.warm(t, 40)
			before := h.b.Hedges()
			h.close()
			type answer struct {
				out []int64
				err error
			}
			done := make(chan answer, 1)
			go func() {
				out, err := h.b.Process(context.Background(), []int64{3, 4})
				done <- answer{out, err}
			}()
			first := recv(t, h.started, "the first call")
			require.True(t, recv(t, h.decided, "the hedge decision"), "a hedge is sent")
			require.Equal(t, other(first), recv(t, h.started, "the hedge"), "the hedge goes to the other replica")
			win := first
			if winner == "hedge" {
				win = other(first)
			}
			h.gates[win].release <- struct{}{}
			got := recv(t, done, "the answer")
			require.NoError(t, got.err)
			require.Equal(t, []int64{6, 8}, got.out)
			require.Equal(t, other(win), recv(t, h.cancelled, "the loser's cancellation"), "the loser is cancelled on the wire")
			stats := h.b.Hedges()
			require.Equal(t, int64(1), stats.Sent-before.Sent)
			if winner == "hedge" {
				require.Equal(t, int64(1), stats.Won-before.Won)
			} else {
				require.Equal(t, before.Won, stats.Won)
			}
		})
	}
}

// A replica that fails while its hedge is in flight leaves the call to the
// hedge.
func TestHedgeOutlivesAFailure(t *testing.T) {
	h := newHedged(t, 1, time.Millisecond)
	h.warm(t, 40)
	h.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		out, err := h.b.Process(ctx, []int64{5})
		if err == nil && out[0] != 10 {
			err = context.Canceled // never the answer: fails below
		}
		done <- err
	}()
	first := recv(t, h.started, "the first call")
	require.True(t, recv(t, h.decided, "the hedge decision"))
	hedge := recv(t, h.started, "the hedge")
	require.Equal(t, other(first), hedge)
	h.gates[hedge].release <- struct{}{}
	require.NoError(t, recv(t, done, "the answer"))
	require.Equal(t, first, recv(t, h.cancelled, "the first call's cancellation"))
}

// The budget bounds hedges: a call due for one when the budget is spent
// waits for its replica alone.
func TestHedgeBudgetExhausted(t *testing.T) {
	h := newHedged(t, 0.01, time.Millisecond)
	h.warm(t, 20) // a fifth of a hedge earned
	before, calls := h.b.Hedges(), h.calls()
	h.close()
	done := make(chan error, 1)
	go func() {
		_, err := h.b.Process(context.Background(), []int64{5})
		done <- err
	}()
	first := recv(t, h.started, "the first call")
	require.False(t, recv(t, h.decided, "the hedge decision"), "no hedge: the budget is spent")
	h.gates[first].release <- struct{}{}
	require.NoError(t, recv(t, done, "the answer"))
	stats := h.b.Hedges()
	require.Equal(t, before.OverBudget+1, stats.OverBudget)
	require.Equal(t, before.Calls+1, stats.Calls)
	require.Equal(t, before.Sent, stats.Sent)
	require.Equal(t, calls+1, h.calls(), "one call, no hedge")
}

// A call whose context ends first sends no hedge, and a balancer whose
// sketch has too few answers does not hedge at all.
func TestHedgeNotSent(t *testing.T) {
	t.Run("the call ended first", func(t *testing.T) {
		h := newHedged(t, 1, time.Hour)
		h.warm(t, 40)
		h.close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := h.b.Process(ctx, []int64{5})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		recv(t, h.started, "the call")
		recv(t, h.cancelled, "the call's end")
		require.Zero(t, h.b.Hedges().Sent)
	})

	t.Run("too few answers yet", func(t *testing.T) {
		h := newHedged(t, 1, 0) // the sketch's own delay
		h.warm(t, 99)
		require.Zero(t, h.b.Hedges().Delay, "99 answers: no delay yet")
		h.warm(t, 20)
		require.NotZero(t, h.b.Hedges().Delay, "past 100 answers, a delay")
	})
}

func TestHedgingOptions(t *testing.T) {
	replicas := []fanout.Backend[int64, int64]{newReplicaGate("a", nil, nil), newReplicaGate("b", nil, nil)}
	for _, tc := range []struct {
		opts []fanout.BalancerOption
		want string
	}{
		{[]fanout.BalancerOption{fanout.WithHedging(0.95, 0.05)}, "WithHedging needs WithIdempotent: a hedged call may run on two replicas"},
		{[]fanout.BalancerOption{fanout.WithIdempotent(), fanout.WithHedging(1, 0.05)}, "WithHedging: quantile 1 is not in (0, 1)"},
		{[]fanout.BalancerOption{fanout.WithIdempotent(), fanout.WithHedging(0.95, 0)}, "WithHedging: budget 0 is not in (0, 1]"},
		{[]fanout.BalancerOption{fanout.WithIdempotent(), fanout.WithHedging(0.95, 1.5)}, "WithHedging: budget 1.5 is not in (0, 1]"},
	} {
		_, err := fanout.NewBalancer(replicas, tc.opts...)
		require.EqualError(t, err, "fanout: NewBalancer: "+tc.want)
	}
}

// The sketch's quantile errs on the slow side by at most a bucket, an
// eighth of a power of two.
func TestHedgeDelayIsTheQuantile(t *testing.T) {
	var latencies []time.Duration
	for i := range 1000 {
		d := time.Millisecond
		if i%20 == 19 {
			d = 100 * time.Millisecond // 5%
		}
		latencies = append(latencies, d)
	}
	p90 := fanout.SketchQuantile(0.9, latencies)
	require.GreaterOrEqual(t, p90, time.Millisecond)
	require.LessOrEqual(t, p90, time.Millisecond*9/8)
	p99 := fanout.SketchQuantile(0.99, latencies)
	require.GreaterOrEqual(t, p99, 100*time.Millisecond)
	require.LessOrEqual(t, p99, 100*time.Millisecond*9/8)
	require.Zero(t, fanout.SketchQuantile(0.5, latencies[:99]), "too few")
}

// BenchmarkBalancerHedging is what hedging costs: two replicas over
// loopback TCP, answering at once, without WithHedging, with it (past the
// 100 answers it waits for, so that the calls slower than the p95 are
// hedged, within the 5% budget), and with a delay no call reaches (every
// call arms and stops its hedge timer, none is hedged).
func BenchmarkBalancerHedging(b *testing.B) {
	for _, mode := range []string{"off", "on", "never due"} {
		hedging := mode != "off"
		b.Run("hedging="+mode, func(b *testing.B) {
			replicas := []fanout.Backend[int64, int64]{served(b, newReplicaGate("a", nil, nil)), served(b, newReplicaGate("b", nil, nil))}
			opts := []fanout.BalancerOption{fanout.WithIdempotent()}
			if hedging {
				opts = append(opts, fanout.WithHedging(fanout.DefaultHedgeQuantile, fanout.DefaultHedgeBudget))
			}
			bal, err := fanout.NewBalancer(replicas, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer bal.Close()
			if mode == "never due" {
				fanout.SetHedgeDelay(bal, time.Hour) // armed and stopped, never sent
			}
			items := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
			for range 200 {
				if _, err := bal.Process(context.Background(), items); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := bal.Process(context.Background(), items); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
