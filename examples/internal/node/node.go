package node

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/admin"
	"github.com/seed-c94cd834/fanout/examples/internal/gateway"
	"github.com/seed-c94cd834/fanout/examples/internal/tlsflags"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// Server is what [Run] needs of a server; *transport.Server and [*Middle]
// are Servers.
type Server interface {
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
}

// BackendConfig describes a backend server.
type BackendConfig struct {
	Route string        // "x", "y" or "z"
	Delay time.Duration // how long a delayed call waits before it is processed; 0 for no wait

	// DelayFraction is the share of calls that get the Delay, drawn at
	// random per call: 0.05 delays about one call in 20. It must be between
	// 0 and 1. The zero value means 1, every call, so that a config that
	// sets only Delay delays every call; to delay no call, leave Delay 0.
	DelayFraction float64

	Log *slog.Logger // where delayed calls are logged (see [NewBackend]); nil for nowhere
}

// NewBackend returns a server for the backend of cfg.Route, speaking int64
// both ways.
//
// With a Delay, each call (or, with a DelayFraction, that share of the
// calls, at random) waits that long before it is processed, as a slow
// backend would; a call cancelled or past its deadline during the wait
// fails at once with its context's error. The start of each wait is logged
// at Debug level (msg="call delayed"), and a call that ends during it at
// Info level (msg="call cancelled", with the error and the time waited), so
// that a test can see that a call, and its cancellation, reached the
// backend; a call that is not delayed logs nothing. A DelayFraction below 0,
// above 1 or NaN is an error.
func NewBackend(cfg BackendConfig, opts ...transport.ServerOption) (*transport.Server[int64, int64], error) {
	b, err := xyz.Backend(cfg.Route)
	if err != nil {
		return nil, err
	}
	fraction := cfg.DelayFraction
	if !(fraction >= 0 && fraction <= 1) { // NaN too
		return nil, fmt.Errorf("node: DelayFraction %v is not between 0 and 1", fraction)
	}
	if fraction == 0 {
		fraction = 1
	}
	if cfg.Delay > 0 {
		log := cfg.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		b = delay(b, cfg.Delay, fraction, log)
	}
	return transport.NewServer(b, transport.Int64(), transport.Int64(), append(slices.Clip(opts), transport.WithService(cfg.Route))...), nil
}

// delay returns a backend that waits d before passing a call to b, for a
// share fraction of the calls drawn at random per call (0 none, 1 every
// call); see [NewBackend].
func delay(b fanout.Backend[int64, int64], d time.Duration, fraction float64, log *slog.Logger) fanout.Backend[int64, int64] {
	return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		if fraction < 1 && rand.Float64() >= fraction { // Float64 is in [0, 1)
			return b.Process(ctx, items)
		}
		log.Debug("call delayed", "numbers", len(items), "delay", d)
		start := time.Now()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return b.Process(ctx, items)
		case <-ctx.Done():
			log.Info("call cancelled", "numbers", len(items), "err", ctx.Err(), "waited", time.Since(start).Round(time.Millisecond))
			return nil, ctx.Err()
		}
	})
}

// DefaultMaxInFlight is the default bound on the calls a middle layer has in
// flight per route. It is far above what the example load needs (loadgen's
// 64 callers by default), and no more than a transport connection carries
// by default ([transport.DefaultMaxCalls]), so that a flood of calls is
// refused by the middle layer, naming the route, before it reaches a
// backend.
const DefaultMaxInFlight = 1024

