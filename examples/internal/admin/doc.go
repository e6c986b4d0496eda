// Package admin is the admin endpoint of the example programs: Prometheus
// metrics, health and readiness, pprof, and a status page for people.
//
// A program makes one [Metrics] ([NewMetrics]), gives it as the
// [fanout.Observer] of its router ([fanout.WithObserver]), of each route's
// balancer ([fanout.WithBalancerObserver], with [fanout.WithBalancerName]
// naming the route), of its batchers and of its transport server
// (transport.WithObserver), registers each balancer's replicas with
// [Metrics.AddRoute] (route, balancer.Replicas), and serves [Handler] on
// its -admin address. A backend (x, y, z) has a server only; the middle
// layer has all of them.
//
// # Endpoints
//
// [Handler] serves, on a mux of its own (any other path is 404):
//
//   - GET /metrics: the metrics below, and the Go runtime's (go_*) and the
//     process's (process_*), from the Metrics' own registry, never the
//     global one (promhttp, which also serves the protobuf and OpenMetrics
//     formats to a scraper that asks for them).
//   - GET /healthz: 200 "ok" while the process runs.
//   - GET /readyz: 200 "ready" while [Options.Ready] returns nil, else 503
//     "not ready: " and its error: the program passes [ReadyUntil] of the
//     context whose end starts its drain, so that /readyz answers 503
//     "not ready: draining: shutting down" for the whole grace period.
//   - /debug/pprof/: the net/http/pprof handlers (the index, every named
//     profile under it, cmdline, profile, symbol, trace). Importing
//     net/http/pprof also registers them on [http.DefaultServeMux], which
//     no program here serves. Profiles and the status tell a lot about a
//     program: serve the handler on a loopback or private address.
//   - GET /status.json: [Status] as JSON, indented.
//   - GET /: the status page.
//
// # Metrics
//
// Every counter is made at the first sight of its route, replica or
// server with every outcome, at 0, so that a rate starts from the first
// call. outcome is that of [fanout.Outcome]: ok, partial, canceled,
// deadline_exceeded, unavailable, overloaded or error.
//
//   - fanout_route_calls_total{route,outcome}, counter: a router's calls of
//     a route's backend ([fanout.WorkRoute]).
//   - fanout_route_items_total{route}, counter: the items of those calls.
//   - fanout_route_call_duration_seconds{route}, histogram: their
//     durations, whatever their outcome (18 buckets: 50µs doubling to
//     6.6s).
//   - fanout_replica_up{route,replica}, gauge: 1 if the replica is
//     healthy, 0 if it is ejected, probing or down; read from the sources
//     given to [Metrics.AddRoute] at scrape time.
//   - fanout_replica_calls_total{route,replica,outcome}, counter: a
//     balancer's calls of a replica ([fanout.WorkAttempt]): tries, retries
//     and hedges.
//   - fanout_hedges_total{route}, counter: the hedges a balancer sent.
//   - fanout_server_calls_total{outcome}, counter: the calls the program's
//     transport server served or refused ([fanout.WorkServe]).
//   - fanout_server_inflight_calls, gauge: the calls it is serving now.
//   - fanout_batcher_merged_calls, histogram: the callers whose batches a
//     batcher merged into each call of its backend ([fanout.WorkMerge];
//     buckets 1, 2, 4 ... 128), all batchers together (a WorkMerge does
//     not name its route).
//
// route is a router's route name for the route metrics, and the
// balancer's name ([fanout.WithBalancerName]) for the replica and hedge
// metrics: the middle layer names each balancer after its route. replica
// is the replica's name ([fanout.WithReplicaNames], the address in the
// middle layer), or its index as "#1" when it has none.
//
// # Status
//
// [Metrics.Status] gives, for the server, every route and every replica:
// calls, errors (calls that ended other than ok or canceled: a canceled
// call's caller gave up, or its hedge won; a partial one failed some
// items), calls in flight, and the p50 and p99 of the durations of the
// last [RecentCalls] (1,024) answered calls (ok or partial) that ended in
// the last [RecentAge] (a minute): a ring of end times and durations per
// row, sorted when read. A replica's state ([ReplicaState]):
//
//   - healthy: in service.
//   - down: ejected or probing, and the error that took it out matches
//     [fanout.ErrUnavailable]: a dial failed or the connection was down or
//     refused, so the backend was not reached.
//   - ejected, probing: out of service for another error, such as
//     [fanout.ErrInterrupted] (the connection was lost mid-call) or a probe
//     that failed or timed out; probing while a probe of it is in flight.
//   - unknown: calls were seen for it, but no source lists it.
//
// Each read of the replicas' states (a status read or a scrape) compares
// them with the last read and keeps the changes, the last 50, with the
// time each was seen: a change undone between two reads is not seen. The
// page reads the status every second, so while it is open no change
// lasting a second is missed.
//
// # The status page
//
// GET / is one self-contained HTML page (inline CSS and script, embedded
// in the program, nothing fetched from elsewhere) titled with the program's
// name ([Options.Program]). It shows whether the program is ready, the
// server's calls, errors, calls in flight, p50 and p99, each route with
// its totals and a table of its replicas (state, coloured, with how long a
// replica has been out and why; in flight; calls; errors; p50; p99), and
// the recent state changes. It fetches /status.json every second, or as
// often as its query says (?refresh=200ms, ?refresh=5s), shows when it
// last updated, and shows a banner while a fetch fails, keeping the last
// status it had.
package admin
