package fanout

import (
	"fmt"
	"math"
	"time"
)

// RouterOption configures a [Router]. The zero configuration (no options) is the
// documented default of every option.
type RouterOption func(*routerConfig)

type routerConfig struct {
	partial     bool
	margin      float64       // the share of the time left that routes give back
	maxMargin   time.Duration // the most they give back
	marginSet   bool
	fallbacks   map[string]string // route -> its fallback route
	observer    Observer
	optionError error // the first bad option, reported by NewRouter
}

// WithObserver has a [Router] tell o about every call ([WorkCall]) and
// every route's part of one ([WorkRoute]); see [Observer].
//
// Default: none, and then nothing is measured.
func WithObserver(o Observer) RouterOption {
	return func(c *routerConfig) { c.observer = o }
}

// WithPartialResults makes a [Router] return the answers of the routes that
// succeeded even when others failed.
//
// Default: off. A router without it stops at the first failing route: that
// route's error cancels the context given to the other routes and the call
// returns no results.
//
// With it, every route runs to completion on the caller's context (less
// the deadline margin, see [WithDeadlineMargin]). If any route failed,
// Process returns a [*PartialError] listing each failed route with its item
// indices, together with the results of the successful routes (failed
// positions hold zero values). If every route that received items failed,
// the results are nil: there is nothing partial to return.
func WithPartialResults() RouterOption {
	return func(c *routerConfig) { c.partial = true }
}

// Defaults of [WithDeadlineMargin].
const (
	DefaultDeadlineMargin    = 0.1
	DefaultMaxDeadlineMargin = 250 * time.Millisecond
)

// WithDeadlineMargin sets how much earlier than the caller's deadline a
// [Router]'s routes must answer, so that the router can still answer
// before the caller gives up: with what came back, under
// [WithPartialResults], or with an error that names the route that did not
// answer, rather than at the caller's deadline with nothing.
//
// The rule: when a call's context has a deadline, with d left before it
// as Process starts, the routes' context has a deadline m earlier, where m
// is fraction times d, and at most maxMargin. A route that has not
// answered by then fails with its own error, which wraps
// [context.DeadlineExceeded], followed by "(the route's deadline passed,
// 100ms before the call's)" for a margin of 100ms. A call without a deadline has none for its routes
// either. Routers nest: a router that is a route of another sees the
// earlier deadline, and takes its own margin from what is left of it, so
// that each layer answers before the layer above it gives up.
//
// fraction must be in [0, 0.5]: [NewRouter] fails otherwise, and for a
// negative maxMargin. A fraction of 0, or a maxMargin of 0, turns the
// margin off: routes then get the caller's deadline.
//
// Default: a tenth of the time left ([DefaultDeadlineMargin]), at most
// 250ms ([DefaultMaxDeadlineMargin]): a route of a call with 1s left must
// answer within 900ms, one with 10s left within 9.75s.
func WithDeadlineMargin(fraction float64, maxMargin time.Duration) RouterOption {
	return func(c *routerConfig) {
		if !(fraction >= 0 && fraction <= 0.5) { // NaN too
			c.fail(fmt.Errorf("WithDeadlineMargin: fraction %v is not in [0, 0.5]", fraction))
			return
		}
		if maxMargin < 0 {
			c.fail(fmt.Errorf("WithDeadlineMargin: negative maximum %v", maxMargin))
			return
		}
		c.margin, c.maxMargin, c.marginSet = fraction, maxMargin, true
	}
}

// WithFailover makes a [Router] send a route's items to another of its
// routes, fallback, when the route's backend fails as a whole with an error
// wrapping [ErrUnavailable]: a route whose every replica is down or
// ejected (see [Balancer]), or a backend that cannot be reached. Both are
// names of routes in the map given to [NewRouter]; the fallback is an
// ordinary route, which the classifier may also choose.
//
// The fallback gets the same items, on the same context, as the route did.
// If it answers, its answers are the call's, and [Router.ProcessRoutes]
// reports the fallback's route for those items, so that a caller can tell
// who answered. If it fails too, the route fails with a [*RouteError]
// naming the route, whose error says both failures and wraps both. Any
// other failure of the route (a failure of the backend itself, a
// timeout, failures of single items) is the route's, as without a
// fallback: it would not be safer elsewhere. A route whose items were cut
// into several calls below the router (by a [Batcher]) fails over only if
// its whole answer failed.
//
// NewRouter fails if either name is not a route, route and fallback are
// the same, a route is given two fallbacks, or a fallback has a fallback
// of its own.
//
// Default: no route has a fallback.
func WithFailover(route, fallback string) RouterOption {
	return func(c *routerConfig) {
		if _, ok := c.fallbacks[route]; ok {
			c.fail(fmt.Errorf("WithFailover: route %q is given two fallbacks", route))
			return
		}
		if c.fallbacks == nil {
			c.fallbacks = make(map[string]string)
		}
		c.fallbacks[route] = fallback
	}
}

func (c *routerConfig) fail(err error) {
	if c.optionError == nil {
		c.optionError = err
	}
}

// marginFor returns the margin of a call with left before its deadline.
func marginFor(fraction float64, maxMargin, left time.Duration) time.Duration {
	m := time.Duration(math.Min(fraction*float64(left), float64(maxMargin)))
	return max(m, 0)
}