// MiddleConfig describes a middle layer.
type MiddleConfig struct {
	// Replicas maps each route of [xyz.Routes] to its backend's replicas,
	// one or more items, each an address (host:port) or a name to resolve:
	// "dns:NAME:PORT" (every A/AAAA record of NAME), "srv:NAME" (the SRV
	// records of NAME) or "file:PATH" (a file of addresses, a line each).
	// Items that are all addresses are a fixed set; otherwise the set is
	// resolved again every ResolveEvery, and soon after a call fails
	// unavailable, replicas joining and draining as it changes (see
	// [transport.Watch]). Fallback and Shadow take the same items.
	Replicas map[string][]string

	// ResolveEvery is how often a route given names is resolved again; 0
	// means [transport.DefaultResolveEvery].
	ResolveEvery time.Duration

	// Resolver looks up dns: and srv: names; nil means net.DefaultResolver.
	// (Tests point it at a DNS server of their own.)
	Resolver *net.Resolver

	// MaxInFlight bounds the calls in flight per route; a call past it fails
	// at once with an error wrapping [fanout.ErrOverloaded]. 0 means
	// [DefaultMaxInFlight].
	MaxInFlight int

	// Batch is the most numbers the middle layer sends a backend in one
	// call: concurrent calls to a route are merged up to it, and a larger
	// one is cut into chunks of it (see [fanout.Batcher]). 0 means
	// [DefaultBatch]; a negative value turns merging and cutting off.
	Batch int

	// BatchCalls bounds the calls per route that the batcher has in flight
	// at once; calls that arrive while all are busy are merged. 0 means
	// [DefaultBatchCalls].
	BatchCalls int

	// Hedge makes each route's balancer hedge its calls: a call a replica
	// has not answered after the route's recent p95 latency goes to
	// another replica too, the first answer wins and the other call is
	// cancelled, within a budget of 5% of the route's calls (see
	// [fanout.WithHedging]). It pays with two or more replicas.
	Hedge bool

	// HedgeQuantile and HedgeBudget set the quantile after which a call is
	// hedged and the share of calls that may be, under Hedge; 0 means
	// fanout.DefaultHedgeQuantile (0.95) and fanout.DefaultHedgeBudget
	// (0.05).
	HedgeQuantile, HedgeBudget float64

	// Fallback maps a route to the addresses of the replicas of its
	// fallback: a backend of the same service (x for route x) that
	// answers the route's numbers when every replica of the route is down
	// or ejected (see [fanout.WithFailover]). The numbers it answers are
	// labelled with the fallback route's name, [xyz.FallbackRoute] of the
	// route ("x-fallback"), so the client's output says who answered. A
	// route without an entry has no fallback.
	Fallback map[string][]string

	// Shadow maps a route to the addresses of the replicas of a candidate
	// backend of the same service, to which ShadowFraction of the route's
	// calls are mirrored and whose answers are compared with the route's,
	// number by number, never reaching the client (see [fanout.Shadow]).
	// Mismatches and the candidate's failures are logged, at most once a
	// second each, with route= and a sample; a summary of the counts is
	// logged when the middle layer stops.
	Shadow map[string][]string

	// ShadowFraction is the share of a shadowed route's calls mirrored to
	// its candidate, in (0, 1]; 0 means 1, every call.
	ShadowFraction float64

	// HTTP are the limits of the middle layer's HTTP/JSON gateway, which
	// [Middle.StartHTTP] serves (see package gateway).
	HTTP HTTPConfig

	// Log is where each route's balancer and limiter log, with route= in
	// every line: a replica's ejection (Warn), its readmission (Info), a
	// replica that failed [Middle.Check] (Warn), and calls refused past
	// MaxInFlight (Warn, at most once a second); see
	// [fanout.WithBalancerLogger] and [fanout.WithLimiterLogger]. Replicas
	// are named by their addresses. nil logs nothing.
	Log *slog.Logger
}

// HTTPConfig are the limits of the middle layer's HTTP/JSON gateway.
type HTTPConfig struct {
	// MaxBodyBytes bounds a JSON request body (413 past it); 0 means
	// [gateway.DefaultMaxBodyBytes].
	MaxBodyBytes int64

	// MaxRequests bounds the HTTP requests served at once (503 past it); 0
	// means [gateway.DefaultMaxRequests].
	MaxRequests int
}

// Timeouts of the middle layer's HTTP server. A request's body and answer
// are bounded by the gateway itself (a stream must make progress every
// [gateway.StallTimeout]), not by a timeout of the whole request, so that
// a long NDJSON stream may go on.
const (
	HTTPReadHeaderTimeout = 5 * time.Second
	HTTPIdleTimeout       = 2 * time.Minute
	HTTPMaxHeaderBytes    = 64 << 10
)

// Defaults of the batcher in front of each route; see [fanout.Batcher].
const (
	DefaultBatch      = 65536 // the Batcher's default too
	DefaultBatchCalls = 4
)

