package fanout

import (
	"context"
	"errors"
	"sync"
	"time"
)

// An Observer is told when a piece of fanout's work starts and when it
// ends: a [Router] call, each route's part of it, a [Balancer]'s call of
// one replica, a [Batcher]'s merged call, and a call that a transport
// server serves (package transport, its WithObserver). It is the one hook
// that metrics and tracing are built on, in the spirit of grpc-go's stats
// handler; the otel module of this repository turns it into OpenTelemetry
// metrics and spans.
//
// Set one with [WithObserver], [WithBalancerObserver] or
// [WithBatcherObserver]. Without one, nothing is built or called: the cost
// of the hook is a nil check per event.
//
// Start and End are called from the goroutine doing the work, often many
// at once, so an Observer must be safe for concurrent use, and quick: the
// work waits for them.
type Observer interface {
	// Start is called as w starts. The context it returns is the one the
	// work runs under, and is handed to End: an observer that starts a span
	// puts it there, so that the work below it (a route's calls, a remote
	// call's trace context) is its child. One that keeps nothing per call
	// returns ctx.
	Start(ctx context.Context, w *Work) context.Context
	// End is called once for every Start, as w ends, with the context
	// Start returned and w's Duration and Err set. w is not used after End
	// returns, and must not be kept.
	End(ctx context.Context, w *Work)
}

// WorkKind tells what a [Work] is.
type WorkKind uint8

const (
	// WorkCall is a [Router]'s call: Items is the call's batch.
	WorkCall WorkKind = iota + 1
	// WorkRoute is one route's part of a Router's call: Route names it,
	// Items is its share of the batch. A route whose items went to its
	// fallback (see [WithFailover]) ends with its error, and the fallback
	// is a WorkRoute of its own.
	WorkRoute
	// WorkAttempt is a [Balancer]'s call of one replica: Route is the
	// balancer's name (see [WithBalancerName]), Replica the replica's (see
	// [WithReplicaNames]), Attempt counts from 1 and Hedge is set for a
	// hedge (see [WithHedging]).
	WorkAttempt
	// WorkMerge is a [Batcher]'s call of its backend with the batches of
	// Merged callers, Items in all.
	WorkMerge
	// WorkServe is a call a transport server served, or refused: Items is
	// the request's batch (0 if it was refused before it was decoded) and
	// Bytes its size on the wire.
	WorkServe
)

// String returns the kind's name: "call", "route", "attempt", "merge" or
// "serve".
func (k WorkKind) String() string {
	switch k {
	case WorkCall:
		return "call"
	case WorkRoute:
		return "route"
	case WorkAttempt:
		return "attempt"
	case WorkMerge:
		return "merge"
	case WorkServe:
		return "serve"
	}
	return "unknown"
}

// Work describes one piece of work to an [Observer]. The fields that do
// not apply to its Kind are zero.
type Work struct {
	Kind    WorkKind
	Route   string // WorkRoute, WorkAttempt: the route's name
	Replica string // WorkAttempt: the replica's name, or its index as "#2" when it has none
	Items   int    // the items of the work's batch
	Bytes   int    // WorkServe: the request's size on the wire
	Attempt int    // WorkAttempt: 1 for the first replica tried, 2 for the next...; a hedge is 1, as the try it hedges
	Hedge   bool   // WorkAttempt: the call is a hedge of another
	Merged  int    // WorkMerge: the callers whose batches were merged

	Start time.Time // when the work started; set before Start is called

	// Set before End is called:
	Duration time.Duration // how long the work took
	Err      error         // nil on success; a *PartialError if it answered some items only
}

// Outcome names how w ended, for a metric's label: "ok", "partial" (a
// [*PartialError]: some items answered), "canceled", "deadline_exceeded",
// "unavailable" ([ErrUnavailable], [ErrInterrupted]), "overloaded"
// ([ErrOverloaded]) or "error" (anything else).
func (w Work) Outcome() string { return Outcome(w.Err) }

// Outcome names how a call that returned err ended, as [Work.Outcome]
// does.
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case partialOf(err) != nil:
		return "partial"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrInterrupted):
		return "unavailable"
	}
	return "error"
}

// works recycles Works: an Observer keeps none past End.
var works = sync.Pool{New: func() any { return new(Work) }}

// startWork tells o, which is not nil, that work w starts: w is a Work
// from the pool (newWork) with its fields set but Start. It returns the
// context the work runs under.
func startWork(ctx context.Context, o Observer, w *Work) context.Context {
	w.Start = time.Now()
	return o.Start(ctx, w)
}

// endWork tells o that w, started on ctx, ended with err, and recycles w.
func endWork(ctx context.Context, o Observer, w *Work, err error) {
	w.Duration, w.Err = time.Since(w.Start), err
	o.End(ctx, w)
	*w = Work{}
	works.Put(w)
}

// newWork returns a zero Work of kind k from the pool.
func newWork(k WorkKind) *Work {
	w := works.Get().(*Work)
	w.Kind = k
	return w
}

// JoinObservers returns an Observer that tells each of obs, in order, of
// every piece of work: Start passes the context each returns on to the
// next, End goes in the reverse order. Nil observers are left out; with
// none left it returns nil, and with one, that one.
func JoinObservers(obs ...Observer) Observer {
	var j joinedObservers
	for _, o := range obs {
		if o != nil {
			j = append(j, o)
		}
	}
	switch len(j) {
	case 0:
		return nil
	case 1:
		return j[0]
	}
	return j
}

type joinedObservers []Observer

func (j joinedObservers) Start(ctx context.Context, w *Work) context.Context {
	for _, o := range j {
		ctx = o.Start(ctx, w)
	}
	return ctx
}

// End hands every observer the context the last Start returned: it holds
// what each put there.
func (j joinedObservers) End(ctx context.Context, w *Work) {
	for i := len(j) - 1; i >= 0; i-- {
		j[i].End(ctx, w)
	}
}
