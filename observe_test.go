package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// workLog is an Observer that records every Work it is told of, and puts
// the work's kind and route in the context, so that the work below can
// tell whose child it is.
type workLog struct {
	mu     sync.Mutex
	events []string // "start call", "end route x ok", ...
	ended  []fanout.Work
}

type parentKey struct{}

func (o *workLog) Start(ctx context.Context, w *fanout.Work) context.Context {
	parent, _ := ctx.Value(parentKey{}).(string)
	o.mu.Lock()
	o.events = append(o.events, fmt.Sprintf("start %s under %q", describe(w), parent))
	o.mu.Unlock()
	return context.WithValue(ctx, parentKey{}, describe(w))
}

func (o *workLog) End(ctx context.Context, w *fanout.Work) {
	self, _ := ctx.Value(parentKey{}).(string)
	o.mu.Lock()
	defer o.mu.Unlock()
	if self != describe(w) {
		o.events = append(o.events, "End got another context than Start returned: "+self)
	}
	o.ended = append(o.ended, *w)
}

func (o *workLog) log() ([]string, []fanout.Work) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.events), slices.Clone(o.ended)
}

func describe(w *fanout.Work) string {
	s := w.Kind.String()
	if w.Route != "" {
		s += " " + w.Route
	}
	if w.Replica != "" {
		s += "@" + w.Replica
	}
	return s
}

// TestObserverSeesCallRoutesAndAttempts: a router of two routes, one a
// balancer of two replicas whose first fails with ErrUnavailable, tells
// its observer of the call, each route and each attempt, nested in that
// order through the contexts, with items, attempts and outcomes.
func TestObserverSeesCallRoutesAndAttempts(t *testing.T) {
	obs := new(workLog)
	down := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return nil, fmt.Errorf("connection refused: %w", fanout.ErrUnavailable)
	})
	up := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return slices.Clone(in), nil
	})
	bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{down, up},
		fanout.WithBalancerName("neg"), fanout.WithReplicaNames("a", "b"), fanout.WithBalancerObserver(obs))
	require.NoError(t, err)
	defer bal.Close()
	// The first pick is round-robin: call until replica a has been tried.
	r := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": bal, "nonneg": up}, fanout.WithObserver(obs))
	for {
		out, err := r.Process(context.Background(), []int64{-1, 2, -3})
		require.NoError(t, err)
		require.Equal(t, []int64{-1, 2, -3}, out)
		_, ended := obs.log()
		if slices.ContainsFunc(ended, func(w fanout.Work) bool { return w.Replica == "a" }) {
			break
		}
		obs = new(workLog) // forget the call that went to b first
		bal2, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{down, up},
			fanout.WithBalancerName("neg"), fanout.WithReplicaNames("a", "b"), fanout.WithBalancerObserver(obs))
		require.NoError(t, err)
		defer bal2.Close()
		r = mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": bal2, "nonneg": up}, fanout.WithObserver(obs))
	}

	events, ended := obs.log()
	assert.Contains(t, events, `start call under ""`)
	assert.Contains(t, events, `start route neg under "call"`)
	assert.Contains(t, events, `start route nonneg under "call"`)
	assert.Contains(t, events, `start attempt neg@a under "route neg"`)
	assert.Contains(t, events, `start attempt neg@b under "route neg"`)
	for _, e := range events {
		assert.NotContains(t, e, "another context")
	}
	byName := map[string]fanout.Work{}
	for _, w := range ended {
		byName[describe(&w)] = w
		assert.Positive(t, w.Duration, describe(&w))
		assert.False(t, w.Start.IsZero(), describe(&w))
	}
	require.Len(t, byName, 5, "one call, two routes, two attempts")
	assert.Equal(t, 3, byName["call"].Items)
	assert.Equal(t, 2, byName["route neg"].Items)
	assert.Equal(t, 1, byName["route nonneg"].Items)
	a, b := byName["attempt neg@a"], byName["attempt neg@b"]
	assert.Equal(t, 1, a.Attempt)
	assert.Equal(t, 2, b.Attempt)
	assert.Equal(t, "unavailable", a.Outcome())
	assert.ErrorIs(t, a.Err, fanout.ErrUnavailable)
	assert.Equal(t, "ok", b.Outcome())
	assert.Equal(t, "ok", byName["call"].Outcome())
	assert.Equal(t, 2, a.Items)
	// Ends come innermost first: an attempt ends before its route, a route
	// before the call.
	assert.Equal(t, fanout.WorkCall, ended[len(ended)-1].Kind)
}