// Middle is the middle layer: a [fanout.Router] that classifies numbers with
// [xyz.Classify] and sends each route's numbers to the replicas of its
// backend, served over the transport with int64 requests and [xyz.Result]
// answers.
//
// Each route is a [fanout.Balancer] over clients of its replicas, built
// [fanout.WithIdempotent] (x, y and z are pure functions, so a call cut off
// by a replica that died is safe to send to another), behind a
// [fanout.Batcher] that merges concurrent calls (and cuts large ones into
// chunks), behind a [fanout.Limiter] of MaxInFlight calls, which also
// bounds the batcher's queue. The router is built
// [fanout.WithPartialResults] and wrapped in [xyz.PerItem]: a route that
// fails does not fail the call, its numbers are answered with the route's
// error, and the client decides what a failure means.
type Middle struct {
	server     *transport.Server[int64, xyz.Result]
	backend    fanout.Backend[int64, xyz.Result] // what server serves
	routes     []gateway.Route
	gateway    http.Handler
	routeNames []string                         // of balancers
	balancers  []*fanout.Balancer[int64, int64] // one a route, fallbacks and candidates included
	clients    []*transport.Client[int64, int64]
	watchers   []*transport.Watcher[int64, int64]
	shadows    []*fanout.Shadow[int64, int64]
	shadowOf   []string // the route of each of shadows
	log        *slog.Logger

	resolver     *net.Resolver // MiddleConfig's
	resolveEvery time.Duration

	mu      sync.Mutex
	http    []*http.Server // those StartHTTP started
	closing sync.Once
}

var (
	_ Server = (*Middle)(nil)
	_ Server = (*transport.Server[int64, int64])(nil)
)

// Options are the transport options of a program: those of its server,
// and those of its clients (the middle layer's, of its backends).
type Options struct {
	Server []transport.ServerOption
	Client []transport.ClientOption
	Log    *slog.Logger // the program's logger, for what is not the transport's; nil for nowhere
	// Observer, if not nil, is told of the middle layer's work: its
	// router's calls and routes, its balancers' attempts (each balancer
	// named after its route) and its batchers' merged calls. (A server's
	// own calls are told by the transport.WithObserver in Server.)
	Observer fanout.Observer

	// Tracing is -trace-stdout's, nil without it: the program shuts it down
	// as it exits, so that every span is written.
	Tracing *Tracing

	// Admin is -admin's metrics, nil without it: it observes the server
	// (and the middle layer's router, balancers and batchers, see
	// Observer), and [Main] serves it on the admin address.
	Admin *admin.Metrics
}

// Both returns Options that give opts to the server and to the clients.
func Both(opts ...transport.Option) Options {
	var o Options
	for _, opt := range opts {
		o.Server = append(o.Server, opt)
		o.Client = append(o.Client, opt)
	}
	return o
}

// MiddleService is the service the middle layer serves, and its clients
// require (transport.WithService); each backend serves the service named
// after its route ("x", "y", "z"), which the middle layer requires of it.
const MiddleService = "middle"

