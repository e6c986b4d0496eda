// Package fanout is a scatter-gather middle layer behind a content-based
// router.
//
// A caller hands a batch of items to a [Router]. The router asks its
// [Classifier] which route owns each item, sends every route's items to that
// route's [Backend], all routes at once, and gathers the answers back into the
// caller's order. A *Router is itself a Backend, so routers nest, and any
// Backend can be served over the network and called remotely with package
// [github.com/seed-c94cd834/fanout/transport].
//
// # Guarantees
//
// Ordering: on success a Backend returns exactly one result per item and
// out[i] answers items[i]. The router enforces this for the backends it calls:
// a backend that answers the wrong number of results fails its route with
// [ErrResultCount] instead of producing a misaligned answer.
//
// Empty input: an empty batch returns an empty, non-nil result and calls no
// backend.
//
// Errors: a classifier error, or a route the router does not have
// ([ErrNoRoute]), fails the call with an [*ItemError] that names the item's
// index (and the route). A failing backend fails the call with a
// [*RouteError] naming the route and the indices of its items. By default the
// first failing route cancels the context passed to the others and the call
// returns no results; [WithPartialResults] instead returns the successful
// answers together with a [*PartialError].
//
// Per-item failures: a backend may fail single items and answer the others,
// by returning a result per item and a [*PartialError] whose Items name the
// items that failed, each an [*ItemError] with its index (see [Backend]).
// Only those items fail: a router keeps them per item, with their indices in
// its own call and their route (the path of routes, "m/z", through nested
// routers); a [Batcher] gives each caller of a merged call the failures of its
// own items; a [Balancer] takes a partial answer as an answer (no retry, no
// ejection); and the transport carries it to the far side, where
// [errors.As] finds the *PartialError. Without [WithPartialResults] a router
// fails the call with a [*RouteError] naming the route and the index of the
// first item that failed. Errors wrap their causes, so
// [errors.Is] and [errors.As] see through them. [Router.ProcessRoutes] also
// reports the route of every item, whatever the routes' outcome.
//
// Cancellation: the caller's context is passed to every backend, with a
// deadline a margin earlier if it has one (see Tail tolerance below).
// Process does not return until every backend call it started has
// returned.
//
// Concurrency: a Router is immutable after [NewRouter] and safe for
// concurrent use by any number of goroutines, provided its classifier and
// backends are. Process never keeps or modifies the caller's slice.
//
// # Replicas, limits and failures
//
// A [Balancer] spreads calls over several replicas of a backend (power of
// two choices over calls in flight), retries a call that failed without
// reaching its replica ([ErrUnavailable], [ErrOverloaded]) on another one,
// and ejects replicas that keep failing until a probe shows they are back.
// A [Limiter] bounds the calls in flight to a backend and refuses extra ones
// at once with [ErrOverloaded]. A [Batcher] merges the calls that arrive
// while its backend is busy into fewer, larger calls, and cuts very large
// calls into chunks sent in parallel. All three are Backends: a route of a
// middle layer is typically a Limiter around a Batcher around a Balancer
// around transport clients. The sentinels [ErrUnavailable],
// [ErrInterrupted] and [ErrOverloaded] say
// whether a failed call may safely be sent again; an error the backend
// itself returned is never retried.
//
// Logging: given a logger ([WithBalancerLogger], [WithLimiterLogger]), a
// Balancer logs each ejection of a replica at Warn level and each
// readmission at Info level, once per event, and a Limiter logs the calls
// it refuses at Warn level at most once a second, with their count; neither
// logs once per call, and without a logger neither spends anything on
// logging. [Balancer.Check] probes every replica at once, so that a program
// can eject, and log, the replicas that cannot be reached at start.
//
// Cost: a call allocates its results (and, if it has a deadline, the
// routes' context of the deadline margin) and runs the routes that received
// items concurrently, the last of them on the caller's goroutine and each
// other on a worker goroutine of the router's; nothing is allocated per
// item. A router keeps the workers that ran a call's routes for the next
// calls, since a new goroutine's stack would have to grow on the way to a
// remote backend; a worker left idle ends after 100-200 ms, and at most
// 256 wait at any time. Its working slices, those it passes to the
// backends among them, are reused by later calls once the backends have
// returned, as the Backend contract allows: a backend that kept its items
// after returning would see them change. A batch whose items all belong to
// one route is passed to that route's backend without copying. Classifying
// costs a call of the classifier and, usually, one comparison of the name
// it returns with the route's: within a call the router remembers which
// route each name was (by a small hash of the name, always checked), so
// that items of many routes in no regular order do not cost a branch
// mispredicted per item. A classifier that returns constant names, without
// branching on the item where it can, keeps classification cheap.
//
// # Tail tolerance
//
// A scatter-gather call is as slow as its slowest route; four tools keep a
// slow or missing route from costing the whole call.
//
// Deadline margin: a router gives its routes a deadline a margin earlier
// than the caller's, by default a tenth of the time left and at most
// 250ms ([WithDeadlineMargin]), so that it answers before the caller gives
// up: under [WithPartialResults] with what came back, the late routes'
// items failed with an error saying the route's deadline passed; without,
// with that error. Nested routers compose: each takes its margin from what
// the layer above left it.
//
// Hedging: a [Balancer] built [WithHedging] sends a call its replica has
// not answered after the recent p95 latency (or another quantile) to a
// second replica too, takes the first answer and cancels the other call,
// within a budget of extra calls (5% of the calls, say). It needs
// [WithIdempotent].
//
// Failover: [WithFailover] names a fallback route of a router that gets a
// route's items when that route is unavailable as a whole (every replica
// down or ejected); [Router.ProcessRoutes] reports the fallback for them.
//
// Shadow routes: a [Shadow] tries a candidate backend, such as a new
// version of a service, on live traffic: it answers every call with its
// primary, exactly as the primary answered, and mirrors a share of the
// calls the primary answered to the candidate, in the background, on
// copies of the items and of the primary's results. The mirrored calls are
// bounded in number and time, never delay the caller and are not cancelled
// with it; the candidate's answers are compared item by item with the
// primary's, and counted as matches, mismatches or errors
// ([Shadow.Stats]), the latest mismatches kept ([Shadow.Mismatches]).
// Given [WithShadowLogger], a Shadow logs mismatches and the candidate's
// failures at Warn level at most once a second each.
//
// # Observing
//
// One hook sees all of fanout's work: an [Observer], told as each piece of
// work starts and ends. A [Router] ([WithObserver]) tells it of each call
// and each route's part of it, a [Balancer] ([WithBalancerObserver]) of
// each call of a replica (tries, retries and hedges, named by
// [WithBalancerName] and [WithReplicaNames]), a [Batcher]
// ([WithBatcherObserver]) of each call of its backend with the number of
// callers it merged, and a transport server (transport.WithObserver) of
// each call it serves or refuses. Each [Work] carries its route, replica,
// items, duration and error ([Work.Outcome] names it for a metric label).
// The context an observer's Start returns is the one the work runs under,
// so spans nest: call, route, attempt, and across the wire, with
// transport.WithPropagator, the server's call as the child of the
// caller's attempt (the traced request carries W3C trace context;
// transport/PROTOCOL.md). [JoinObservers] combines several.
//
// The hook costs a nil check when none is set. The library itself pulls in
// no metrics or tracing library: the otelfanout module of this repository
// turns an Observer into OpenTelemetry metrics and spans, and the example
// programs feed Prometheus from one. [Balancer.Replicas] gives each
// replica's state (healthy, ejected, probing) for a status page or a gauge.
// Logging goes to the *slog.Logger each part is given
// ([WithBalancerLogger], [WithLimiterLogger], [WithShadowLogger],
// transport.WithLogger), and nowhere without one.
//
// # Quick start
//
//	classify := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
//		if n < 0 {
//			return "neg", nil
//		}
//		return "pos", nil
//	})
//	negate := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
//		out := make([]int64, len(in))
//		for i, n := range in {
//			out[i] = -n
//		}
//		return out, nil
//	})
//	r, err := fanout.NewRouter(classify, map[string]fanout.Backend[int64, int64]{
//		"neg": negate,
//		"pos": remote, // for example a *transport.Client
//	})
//	...
//	out, err := r.Process(ctx, []int64{-2, 5, -7})
package fanout
