package fanout

import "context"

// Backend processes a batch of items.
//
// On success Process returns exactly one result per item, in the same order:
// len(out) == len(items) and out[i] answers items[i]. On failure it returns a
// non-nil error, and the results, if any, must not be used, with one
// exception: a backend that fails some items and answers the others returns
// a result per item and a [*PartialError] (as the error itself, not
// wrapped) that lists the items that failed, each with its index and its
// error; the other results are answers. A backend that answered no item
// may return nil results beside a *PartialError. Routers, batchers,
// balancers and the transport keep such failures per item, so that one
// bad item fails only itself.
//
// Process must honour ctx: when ctx is cancelled or its deadline passes, it
// should stop work and return an error promptly. Implementations are expected
// to be safe for concurrent use, and must not keep or modify items after
// Process returns.
type Backend[In, Out any] interface {
	Process(ctx context.Context, items []In) ([]Out, error)
}

// BackendFunc adapts an ordinary function to the [Backend] interface.
type BackendFunc[In, Out any] func(ctx context.Context, items []In) ([]Out, error)

// Process calls f(ctx, items).
func (f BackendFunc[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	return f(ctx, items)
}

// isNil reports whether b is nil or a nil [BackendFunc].
func isNil[In, Out any](b Backend[In, Out]) bool {
	f, ok := b.(BackendFunc[In, Out])
	return b == nil || ok && f == nil
}