// NewMiddle returns the middle layer cfg describes. It does not connect:
// each client connects on its first call, or on [Middle.Check]. opts.Server apply to the middle
// layer's server, opts.Client to its clients of the backends.
func NewMiddle(cfg MiddleConfig, opts Options) (*Middle, error) {
	m := &Middle{log: cfg.Log, resolver: cfg.Resolver, resolveEvery: cfg.ResolveEvery}
	if err := m.build(cfg, opts); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// build builds the routes, the router and the server of cfg into m.
func (m *Middle) build(cfg MiddleConfig, opts Options) error {
	for _, route := range xyz.Routes() {
		if _, ok := cfg.Replicas[route]; !ok {
			return fmt.Errorf("node: no replicas given for route %s", route)
		}
	}
	if len(cfg.Replicas) != len(xyz.Routes()) {
		return fmt.Errorf("node: replicas given for %d routes, want exactly %v", len(cfg.Replicas), xyz.Routes())
	}
	if !(cfg.ShadowFraction >= 0 && cfg.ShadowFraction <= 1) {
		return fmt.Errorf("node: ShadowFraction %v is not between 0 and 1", cfg.ShadowFraction)
	}
	routes := make(map[string]fanout.Backend[int64, int64])
	var routerOpts []fanout.RouterOption
	for _, route := range xyz.Routes() {
		addrs, ok := cfg.Replicas[route]
		if !ok {
			return fmt.Errorf("node: no replicas given for route %s", route)
		}
		entry := gateway.Route{Name: route, Replicas: slices.Clone(addrs), Shadow: slices.Clone(cfg.Shadow[route])}
		be, err := m.route(route, route, addrs, cfg, opts)
		if err != nil {
			return err
		}
		if len(cfg.Shadow[route]) > 0 {
			candidate, err := m.balancer(route, route+" shadow", cfg.Shadow[route], nil, opts)
			if err != nil {
				return err
			}
			sh, err := fanout.NewShadow(be, fanout.Backend[int64, int64](candidate), func(a, b int64) bool { return a == b },
				fanout.WithShadowFraction(cmp.Or(cfg.ShadowFraction, 1)), fanout.WithShadowLogger(m.logger(route)))
			if err != nil {
				return fmt.Errorf("node: route %s: %w", route, err)
			}
			m.shadows = append(m.shadows, sh)
			m.shadowOf = append(m.shadowOf, route)
			be = sh
		}
		routes[route] = xyz.Label(route, be)
		if addrs := cfg.Fallback[route]; len(addrs) > 0 {
			fb := xyz.FallbackRoute(route)
			entry.Fallback = fb
			be, err := m.route(route, fb, addrs, cfg, opts)
			if err != nil {
				return err
			}
			routes[fb] = xyz.Label(fb, be)
			routerOpts = append(routerOpts, fanout.WithFailover(route, fb))
			m.routes = append(m.routes, entry, gateway.Route{Name: fb, Replicas: slices.Clone(addrs)})
			continue
		}
		m.routes = append(m.routes, entry)
	}
	for route := range cfg.Fallback {
		if _, ok := cfg.Replicas[route]; !ok {
			return fmt.Errorf("node: fallback given for unknown route %q", route)
		}
	}
	for route := range cfg.Shadow {
		if _, ok := cfg.Replicas[route]; !ok {
			return fmt.Errorf("node: shadow given for unknown route %q", route)
		}
	}
	if opts.Observer != nil {
		routerOpts = append(routerOpts, fanout.WithObserver(opts.Observer))
	}
	router, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes,
		append(routerOpts, fanout.WithPartialResults())...)
	if err != nil {
		return err
	}
	m.backend = xyz.PerItem(router)
	m.server = transport.NewServer(m.backend, transport.Int64(), xyz.ResultCodec(), append(slices.Clip(opts.Server), transport.WithService(MiddleService))...)
	m.gateway = gateway.New(gateway.Config{
		Backend:      m.backend,
		Routes:       m.routes,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		MaxRequests:  cfg.HTTP.MaxRequests,
		Log:          opts.Log,
	})
	return nil
}

// route returns the backend of a route of the router, name (the route
// itself, or its fallback), whose replicas at addrs serve service: a
// Limiter of cfg.MaxInFlight calls, around a Batcher unless cfg turns
// merging off, around a Balancer of transport clients.
func (m *Middle) route(service, name string, addrs []string, cfg MiddleConfig, opts Options) (fanout.Backend[int64, int64], error) {
	b, err := m.balancer(service, name, addrs, &cfg, opts)
	if err != nil {
		return nil, err
	}
	var be fanout.Backend[int64, int64] = b
	if cfg.Batch >= 0 {
		bt, err := fanout.NewBatcher(be,
			fanout.WithMaxBatch(cmp.Or(cfg.Batch, DefaultBatch)),
			fanout.WithConcurrency(cmp.Or(cfg.BatchCalls, DefaultBatchCalls)),
			fanout.WithBatcherObserver(opts.Observer))
		if err != nil {
			return nil, fmt.Errorf("node: route %s: %w", name, err)
		}
		be = bt
	}
	l, err := fanout.NewLimiter(be, cmp.Or(cfg.MaxInFlight, DefaultMaxInFlight), fanout.WithLimiterLogger(m.logger(name)))
	if err != nil {
		return nil, fmt.Errorf("node: route %s: %w", name, err)
	}
	return l, nil
}

