// Command middle is the middle layer of the example system. It takes
// batches of int64, sends each number to the backend that owns it (x for
// negative numbers, y for even numbers >= 0, z for odd positive numbers),
// all backends at once, and answers each number with its result and the
// name of the backend that computed it, in the order of the batch.
//
// A backend may have several replicas. Each call of a route goes to the
// less busy of two of its replicas picked at random; a call that could not
// reach its replica, or was cut off by a replica that died, is sent to
// another (x, y and z compute pure functions, so a repeat is harmless). A
// replica that fails 5 calls in a row is ejected for 1s, doubling with
// each ejection in a row up to 30s, and takes calls again once a probe (an
// empty call) succeeds. When every replica of a route is ejected, its calls
// fail at once. The middle layer connects to every replica at start, when
// it checks them, and reconnects after losing one.
//
// A backend that fails does not fail the whole batch, and a number that
// overflows fails alone: every other number is answered, and the client
// gets each failed number with the backend that failed it and its error,
// in the transport's partial answer (answers in codec "xyz.result/3").
// The middle layer serves the service "middle" and requires "x", "y" and
// "z" of the addresses given for them: a wrong address is refused at the
// handshake, naming both services.
// The client decides what to do with them: by default it stops with an
// error naming the number and the backend; with -partial it prints them in
// place.
//
// Before it serves, it checks every replica with an empty call. It logs one
// line, "middle ready" with the address it bound, when it is ready to
// serve; before it, one Warn line per replica that could not be reached
// (msg="fanout: replica failed its check; ejected" route=y
// replica=127.0.0.1:7002 err=...), which takes no calls until a probe
// succeeds. At the default level (INFO) it logs, once each, with the
// route and the replica's address: a replica ejected (Warn, "fanout:
// replica ejected", with its failures in a row, the ejection time and the
// last error: a lost connection shows here, as the calls that fail on it),
// a replica readmitted (Info, "fanout: replica readmitted"), and calls
// refused past -max-inflight (Warn, "fanout: limiter shed load", at most
// once a second with their count). The transport's own lines (dial
// failures at Debug level) go to the same log.
//
// Tail tolerance. The middle layer gives its routes a deadline a margin
// earlier than the call's (a tenth of the time left, at most 250ms; see
// fanout.WithDeadlineMargin), so that a call with a deadline is answered
// before it with what came back: a route that has not answered by then
// fails its numbers with an error naming the route and the deadline
// ("the route's deadline passed, 100ms before the call's"), and the client
// gets the others' answers (with -partial) or that error. With -hedge,
// each route's balancer hedges: a call a replica has not answered after
// the route's recent p95 latency goes to another replica as well, the
// first answer wins and the other call is cancelled, within 5% more calls
// (fanout.WithHedging); it logs "hedges" with the counts per route when it
// stops. With -fallback-x ADDRS, x's numbers go to a fallback x backend
// while every replica of x is down or ejected, labelled "x-fallback" in
// the answers (fanout.WithFailover). With -shadow-x ADDRS, -shadow-fraction
// of x's calls are mirrored to a candidate x backend and its answers
// compared number by number, never returned (fanout.Shadow): mismatches
// are logged ("fanout: shadow mismatch", with a sample) at most once a
// second, and "shadow summary" with the counts when it stops. The same
// flags exist for y and z.
//
// With -http ADDR it also serves an HTTP/JSON gateway over its own router,
// in process: POST /v1/process takes a JSON array of integers (or NDJSON,
// a number per line, streamed in chunks) and answers as client -json
// prints, GET /v1/routes describes the routing table (see package
// examples/internal/gateway and its openapi.json, and examples/README.md).
// It logs "middle http ready" with the address it bound.
//
// Usage:
//
//	middle [-listen ADDR] [-x ADDRS] [-y ADDRS] [-z ADDRS] [-grace D]
//	  [-max-inflight N] [-batch N] [-batch-calls N] [-max-calls N]
//	  [-max-conns N] [-max-request-mb N] [-log-level LEVEL]
//	  [-http ADDR] [-http-max-body-mb N] [-http-max-requests N]
//	  [-hedge] [-hedge-quantile Q] [-hedge-budget F] [-fallback-x ADDRS] [-fallback-y ADDRS] [-fallback-z ADDRS]
//	  [-shadow-x ADDRS] [-shadow-y ADDRS] [-shadow-z ADDRS] [-shadow-fraction F]
//	  [-tls-cert FILE -tls-key FILE -tls-ca FILE]
//
// Flags:
//
//	-listen ADDR      address to listen on (default 127.0.0.1:7000; port 0 picks a free one)
//	-x ADDRS          address of the x backend, or a comma-separated list of
//	                  addresses of its replicas (default 127.0.0.1:7001)
//	-y ADDRS          the same for y (default 127.0.0.1:7002)
//	-z ADDRS          the same for z (default 127.0.0.1:7003)
//	-grace D          on SIGINT or SIGTERM, how long to let calls in flight finish
//	                  before closing (default 5s); the program then exits with status 0
//	-max-inflight N   calls in flight per route, over all its replicas (default
//	                  1024); past it, the route's numbers fail at once with an
//	                  error that says "overloaded"
//	-batch N          most numbers per call to a backend (default 65536): calls
//	                  to a route that arrive while its backend is busy are merged
//	                  up to N, and a larger call is cut into chunks of N sent
//	                  in parallel; -1 turns merging and cutting off
//	-batch-calls N    calls per route the merging keeps in flight at once (default 4)
//	-max-calls N      calls in flight per connection (default 1024): from one
//	                  client, more are refused at once as overloaded; to one
//	                  backend replica, more fail at once (and go to another replica)
//	-max-conns N      connections from clients served at once (default 1024); a
//	                  client past it is refused in the handshake with a message
//	                  naming the limit
//	-max-request-mb N MiB of requests from clients held at once (default 16);
//	                  more wait until earlier calls answer, the larger ones
//	                  holding only their header: the middle layer's memory
//	                  follows this bound (40-120 MiB plus ten times it at peak), not the
//	                  number of clients sending at once
//	-log-level LEVEL  least important level logged: DEBUG, INFO, WARN or ERROR (default INFO)
//	-http ADDR        also serve the HTTP/JSON gateway on ADDR (off when not
//	                  given): POST /v1/process takes a JSON array of integers,
//	                  or NDJSON, and answers as client -json prints; GET
//	                  /v1/routes describes the routing table; logs
//	                  "middle http ready" with the address it bound
//	-http-max-body-mb N  MiB a JSON request body may hold (default 1); past it,
//	                  413. NDJSON streams are not bounded: they stream in chunks
//	-http-max-requests N  HTTP requests served at once (default 64); past it, 503
//	-hedge            hedge each route's calls on another replica after the route's
//	                  recent p95 latency, within 5% more calls (off by default)
//	-hedge-quantile Q with -hedge, the quantile of the recent latencies after which
//	                  a call is hedged (default 0.95)
//	-hedge-budget F   with -hedge, the share of a route's calls that may be hedged
//	                  (default 0.05)
//	-fallback-x ADDRS addresses of a fallback x backend's replicas: it answers x's
//	                  numbers, labelled x-fallback, while every replica of x is
//	                  down or ejected (off when not given); -fallback-y and
//	                  -fallback-z the same for y and z
//	-shadow-x ADDRS   addresses of a candidate x backend's replicas: -shadow-fraction
//	                  of x's calls are mirrored to it and compared, the answers
//	                  never returned (off when not given); -shadow-y and -shadow-z
//	                  the same for y and z
//	-shadow-fraction F  share of a shadowed route's calls mirrored, in (0, 1] (default 1)
//	-tls-cert FILE    with -tls-key and -tls-ca: speak mutual TLS, with this
//	-tls-key FILE     certificate and key both to serve clients and to call x,
//	-tls-ca FILE      y and z, trusting only peers whose certificate the CA in
//	                  -tls-ca signed (the three go together; see examples/README.md)
//
// Exit status: 0 after a shutdown, 1 if it could not listen or serve, 2 for
// bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/gateway"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// about is the first line of -h: what the program does.
const about = "middle is the router: it sends each number to its backend (x, y or z) and answers in input order."

