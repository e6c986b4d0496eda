package fanout

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"
)

// Alternatives to the router's own machinery, which benchmarks measure it
// against (router_bench_test.go, PERFORMANCE.md).

// UseErrgroup makes r call every route that received items on a goroutine
// of its own, started by an errgroup.Group, instead of on its workers and
// the caller's goroutine.
func UseErrgroup[In, Out any](r *Router[In, Out]) {
	r.fanOut = func(c *routeCalls[In, Out], ctx context.Context, bounds []int) {
		c.parent = ctx
		var release context.CancelFunc
		c.ctx, c.cancel, release, c.margin = c.r.routesContext(ctx)
		defer release()
		var g errgroup.Group
		for k := range len(bounds) - 1 {
			if lo, hi := bounds[k], bounds[k+1]; lo < hi {
				g.Go(func() error {
					c.run(k, lo, hi)
					return nil
				})
			}
		}
		g.Wait() // run records failures in first and failed
	}
}

// UseMapLookup makes r find the route of every item by looking its name up
// in r's map, without route guesses.
func UseMapLookup[In, Out any](r *Router[In, Out]) {
	r.classifyAll = func(r *Router[In, Out], items []In, routeOf []int32, routes []int, bounds []int) (int, error) {
		used := 0
		for i := range items {
			name, err := r.classifier.Classify(items[i])
			if err != nil {
				return 0, &ItemError{Index: i, Err: err, classify: true}
			}
			k, ok := r.index[name]
			if !ok {
				return 0, &ItemError{Index: i, Route: name, Err: ErrNoRoute}
			}
			routeOf[i] = int32(k)
			if routes != nil {
				routes[i] = k
			}
			if bounds[k] == 0 {
				used++
			}
			bounds[k]++
		}
		return used, nil
	}
}

// SetLimiterAfterFunc makes l schedule its next line about shed load with
// after instead of time.AfterFunc, so that a test decides when the time is
// up.
func SetLimiterAfterFunc[In, Out any](l *Limiter[In, Out], after func(time.Duration, func())) {
	l.afterFunc = after
}

// SetHedgeDelay makes b hedge its calls after d, whatever its latency
// sketch says (b must be built WithHedging).
func SetHedgeDelay[In, Out any](b *Balancer[In, Out], d time.Duration) { b.hedgeDelay = d }

// SetHedgeHook makes b call f each time a call's hedge delay is up, telling
// whether a hedge was sent.
func SetHedgeHook[In, Out any](b *Balancer[In, Out], f func(sent bool)) { b.hedgeHook = f }

// SketchQuantile returns the quantile q of latencies in a latency sketch
// fed with them, as a balancer's hedging computes it.
func SketchQuantile(q float64, latencies []time.Duration) time.Duration {
	s := newLatencySketch(q)
	for _, d := range latencies {
		s.observe(d)
	}
	return s.delay()
}