// balancer returns a balancer, logging as route name, over clients of the
// replicas at addrs, each of which must serve service, hedging as cfg says
// (none if cfg is nil), and records it.
func (m *Middle) balancer(service, name string, addrs []string, cfg *MiddleConfig, opts Options) (*fanout.Balancer[int64, int64], error) {
	// The client requires the route's service: a wrong address is refused
	// at the handshake, never answered by another backend.
	dial := func(addr string) *transport.Client[int64, int64] {
		return transport.NewClient(addr, transport.Int64(), transport.Int64(), append(slices.Clip(opts.Client), transport.WithService(service))...)
	}
	bopts := []fanout.BalancerOption{fanout.WithIdempotent(),
		fanout.WithBalancerLogger(m.logger(name)),
		fanout.WithBalancerName(name), fanout.WithBalancerObserver(opts.Observer)}
	if cfg != nil && cfg.Hedge {
		bopts = append(bopts, fanout.WithHedging(cmp.Or(cfg.HedgeQuantile, fanout.DefaultHedgeQuantile), cmp.Or(cfg.HedgeBudget, fanout.DefaultHedgeBudget)))
	}
	resolver, err := transport.ParseTarget(strings.Join(addrs, ","), m.resolver)
	if err != nil {
		return nil, fmt.Errorf("node: route %s: %w", name, err)
	}
	var b *fanout.Balancer[int64, int64]
	if static, ok := resolver.(transport.Static); ok {
		var replicas []fanout.Backend[int64, int64]
		for _, addr := range static {
			c := dial(addr)
			m.clients = append(m.clients, c)
			replicas = append(replicas, c)
		}
		b, err = fanout.NewBalancer(replicas, append(bopts, fanout.WithReplicaNames(static...))...)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var w *transport.Watcher[int64, int64]
		w, err = transport.Watch(ctx, resolver, func(addr string) fanout.Backend[int64, int64] { return dial(addr) },
			transport.WatchConfig{Every: m.resolveEvery, Log: m.logger(name)}, bopts...)
		cancel()
		if err == nil {
			m.watchers = append(m.watchers, w)
			b = w.Balancer()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("node: route %s: %w", name, err)
	}
	m.routeNames = append(m.routeNames, name)
	m.balancers = append(m.balancers, b)
	return b, nil
}

// logger returns the middle layer's logger for route name, or nil.
func (m *Middle) logger(name string) *slog.Logger {
	if m.log == nil {
		return nil
	}
	return m.log.With("route", name)
}

// Balancers calls fn with each balancer of the middle layer and the name
// of its route ("x", "x-fallback", "x shadow"), in the order of the routes.
func (m *Middle) Balancers(fn func(route string, b *fanout.Balancer[int64, int64])) {
	for i, b := range m.balancers {
		fn(m.routeNames[i], b)
	}
}

// Backend returns the middle layer's backend in process: what its server
// serves, and its HTTP gateway calls.
func (m *Middle) Backend() fanout.Backend[int64, xyz.Result] { return m.backend }

// Routes returns the routing table: each route and its replicas' addresses.
func (m *Middle) Routes() []gateway.Route { return m.routes }

// Gateway returns the middle layer's HTTP/JSON gateway, over its backend in
// process (no extra hop), with the limits of [MiddleConfig.HTTP].
func (m *Middle) Gateway() http.Handler { return m.gateway }

// StartHTTP serves the HTTP/JSON gateway ([Middle.Gateway]) on l until the
// middle layer shuts down or closes, with the timeouts and limits a public
// endpoint needs (HTTPReadHeaderTimeout, HTTPIdleTimeout,
// HTTPMaxHeaderBytes, and the gateway's own). log gets the HTTP server's
// errors.
func (m *Middle) StartHTTP(l net.Listener, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hs := &http.Server{
		Handler:           m.gateway,
		ReadHeaderTimeout: HTTPReadHeaderTimeout,
		IdleTimeout:       HTTPIdleTimeout,
		MaxHeaderBytes:    HTTPMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	m.mu.Lock()
	m.http = append(m.http, hs)
	m.mu.Unlock()
	go func() {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server failed", "err", err)
		}
	}()
}

// httpServers returns the servers StartHTTP started.
func (m *Middle) httpServers() []*http.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.http)
}

