package balance

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/seed-c94cd834/fanout"
)

// RoundRobin is a [fanout.Backend] that passes each call to the next of its
// replicas in turn. It does not retry: a call that fails on its replica
// fails. It is safe for concurrent use.
type RoundRobin[In, Out any] struct {
	replicas []fanout.Backend[In, Out]
	next     atomic.Uint64
}

var _ fanout.Backend[int, int] = (*RoundRobin[int, int])(nil)

// NewRoundRobin returns a backend that takes turns among replicas. It fails
// if there are none.
func NewRoundRobin[In, Out any](replicas ...fanout.Backend[In, Out]) (*RoundRobin[In, Out], error) {
	if len(replicas) == 0 {
		return nil, errors.New("balance: no replicas")
	}
	return &RoundRobin[In, Out]{replicas: replicas}, nil
}

// Process implements [fanout.Backend] by calling the next replica.
func (r *RoundRobin[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	i := (r.next.Add(1) - 1) % uint64(len(r.replicas))
	return r.replicas[i].Process(ctx, items)
}