func main() {
	os.Exit(run())
}

// addrList returns the parser of a flag that sets the replicas of route in
// m: a comma-separated list of host:port, dns:NAME:PORT, srv:NAME or
// file:PATH.
func addrList(m map[string][]string, route string) func(string) error {
	return func(s string) error {
		addrs := strings.Split(s, ",")
		for i, a := range addrs {
			addrs[i] = strings.TrimSpace(a)
			if addrs[i] == "" {
				return fmt.Errorf("empty address in %q", s)
			}
			kind, _, _ := strings.Cut(addrs[i], ":")
			if kind == "dns" || kind == "srv" || kind == "file" {
				if _, err := transport.ParseTarget(addrs[i], nil); err != nil {
					return err
				}
				continue
			}
			if err := node.CheckAddr(addrs[i], false); err != nil {
				return err
			}
		}
		m[route] = addrs
		return nil
	}
}

func run() int {
	fs := flag.NewFlagSet("middle", flag.ExitOnError)
	node.SetUsage(fs, about)
	var f node.Flags
	f.Register(fs, "127.0.0.1:7000")
	cfg := node.MiddleConfig{Replicas: map[string][]string{}, Fallback: map[string][]string{}, Shadow: map[string][]string{}}
	for i, route := range xyz.Routes() {
		fs.Func(route, fmt.Sprintf("`replicas` of the %s backend, comma-separated: host:port, or dns:NAME:PORT (every A/AAAA record of NAME), srv:NAME (its SRV records) or file:PATH (a file of host:port lines), resolved again every -resolve-every (default 127.0.0.1:%d)", route, 7001+i), addrList(cfg.Replicas, route))
		cfg.Replicas[route] = []string{fmt.Sprintf("127.0.0.1:%d", 7001+i)}
	}
	for _, route := range xyz.Routes() {
		fs.Func("fallback-"+route, fmt.Sprintf("`addresses` of the replicas of a fallback %s backend, comma-separated: it answers %s's numbers, labelled %s, while every replica of %s is down or ejected (off when not given)",
			route, route, xyz.FallbackRoute(route), route), addrList(cfg.Fallback, route))
	}
	for _, route := range xyz.Routes() {
		fs.Func("shadow-"+route, fmt.Sprintf("`addresses` of the replicas of a candidate %s backend, comma-separated: -shadow-fraction of %s's calls are mirrored to it and its answers compared, logged, never returned (off when not given)",
			route, route), addrList(cfg.Shadow, route))
	}
	fs.DurationVar(&cfg.ResolveEvery, "resolve-every", transport.DefaultResolveEvery,
		"how often replicas given as dns:, srv: or file: are resolved again (also soon after a call finds a replica unavailable)")
	fs.BoolVar(&cfg.Hedge, "hedge", false,
		"hedge each route's calls: a call a replica has not answered after the route's recent p95 latency goes to another replica too, within 5% more calls")
	fs.Float64Var(&cfg.HedgeQuantile, "hedge-quantile", fanout.DefaultHedgeQuantile,
		"with -hedge, the quantile of a route's recent latencies after which a call is hedged, in (0, 1)")
	fs.Float64Var(&cfg.HedgeBudget, "hedge-budget", fanout.DefaultHedgeBudget,
		"with -hedge, the share of a route's calls that may be hedged, in (0, 1]")
	fs.Float64Var(&cfg.ShadowFraction, "shadow-fraction", 1, "share of a shadowed route's calls mirrored to its candidate, in (0, 1]")
	fs.IntVar(&cfg.MaxInFlight, "max-inflight", node.DefaultMaxInFlight,
		"calls in flight per route, over all its replicas; past it, the route's numbers fail at once as overloaded")
	fs.IntVar(&cfg.Batch, "batch", node.DefaultBatch,
		"most numbers per call to a backend: concurrent calls to a route are merged up to it, larger ones cut into chunks of it; -1 for neither")
	fs.IntVar(&cfg.BatchCalls, "batch-calls", node.DefaultBatchCalls,
		"calls per route that merging keeps in flight at once")
	var httpAddr string
	node.AddrVar(fs, &httpAddr, "http", "",
		"`address` to serve the HTTP/JSON gateway on, host:port (port 0 picks a free port); off when not given", true)
	maxBodyMB := fs.Int64("http-max-body-mb", gateway.DefaultMaxBodyBytes>>20,
		"MiB a JSON request body to the HTTP gateway may hold; past it, 413 (NDJSON streams are not bounded: they stream)")
	fs.IntVar(&cfg.HTTP.MaxRequests, "http-max-requests", gateway.DefaultMaxRequests,
		"HTTP requests served at once; past it, 503 at once")
	log, opts := f.Parse(fs, os.Args[1:])
	if cfg.ResolveEvery <= 0 {
		node.Usage(fs, "-resolve-every must be positive")
	}
	if cfg.MaxInFlight < 1 {
		node.Usage(fs, "-max-inflight must be at least 1")
	}
	if cfg.Batch == 0 || cfg.Batch < -1 {
		node.Usage(fs, "-batch must be at least 1, or -1 to turn merging off")
	}
	if cfg.BatchCalls < 1 {
		node.Usage(fs, "-batch-calls must be at least 1")
	}
	if !(cfg.HedgeQuantile > 0 && cfg.HedgeQuantile < 1) {
		node.Usage(fs, "-hedge-quantile must be in (0, 1), not %v", cfg.HedgeQuantile)
	}
	if !(cfg.HedgeBudget > 0 && cfg.HedgeBudget <= 1) {
		node.Usage(fs, "-hedge-budget must be in (0, 1], not %v", cfg.HedgeBudget)
	}
	if !(cfg.ShadowFraction > 0 && cfg.ShadowFraction <= 1) {
		node.Usage(fs, "-shadow-fraction must be in (0, 1], not %v", cfg.ShadowFraction)
	}
	if *maxBodyMB < 1 {
		node.Usage(fs, "-http-max-body-mb must be at least 1")
	}
	if cfg.HTTP.MaxRequests < 1 {
		node.Usage(fs, "-http-max-requests must be at least 1")
	}
	cfg.HTTP.MaxBodyBytes = *maxBodyMB << 20

	cfg.Log = log
	m, err := node.NewMiddle(cfg, opts)
	if err != nil {
		log.Error("middle failed", "err", err)
		return 1
	}
	if opts.Admin != nil {
		m.Balancers(func(route string, b *fanout.Balancer[int64, int64]) { opts.Admin.AddRoute(route, b.Replicas) })
	}
	// Each replica that cannot be reached is logged, and served around;
	// the middle layer starts all the same.
	m.Check(context.Background())
	if httpAddr != "" {
		l, err := net.Listen("tcp", httpAddr)
		if err != nil {
			m.Close()
			log.Error("middle failed", "err", err)
			return 1
		}
		log.Info("middle http ready", "addr", l.Addr().String())
		m.StartHTTP(l, log)
	}
	return node.Main(log, "middle", m, f, opts)
}