// TestObserverSeesFailuresAndPartialAnswers: outcomes of a route that
// fails, and of a call answered in part.
func TestObserverSeesFailuresAndPartialAnswers(t *testing.T) {
	obs := new(workLog)
	fail := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return nil, errors.New("boom")
	})
	up := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return slices.Clone(in), nil
	})
	r := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": fail, "nonneg": up},
		fanout.WithObserver(obs), fanout.WithPartialResults())
	_, err := r.Process(context.Background(), []int64{-1, 2})
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	_, ended := obs.log()
	outcomes := map[string]string{}
	for _, w := range ended {
		outcomes[describe(&w)] = w.Outcome()
	}
	assert.Equal(t, map[string]string{"route neg": "error", "route nonneg": "ok", "call": "partial"}, outcomes)
}

// TestOutcomeNames: the outcome label of each kind of error.
func TestOutcomeNames(t *testing.T) {
	for err, want := range map[error]string{
		nil:                      "ok",
		&fanout.PartialError{}:   "partial",
		context.Canceled:         "canceled",
		context.DeadlineExceeded: "deadline_exceeded",
		fanout.ErrOverloaded:     "overloaded",
		fanout.ErrUnavailable:    "unavailable",
		fanout.ErrInterrupted:    "unavailable",
		fmt.Errorf("x: %w", fanout.ErrUnavailable): "unavailable",
		errors.New("boom"):                         "error",
	} {
		assert.Equal(t, want, fanout.Outcome(err), "%v", err)
	}
}

// TestBatcherObserverCountsMergedCallers: calls that wait while the
// backend is busy are merged, and the observer is told how many callers a
// merged call carried.
func TestBatcherObserverCountsMergedCallers(t *testing.T) {
	obs := new(workLog)
	entered := make(chan struct{}, 8)
	gate := make(chan struct{})
	var first sync.Once
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		wait := false
		first.Do(func() { wait = true })
		if wait {
			entered <- struct{}{}
			<-gate
		}
		return slices.Clone(in), nil
	})
	bt, err := fanout.NewBatcher[int64, int64](backend, fanout.WithConcurrency(1), fanout.WithBatcherObserver(obs))
	require.NoError(t, err)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = bt.Process(context.Background(), []int64{1}) }()
	<-entered // the first call holds the only slot
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := bt.Process(context.Background(), []int64{int64(10 + i)})
			assert.NoError(t, err)
			assert.Equal(t, []int64{int64(10 + i)}, out)
		}()
	}
	eventually(t, func() bool { return bt.Queued() == 3 }, "three calls to be queued")
	close(gate)
	wg.Wait()

	_, ended := obs.log()
	var merged []int
	for _, w := range ended {
		require.Equal(t, fanout.WorkMerge, w.Kind)
		merged = append(merged, w.Merged)
	}
	slices.Sort(merged)
	assert.Equal(t, []int{1, 3}, merged, "the first call alone, then the three that waited, merged")
}