// Check probes every replica of every route at once, each with an empty
// call (which connects to it), and takes those that fail out of service
// until a later probe shows that they are back (see [fanout.Balancer.Check]).
// Each is logged once, at Warn level, with its route and address, and its
// readmission at Info level. It returns the failures joined, each naming
// its route and replica. A middle layer serves whatever Check returns: a
// route whose every replica failed fails its calls at once, each of which
// probes them again. It takes at most the probe timeout, 1s.
func (m *Middle) Check(ctx context.Context) error {
	errs := make([]error, len(m.balancers))
	var wg sync.WaitGroup
	for i, b := range m.balancers {
		wg.Go(func() {
			if err := b.Check(ctx); err != nil {
				errs[i] = fmt.Errorf("route %s: %w", m.routeNames[i], err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Serve serves the middle layer on l; see [transport.Server.Serve].
func (m *Middle) Serve(l net.Listener) error { return m.server.Serve(l) }

// Shutdown stops the middle layer gracefully, its HTTP gateway with it,
// then stops its balancers' probes and closes its clients; see
// [transport.Server.Shutdown] and [http.Server.Shutdown]. HTTP requests
// still in flight when ctx ends are cut off.
func (m *Middle) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, hs := range m.httpServers() {
		wg.Go(func() {
			if hs.Shutdown(ctx) != nil {
				hs.Close()
			}
		})
	}
	err := m.server.Shutdown(ctx)
	wg.Wait()
	m.close()
	return err
}

// Close stops the middle layer at once, its HTTP gateway with it, then its
// balancers' probes, and closes its clients. It is idempotent.
func (m *Middle) Close() error {
	for _, hs := range m.httpServers() {
		hs.Close()
	}
	err := m.server.Close()
	m.close()
	return err
}

// close stops the shadows and the balancers' probes, closes the clients
// and logs what hedging and the shadows did.
func (m *Middle) close() {
	m.closing.Do(func() {
		for _, sh := range m.shadows {
			sh.Close()
		}
		for _, b := range m.balancers {
			b.Close()
		}
		for _, w := range m.watchers {
			w.Close()
		}
		for _, c := range m.clients {
			c.Close()
		}
		m.summary()
	})
}

// summary logs, once the middle layer has stopped, each route's hedges (if
// it hedged any) and each shadow's counts.
func (m *Middle) summary() {
	if m.log == nil {
		return
	}
	for i, b := range m.balancers {
		if h := b.Hedges(); h.Sent > 0 || h.OverBudget > 0 {
			m.log.Info("hedges", "route", m.routeNames[i], "calls", h.Calls, "sent", h.Sent, "won", h.Won, "over_budget", h.OverBudget, "delay", h.Delay)
		}
	}
	for i, sh := range m.shadows {
		st := sh.Stats()
		m.log.Info("shadow summary", "route", m.shadowOf[i], "mirrored", st.Mirrored, "dropped", st.Dropped,
			"matches", st.Matches, "mismatches", st.Mismatches, "errors", st.Errors)
	}
}

// Run listens on addr, logs "<name> ready" with the address it bound, and
// serves srv until ctx is done. Then it shuts srv down, giving the calls in
// flight up to grace to finish. It returns nil after a shutdown, or the error
// that kept it from listening or serving.
func Run(ctx context.Context, log *slog.Logger, name string, srv Server, addr string, grace time.Duration) error {
	return run(ctx, log, name, srv, addr, grace, nil)
}

// run is Run, calling serving, if not nil, once it listens.
func run(ctx context.Context, log *slog.Logger, name string, srv Server, addr string, grace time.Duration, serving func()) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		return err
	}
	if serving != nil {
		serving()
	}
	log.Info(name+" ready", "addr", l.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	select {
	case err := <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info(name+" shutting down", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("grace period over: calls still in flight were cancelled", "err", err)
	}
	if err := <-served; !errors.Is(err, transport.ErrServerClosed) {
		return err
	}
	log.Info(name + " stopped")
	return nil
}

// Flags are the command-line flags every server program has.
type Flags struct {
	Listen    string         // -listen: address to listen on
	Grace     time.Duration  // -grace: how long a shutdown waits for calls in flight
	MaxCalls  int            // -max-calls: calls in flight per connection
	MaxConns  int            // -max-conns: connections served at once
	MaxMemMB  int64          // -max-request-mb: MiB of requests held at once
	LogLevel  slog.Level     // -log-level: the least important level logged
	LogFormat string         // -log-format: "text" or "json"
	Admin     string         // -admin: address of the admin endpoint; "" for none
	Trace     bool           // -trace-stdout: write spans to standard output
	TLS       tlsflags.Flags // -tls-cert, -tls-key, -tls-ca: mutual TLS
}

// Register defines -listen, with defaultListen as its default (a value
// that is not host:port is bad usage; see [CheckAddr]), -grace,
// -max-calls, -max-conns, -max-request-mb, -log-level and the TLS flags on
// fs, storing their values in f.
func (f *Flags) Register(fs *flag.FlagSet, defaultListen string) {
	AddrVar(fs, &f.Listen, "listen", defaultListen, "`address` to listen on, host:port (port 0 picks a free port)", true)
	fs.DurationVar(&f.Grace, "grace", 5*time.Second, "on SIGINT or SIGTERM, how long to let calls in flight finish")
	fs.IntVar(&f.MaxCalls, "max-calls", transport.DefaultMaxCalls,
		"calls in flight per connection; past it, a call fails at once as overloaded")
	fs.IntVar(&f.MaxConns, "max-conns", transport.DefaultMaxConnections,
		"connections served at once; past it, a new connection is refused in the handshake, naming the limit")
	fs.Int64Var(&f.MaxMemMB, "max-request-mb", transport.DefaultMaxPendingBytes>>20,
		"MiB of requests held at once, over all connections; more wait for room (those over 64 KiB holding only their header)")
	fs.TextVar(&f.LogLevel, "log-level", slog.LevelInfo, "least important `level` logged: DEBUG, INFO, WARN or ERROR")
	fs.StringVar(&f.LogFormat, "log-format", "text", "`format` of the log lines on standard error: text (key=value) or json (one object a line)")
	fs.BoolVar(&f.Trace, "trace-stdout", false, "trace every call with OpenTelemetry: write each span, as it ends, as a JSON object a line to standard output; the trace context crosses to the backends, so one trace spans client, middle and backend")
	AddrVar(fs, &f.Admin, "admin", "", "`address` of the admin endpoint, host:port: /metrics, /healthz, /readyz, /debug/pprof/ and a status page at /; off when not given", true)
	f.TLS.Register(fs)
}

// Parse parses args with fs, which must use [flag.ExitOnError], for a
// program that takes flags only (see [ParseFlags]). It returns the
// program's logger, at -log-level, and the transport options the flags call
// for: for its server, that logger, -max-calls, -max-conns,
// -max-request-mb and TLS; for its clients, the logger, -max-calls and TLS.
// Bad usage, such as a -max-calls below 1 or a TLS flag without the others,
// exits with status 2.
func (f *Flags) Parse(fs *flag.FlagSet, args []string) (*slog.Logger, Options) {
	ParseFlags(fs, args)
	if f.MaxCalls < 1 {
		Usage(fs, "-max-calls must be at least 1")
	}
	if f.MaxConns < 1 {
		Usage(fs, "-max-conns must be at least 1")
	}
	if f.MaxMemMB < 1 {
		Usage(fs, "-max-request-mb must be at least 1")
	}
	tlsConfig, err := f.TLS.Config()
	if err != nil {
		Usage(fs, "%v", err)
	}
	if f.LogFormat != "text" && f.LogFormat != "json" {
		Usage(fs, "-log-format must be text or json, not %q", f.LogFormat)
	}
	log := NewLogger(f.LogLevel, f.LogFormat)
	both := []transport.Option{transport.WithLogger(log), transport.WithMaxConcurrentCalls(f.MaxCalls)}
	if tlsConfig != nil {
		both = append(both, transport.WithTLSConfig(tlsConfig))
	}
	var tracing *Tracing
	if f.Trace {
		var err error
		if tracing, err = NewTracing(fs.Name(), os.Stdout); err != nil {
			Usage(fs, "-trace-stdout: %v", err)
		}
		both = append(both, transport.WithPropagator(tracing.Propagator))
	}
	opts := Both(both...)
	opts.Log = log
	var observers []fanout.Observer
	if f.Admin != "" {
		opts.Admin = admin.NewMetrics()
		observers = append(observers, opts.Admin)
	}
	if tracing != nil {
		opts.Tracing = tracing
		observers = append(observers, tracing.Observer)
	}
	if o := fanout.JoinObservers(observers...); o != nil {
		opts.Observer = o
		opts.Server = append(opts.Server, transport.WithObserver(o))
	}
	opts.Server = append(opts.Server,
		transport.WithMaxConnections(f.MaxConns),
		transport.WithMaxPendingBytes(f.MaxMemMB<<20))
	return log, opts
}

// NewLogger returns the logger of the programs: to standard error, of
// level and above, as text (key=value) or, for format "json", a JSON
// object a line.
func NewLogger(level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// Main runs srv as the program called name: [Run] until SIGINT or SIGTERM.
// It returns the program's exit status: 0 after a shutdown, 1 if the server
// could not listen or serve.
func Main(log *slog.Logger, name string, srv Server, f Flags, opts Options) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.Tracing != nil {
		defer opts.Tracing.Shutdown(context.Background())
	}
	var serving atomic.Bool
	if f.Admin != "" {
		stopAdmin, err := StartAdmin(log, name, f.Admin, opts.Admin, func() error {
			switch {
			case ctx.Err() != nil:
				return admin.ErrDraining
			case !serving.Load():
				return errStarting
			}
			return nil
		})
		if err != nil {
			srv.Close()
			log.Error(name+" failed", "err", err)
			return 1
		}
		defer stopAdmin()
	}
	if err := run(ctx, log, name, srv, f.Listen, f.Grace, func() { serving.Store(true) }); err != nil {
		log.Error(name+" failed", "err", err)
		return 1
	}
	return 0
}

// errStarting is what /readyz says before the server listens.
var errStarting = errors.New("starting: not serving yet")

// StartAdmin serves the admin endpoint of the program called name (see
// package admin) on addr, with metrics m (nil for none) and ready for
// /readyz, and logs "<name> admin ready" with the address it bound. It
// returns the function that stops it.
func StartAdmin(log *slog.Logger, name, addr string, m *admin.Metrics, ready func() error) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-admin: %w", err)
	}
	hs := &http.Server{
		Handler:           admin.Handler(admin.Options{Program: name, Metrics: m, Ready: ready}),
		ReadHeaderTimeout: HTTPReadHeaderTimeout,
		IdleTimeout:       HTTPIdleTimeout,
		MaxHeaderBytes:    HTTPMaxHeaderBytes,
	}
	log.Info(name+" admin ready", "addr", l.Addr().String())
	go hs.Serve(l)
	return func() { hs.Close() }, nil
}

// BackendMain is the main function of the programs x, y and z: it parses
// args (the [Flags], with defaultListen as the default of -listen, -delay
// and -delay-fraction) and serves the backend of route until SIGINT or
// SIGTERM. summary is the first line of its usage message ([SetUsage]). It
// returns the exit status as [Main] does, or exits with status 2 for bad
// usage. -delay-fraction 0 delays no call (unlike a DelayFraction of 0,
// which means every call).
func BackendMain(route, summary, defaultListen string, args []string) int {
	fs := flag.NewFlagSet(route, flag.ExitOnError)
	SetUsage(fs, summary)
	var f Flags
	f.Register(fs, defaultListen)
	delay := fs.Duration("delay", 0, "how long a call waits before it is processed, as a slow backend would (every call, or the share -delay-fraction gives)")
	fraction := fs.Float64("delay-fraction", 1,
		"share of calls that -delay delays, at random per call, from 0 (none) to 1 (every call); without -delay it does nothing")
	log, opts := f.Parse(fs, args)
	if *delay < 0 {
		Usage(fs, "-delay must not be negative")
	}
	if !(*fraction >= 0 && *fraction <= 1) { // NaN too
		Usage(fs, "-delay-fraction must be between 0 and 1, not %v", *fraction)
	}
	d := *delay
	if *fraction == 0 {
		d = 0 // no call delayed; BackendConfig takes a DelayFraction of 0 as every call
	}
	srv, err := NewBackend(BackendConfig{Route: route, Delay: d, DelayFraction: *fraction, Log: log}, opts.Server...)
	if err != nil {
		log.Error(route+" failed", "err", err)
		return 1
	}
	return Main(log, route, srv, f, opts)
}

// SetUsage sets the usage message of fs, a program that takes flags only:
// summary, a line that says what the program does, then how to run it and
// its flags.
func SetUsage(fs *flag.FlagSet, summary string) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nusage: %s [flags]\n\nFlags:\n", summary, fs.Name())
		fs.PrintDefaults()
	}
}

// ParseFlags parses args with fs, which must use [flag.ExitOnError], for a
// program that takes flags only: it exits with status 2 if any argument is
// left over, as fs does for a bad flag.
func ParseFlags(fs *flag.FlagSet, args []string) {
	fs.Parse(args) // with ExitOnError, a bad flag exits
	if fs.NArg() > 0 {
		Usage(fs, "unexpected argument %q", fs.Arg(0))
	}
}

// Usage reports bad usage of the program of fs, as fs does for a bad flag:
// it prints the problem and the usage, then exits with status 2.
func Usage(fs *flag.FlagSet, format string, args ...any) {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	os.Exit(2)
}
