package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/balance"
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

// NewBackend returns a server for the backend of route "x", "y" or "z",
// speaking int64 both ways.
func NewBackend(route string, opts ...transport.Option) (*transport.Server[int64, int64], error) {
	b, err := xyz.Backend(route)
	if err != nil {
		return nil, err
	}
	return transport.NewServer(b, transport.Int64(), transport.Int64(), opts...), nil
}

// Middle is the middle layer: a [fanout.Router] that classifies numbers with
// [xyz.Classify] and sends each route's numbers to the replicas of its
// backend in turn, served over the transport with int64 requests and
// [xyz.Result] answers.
type Middle struct {
	server  *transport.Server[int64, xyz.Result]
	clients []*transport.Client[int64, int64]
}

var (
	_ Server = (*Middle)(nil)
	_ Server = (*transport.Server[int64, int64])(nil)
)

// NewMiddle returns a middle layer whose routes call the backends at the
// given addresses: replicas maps each route of [xyz.Routes] to one or more
// addresses. It does not connect: each client connects on its first call.
// opts apply to the server and to the clients.
func NewMiddle(replicas map[string][]string, opts ...transport.Option) (*Middle, error) {
	m := &Middle{}
	routes := make(map[string]fanout.Backend[int64, xyz.Result])
	for _, route := range xyz.Routes() {
		var backends []fanout.Backend[int64, int64]
		for _, addr := range replicas[route] {
			c := transport.NewClient(addr, transport.Int64(), transport.Int64(), opts...)
			m.clients = append(m.clients, c)
			backends = append(backends, c)
		}
		rr, err := balance.NewRoundRobin(backends...)
		if err != nil {
			m.closeClients()
			return nil, fmt.Errorf("node: route %s: %w", route, err)
		}
		routes[route] = xyz.Tag(route, rr)
	}
	if len(replicas) != len(routes) {
		m.closeClients()
		return nil, fmt.Errorf("node: replicas given for %d routes, want exactly %v", len(replicas), xyz.Routes())
	}
	router, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes)
	if err != nil {
		m.closeClients()
		return nil, err
	}
	m.server = transport.NewServer(router, transport.Int64(), xyz.ResultCodec(), opts...)
	return m, nil
}

// Serve serves the middle layer on l; see [transport.Server.Serve].
func (m *Middle) Serve(l net.Listener) error { return m.server.Serve(l) }

// Shutdown stops the middle layer gracefully, then closes its clients; see
// [transport.Server.Shutdown].
func (m *Middle) Shutdown(ctx context.Context) error {
	err := m.server.Shutdown(ctx)
	m.closeClients()
	return err
}

// Close stops the middle layer at once and closes its clients. It is
// idempotent.
func (m *Middle) Close() error {
	err := m.server.Close()
	m.closeClients()
	return err
}

func (m *Middle) closeClients() {
	for _, c := range m.clients {
		c.Close()
	}
}

// Run listens on addr, logs "<name> ready" with the address it bound, and
// serves srv until ctx is done. Then it shuts srv down, giving the calls in
// flight up to grace to finish. It returns nil after a shutdown, or the error
// that kept it from listening or serving.
func Run(ctx context.Context, log *slog.Logger, name string, srv Server, addr string, grace time.Duration) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		return err
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
	Listen string        // -listen: address to listen on
	Grace  time.Duration // -grace: how long a shutdown waits for calls in flight
}

// Register defines -listen, with defaultListen as its default, and -grace on
// fs, storing their values in f.
func (f *Flags) Register(fs *flag.FlagSet, defaultListen string) {
	fs.StringVar(&f.Listen, "listen", defaultListen, "`address` to listen on (port 0 picks a free port)")
	fs.DurationVar(&f.Grace, "grace", 5*time.Second, "on SIGINT or SIGTERM, how long to let calls in flight finish")
}

// NewLogger returns the logger of the programs: text to standard error.
func NewLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// Main runs srv as the program called name: [Run] until SIGINT or SIGTERM.
// It returns the program's exit status: 0 after a shutdown, 1 if the server
// could not listen or serve.
func Main(log *slog.Logger, name string, srv Server, f Flags) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, log, name, srv, f.Listen, f.Grace); err != nil {
		log.Error(name+" failed", "err", err)
		return 1
	}
	return 0
}

// BackendMain is the main function of the programs x, y and z: it parses
// args (-listen, with defaultListen as its default, and -grace) and serves
// the backend of route until SIGINT or SIGTERM. It returns the exit status
// as [Main] does, or exits with status 2 for bad usage.
func BackendMain(route, defaultListen string, args []string) int {
	fs := flag.NewFlagSet(route, flag.ExitOnError)
	var f Flags
	f.Register(fs, defaultListen)
	ParseFlags(fs, args)
	log := NewLogger()
	srv, err := NewBackend(route, transport.WithLogger(log))
	if err != nil {
		log.Error(route+" failed", "err", err)
		return 1
	}
	return Main(log, route, srv, f)
}

// ParseFlags parses args with fs, which must use [flag.ExitOnError], for a
// program that takes flags only: it exits with status 2 if any argument is
// left over, as fs does for a bad flag.
func ParseFlags(fs *flag.FlagSet, args []string) {
	fs.Parse(args) // with ExitOnError, a bad flag exits
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		os.Exit(2)
	}
}
