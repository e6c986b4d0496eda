package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/seed-c94cd834/fanout"
)

// A route that does not answer in time fails on its own, a margin before
// the caller's deadline, and the router answers with the others.
func ExampleWithDeadlineMargin() {
	parity := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n%2 == 0 {
			return "even", nil
		}
		return "odd", nil
	})
	double := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})
	stuck := fanout.BackendFunc[int64, int64](func(ctx context.Context, _ []int64) ([]int64, error) {
		<-ctx.Done() // never answers
		return nil, ctx.Err()
	})
	r, err := fanout.NewRouter(parity, map[string]fanout.Backend[int64, int64]{"even": double, "odd": stuck},
		fanout.WithPartialResults(), fanout.WithDeadlineMargin(0.5, 100*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	out, err := r.Process(ctx, []int64{2, 3, 4})
	fmt.Println(out, "; the caller's deadline still ahead:", ctx.Err() == nil)
	var pe *fanout.PartialError
	if errors.As(err, &pe) {
		fmt.Println(pe.Failed[0].Err)
	}
	// Output:
	// [4 0 8] ; the caller's deadline still ahead: true
	// context deadline exceeded (the route's deadline passed, 100ms before the call's)
}

// A route whose backend cannot be reached sends its items to its fallback,
// and ProcessRoutes says which route answered.
func ExampleWithFailover() {
	sign := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n < 0 {
			return "neg", nil
		}
		return "pos", nil
	})
	negate := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = -n
		}
		return out, nil
	})
	down := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, fmt.Errorf("dial: connection refused: %w", fanout.ErrUnavailable)
	})
	r, err := fanout.NewRouter(sign, map[string]fanout.Backend[int64, int64]{
		"neg": down, "neg-fallback": negate, "pos": negate,
	}, fanout.WithFailover("neg", "neg-fallback"))
	if err != nil {
		fmt.Println(err)
		return
	}
	items := []int64{-1, 2, -3}
	routes := make([]int, len(items))
	out, err := r.ProcessRoutes(context.Background(), items, routes)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i, n := range items {
		fmt.Printf("%d -> %d (route %s)\n", n, out[i], r.Routes()[routes[i]])
	}
	// Output:
	// -1 -> 1 (route neg-fallback)
	// 2 -> -2 (route pos)
	// -3 -> 3 (route neg-fallback)
}

// A call that its replica is slow to answer is hedged on the other one,
// which answers first; the slow call is cancelled.
//
// The budget here, 1, lets every call be hedged, so that the stalled call
// always is. With the default budget, [fanout.DefaultHedgeBudget], a call whose
// budget is spent is not hedged (the calls before it, some of them hedged
// too, earned too little), and a replica that stalls holds it until its
// context ends: which is why a real call has a deadline.
func ExampleWithHedging() {
	var slow atomic.Bool // replica a stalls once set
	replica := func(name string) fanout.Backend[int64, int64] {
		return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
			if name == "a" && slow.Load() && len(items) > 0 {
				<-ctx.Done() // stalls until cancelled
				return nil, ctx.Err()
			}
			return items, nil
		})
	}
	b, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{replica("a"), replica("b")},
		fanout.WithIdempotent(), fanout.WithHedging(fanout.DefaultHedgeQuantile, 1))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	// Hedging starts once the balancer has seen 100 answers.
	for range 200 {
		b.Process(context.Background(), []int64{1})
	}
	slow.Store(true)
	won := b.Hedges().Won
	for b.Hedges().Won == won { // until a call goes to a first
		out, err := b.Process(context.Background(), []int64{7})
		if err != nil || out[0] != 7 {
			fmt.Println("wrong:", out, err)
			return
		}
	}
	fmt.Println("a hedge answered a call that replica a stalled")
	// Output:
	// a hedge answered a call that replica a stalled
}