// TestObserverSeesHedges: a hedge is an attempt of its own, marked Hedge,
// and the first attempt it beat ends cancelled.
func TestObserverSeesHedges(t *testing.T) {
	obs := new(workLog)
	slow := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		<-ctx.Done() // answers only by being cancelled
		return nil, ctx.Err()
	})
	fast := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return slices.Clone(in), nil
	})
	bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{slow, fast}, fanout.WithReplicaNames("slow", "fast"),
		fanout.WithIdempotent(), fanout.WithHedging(0.5, 1), fanout.WithBalancerObserver(obs))
	require.NoError(t, err)
	defer bal.Close()
	fanout.SetHedgeDelay(bal, time.Millisecond)
	for bal.Hedges().Sent == 0 { // until a call went to the slow replica first
		out, err := bal.Process(context.Background(), []int64{7})
		require.NoError(t, err)
		require.Equal(t, []int64{7}, out)
	}
	_, ended := obs.log()
	var hedge, beaten *fanout.Work
	for i := range ended {
		switch w := &ended[i]; {
		case w.Hedge:
			hedge = w
		case w.Replica == "slow":
			beaten = w
		}
	}
	require.NotNil(t, hedge)
	require.NotNil(t, beaten)
	assert.Equal(t, "fast", hedge.Replica)
	assert.Equal(t, "ok", hedge.Outcome())
	assert.Equal(t, "canceled", beaten.Outcome())
	assert.False(t, beaten.Hedge)
}

type nopObserver struct{}

func (nopObserver) Start(ctx context.Context, _ *fanout.Work) context.Context { return ctx }
func (nopObserver) End(context.Context, *fanout.Work)                         {}

// BenchmarkObserver is the cost of the hook: a router of three routes over
// a balancer each, with no observer, and with one that does nothing.
func BenchmarkObserver(b *testing.B) {
	for _, tc := range []struct {
		name string
		obs  fanout.Observer
	}{{"none", nil}, {"nop", nopObserver{}}} {
		b.Run(tc.name, func(b *testing.B) {
			routes := map[string]fanout.Backend[int64, int64]{}
			var ropts []fanout.RouterOption
			for _, name := range []string{"r0", "r1", "r2"} {
				opts := []fanout.BalancerOption{fanout.WithBalancerName(name)}
				if tc.obs != nil {
					opts = append(opts, fanout.WithBalancerObserver(tc.obs))
				}
				bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{increment, increment}, opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer bal.Close()
				routes[name] = bal
			}
			if tc.obs != nil {
				ropts = append(ropts, fanout.WithObserver(tc.obs))
			}
			r, err := fanout.NewRouter(byMod3, routes, ropts...)
			if err != nil {
				b.Fatal(err)
			}
			benchmarkProcess(b, r, 10)
		})
	}
}

// TestJoinObservers: each observer sees every Work, Starts in order with
// the context passed along, Ends in reverse; nils are left out.
func TestJoinObservers(t *testing.T) {
	var order []string
	mk := func(name string) fanout.Observer { return &orderObserver{name: name, order: &order} }
	require.Nil(t, fanout.JoinObservers(nil, nil))
	one := mk("a")
	require.Equal(t, one, fanout.JoinObservers(nil, one))
	j := fanout.JoinObservers(mk("a"), nil, mk("b"))
	w := &fanout.Work{Kind: fanout.WorkCall}
	ctx := j.Start(context.Background(), w)
	j.End(ctx, w)
	assert.Equal(t, []string{"start a under []", "start b under [a]", "end b sees [a b]", "end a sees [a b]"}, order)
}

type orderObserver struct {
	name  string
	order *[]string
}

type orderKey struct{}

func (o *orderObserver) Start(ctx context.Context, w *fanout.Work) context.Context {
	seen, _ := ctx.Value(orderKey{}).([]string)
	*o.order = append(*o.order, fmt.Sprintf("start %s under %v", o.name, seen))
	return context.WithValue(ctx, orderKey{}, append(slices.Clone(seen), o.name))
}

func (o *orderObserver) End(ctx context.Context, w *fanout.Work) {
	seen, _ := ctx.Value(orderKey{}).([]string)
	*o.order = append(*o.order, fmt.Sprintf("end %s sees %v", o.name, seen))
}
