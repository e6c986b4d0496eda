package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Limiter is a [Backend] that bounds how many calls its backend has in
// flight. A call past the bound fails at once with an error wrapping
// [ErrOverloaded]; nothing waits in a queue, so a flood of calls costs the
// limiter nothing but the refusals. It is safe for concurrent use.
//
// In a router, wrap each route's backend in a Limiter to bound the calls in
// flight per route: the router names the route in the error.
//
// Given [WithLimiterLogger], a limiter that refuses calls logs it at Warn
// level at most once per second, with the count of calls refused since its
// last line, never once per call.
type Limiter[In, Out any] struct {
	backend  Backend[In, Out]
	max      int64
	inFlight atomic.Int64

	log       *slog.Logger // nil: refusals are not logged
	shed      atomic.Int64 // calls refused and not yet logged
	reporting atomic.Bool  // a line was logged less than shedLogInterval ago
	afterFunc func(time.Duration, func())
}

var _ Backend[int, int] = (*Limiter[int, int])(nil)

// shedLogInterval is the least time between two lines of a limiter that
// refuses calls.
const shedLogInterval = time.Second

// LimiterOption configures a [Limiter]. No options means the documented
// default of every option.
type LimiterOption func(*limiterConfig)

type limiterConfig struct {
	logger *slog.Logger
}

// WithLimiterLogger makes the limiter log the calls it refuses, at Warn
// level: "fanout: limiter shed load" with shed=, the calls refused since its
// last such line, and max_in_flight=, its bound. The first refusal is
// logged at once. The refusals of the second after a line are counted in one
// line at the end of that second, and so on while refusals go on, so that
// an overloaded route logs a line a second at most, never one per call, and
// every refusal is counted once.
//
// A nil logger logs nothing, and then nothing is spent on logging.
//
// Default: nil.
func WithLimiterLogger(l *slog.Logger) LimiterOption {
	return func(c *limiterConfig) { c.logger = l }
}

// NewLimiter returns a backend that passes at most maxInFlight concurrent
// calls to b. It fails if b is nil or maxInFlight is not positive.
func NewLimiter[In, Out any](b Backend[In, Out], maxInFlight int, opts ...LimiterOption) (*Limiter[In, Out], error) {
	if isNil(b) {
		return nil, errors.New("fanout: limiter: nil backend")
	}
	if maxInFlight <= 0 {
		return nil, fmt.Errorf("fanout: limiter: maximum of %d calls in flight, want at least 1", maxInFlight)
	}
	var cfg limiterConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	return &Limiter[In, Out]{
		backend:   b,
		max:       int64(maxInFlight),
		log:       cfg.logger,
		afterFunc: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
	}, nil
}

// Process calls the backend if fewer than the maximum calls are in flight,
// and otherwise returns an error wrapping [ErrOverloaded].
func (l *Limiter[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	if l.inFlight.Add(1) > l.max {
		l.inFlight.Add(-1)
		if l.log != nil {
			l.refused()
		}
		return nil, fmt.Errorf("fanout: %w: %s already in flight", ErrOverloaded, count(int(l.max), "call"))
	}
	defer l.inFlight.Add(-1)
	return l.backend.Process(ctx, items)
}

// InFlight returns the number of calls in flight.
func (l *Limiter[In, Out]) InFlight() int { return int(l.inFlight.Load()) }

// refused counts a refusal, and logs it at once unless a line was logged
// less than shedLogInterval ago; the next report counts it then.
func (l *Limiter[In, Out]) refused() {
	l.shed.Add(1)
	if l.reporting.CompareAndSwap(false, true) {
		l.report()
	}
}

// report logs the refusals not yet logged and, if there were any, looks
// again shedLogInterval later. It runs only while reporting is set, by
// whoever set it, and clears it if there is nothing to log.
func (l *Limiter[In, Out]) report() {
	for {
		if n := l.shed.Swap(0); n > 0 {
			l.log.LogAttrs(context.Background(), slog.LevelWarn, "fanout: limiter shed load",
				slog.Int64("shed", n), slog.Int64("max_in_flight", l.max))
			l.afterFunc(shedLogInterval, l.report)
			return
		}
		l.reporting.Store(false)
		// A refusal counted after the swap but before reporting was
		// cleared did not report itself: report it now, unless another
		// refusal has since set reporting.
		if l.shed.Load() == 0 || !l.reporting.CompareAndSwap(false, true) {
			return
		}
	}
}
