package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Limiter is a [Backend] that bounds how many calls its backend has in
// flight. A call past the bound fails at once with an error wrapping
// [ErrOverloaded]; nothing waits in a queue, so a flood of calls costs the
// limiter nothing but the refusals. It is safe for concurrent use.
//
// In a router, wrap each route's backend in a Limiter to bound the calls in
// flight per route: the router names the route in the error.
type Limiter[In, Out any] struct {
	backend  Backend[In, Out]
	max      int64
	inFlight atomic.Int64
}

var _ Backend[int, int] = (*Limiter[int, int])(nil)

// NewLimiter returns a backend that passes at most maxInFlight concurrent
// calls to b. It fails if b is nil or maxInFlight is not positive.
func NewLimiter[In, Out any](b Backend[In, Out], maxInFlight int) (*Limiter[In, Out], error) {
	if isNil(b) {
		return nil, errors.New("fanout: limiter: nil backend")
	}
	if maxInFlight <= 0 {
		return nil, fmt.Errorf("fanout: limiter: maximum of %d calls in flight, want at least 1", maxInFlight)
	}
	return &Limiter[In, Out]{backend: b, max: int64(maxInFlight)}, nil
}

// Process calls the backend if fewer than the maximum calls are in flight,
// and otherwise returns an error wrapping [ErrOverloaded].
func (l *Limiter[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	if l.inFlight.Add(1) > l.max {
		l.inFlight.Add(-1)
		return nil, fmt.Errorf("fanout: %w: %s already in flight", ErrOverloaded, count(int(l.max), "call"))
	}
	defer l.inFlight.Add(-1)
	return l.backend.Process(ctx, items)
}

// InFlight returns the number of calls in flight.
func (l *Limiter[In, Out]) InFlight() int { return int(l.inFlight.Load()) }
