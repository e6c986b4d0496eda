// Package otelfanout turns the work of package fanout into OpenTelemetry
// traces and metrics, and carries traces across package transport's
// calls.
//
// [NewObserver] returns a [fanout.Observer]; [Propagator] returns a
// [transport.Propagator]. A middle layer that is given both, with every
// transport client and server on both sides given the propagator, yields
// one trace per request across every hop: the caller's span, the middle's
// fanout.serve span, its fanout.call, a fanout.route span per route, a
// fanout.attempt span per replica tried, and the backend's fanout.serve
// span, each the child of the one before.
//
// This package lives in a module of its own, so that the fanout library
// itself imports no OpenTelemetry package: only a program that wires this
// module in pulls the API and the SDK.
//
// # Spans
//
// Every span has rpc.system = "fanout", fanout.items (the work's items),
// fanout.outcome (see below) and the attributes of [WithAttributes].
//
//	work                 span name                kind      more attributes
//	fanout.WorkCall      fanout.call              internal
//	fanout.WorkRoute     fanout.route ROUTE       internal  fanout.route
//	fanout.WorkAttempt   fanout.attempt ROUTE     client    fanout.route, fanout.replica, fanout.attempt, fanout.hedge
//	fanout.WorkMerge     fanout.merge             internal  fanout.merged
//	fanout.WorkServe     fanout.serve             server
//
// ROUTE is the route's name; for an attempt, the balancer's name
// ([fanout.WithBalancerName]): a balancer without one names its attempts
// fanout.attempt, without fanout.route. fanout.replica is the replica's
// name as its balancer gives it (see [fanout.WithReplicaNames]; "#2" for
// the third replica, when it has none), fanout.attempt counts a call's attempts from
// 1 and fanout.hedge is true for a hedge ([fanout.WithHedging]).
// fanout.merged counts the callers whose batches a batcher merged. An
// attempt's span is a client span: the replica is usually a remote
// server, whose fanout.serve span is its child.
//
// Each span is the child of the span in the context its work started
// with; a served call's, of the caller's span that [Propagator] extracted.
// A batcher's merged call runs on a context of its own (see
// [fanout.WithBatcherObserver]), so its fanout.merge span starts a trace of
// its own, the span of the work below it its child.
//
// Status: a span whose work failed has status Error with the error's
// message. A partial answer (outcome "partial", a [*fanout.PartialError])
// is an answer: its span's status is left unset, and the error is recorded
// on it as an exception event ([trace.Span.RecordError]). The parts that
// failed are Error in spans of their own, where they are observed (a
// failed route's fanout.route span, say).
//
// # Metrics
//
// Every measurement has rpc.system = "fanout", fanout.outcome and the
// attributes of [WithAttributes].
//
//	instrument                 type            unit      work          more attributes
//	fanout.call.duration       histogram       s         WorkCall
//	fanout.route.duration      histogram       s         WorkRoute     fanout.route
//	fanout.route.items         counter         {item}    WorkRoute     fanout.route
//	rpc.client.call.duration   histogram       s         WorkAttempt   fanout.route, fanout.replica, fanout.hedge
//	fanout.merge.duration      histogram       s         WorkMerge
//	fanout.merge.callers       histogram       {caller}  WorkMerge
//	rpc.server.call.duration   histogram       s         WorkServe
//	fanout.serve.items         counter         {item}    WorkServe
//	fanout.serve.request.size  histogram       By        WorkServe
//
// rpc.client.call.duration and rpc.server.call.duration are named, and
// measured in seconds, as the OpenTelemetry semantic conventions for RPC
// name them: a balancer's call of one replica is the client call, a
// transport server's served call the server call. rpc.client.call.duration
// has no fanout.route where the balancer has no name. fanout.route.items
// counts the items a router sent to each route, fanout.serve.items those a
// server was sent; each is counted under the outcome of the work that
// carried them. fanout.serve.request.size is a request's size on the wire,
// a refused request's included.
//
// The histograms advise bucket boundaries (a view of the SDK overrides
// them): the durations from 100µs to 10s, since a call on a local network
// is often faster than the 5ms of the conventions' first bucket;
// fanout.merge.callers from 1 to 128; fanout.serve.request.size from 64
// bytes to 16 MiB.
//
// fanout.outcome is [fanout.Outcome] of the work's error: "ok", "partial",
// "canceled", "deadline_exceeded", "unavailable", "overloaded" or "error".
//
// The conventions that name the call durations rpc.client.call.duration
// and rpc.server.call.duration (v1.39 on) name the RPC system's attribute
// rpc.system.name; this package sets rpc.system, the name of the
// conventions before them. [KeyRPCSystem] is the one place that names it.
//
// # Cost
//
// The attributes of each kind of work (its kind, route, replica and hedge,
// with every outcome) are computed once, the first time it is seen, and
// read without a lock after that: an event builds no attribute set and no
// map. The first 1,024 routes, and the first 1,024 combinations of a
// balancer's name, replica and hedge, are kept; past that, their
// attributes are computed for every event. A span's attributes are set
// once the tracer has started it, and only if it records: a span the
// sampler drops costs no attribute, and a sampler sees each span's name
// (which names its route) and kind, not its attributes. The spans and the measurements cost what
// the SDK makes them cost: the tracer's sampler, the readers and the
// exporters decide. BenchmarkRouterCall measures a router's call with and
// without an observer.
//
// An observer keeps nothing of a [fanout.Work] after End returns.
package otelfanout
