package node_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

var quiet = transport.WithLogger(nil)

func TestSystem(t *testing.T) {
	defer goleak.VerifyNone(t)
	sys, err := node.StartSystem(quiet)
	require.NoError(t, err)
	defer sys.Close()
	cl := transport.NewClient(sys.Addr, transport.Int64(), xyz.ResultCodec(), quiet)
	defer cl.Close()
	c := annotated(cl)

	in := []int64{-3, 4, 7, 0, -1, 1, 9223372036854775806, -3037000499}
	got, err := c.Process(context.Background(), in)
	require.NoError(t, err)
	for i, n := range in {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		require.Equal(t, want, got[i], "input %d", n)
	}

	// A number that failed is reported in its own answer, with the text
	// the backend that failed it gave; the others are answered, even on
	// that backend.
	got, err = c.Process(context.Background(), []int64{1, -3037000500, -2})
	require.NoError(t, err)
	require.Equal(t, xyz.Result{Value: 4, Backend: "z"}, got[0])
	require.Equal(t, xyz.Result{Backend: "x", Err: "x: -3037000500 squared overflows int64"}, got[1])
	require.Equal(t, xyz.Result{Value: 4, Backend: "x"}, got[2])
}

// serve serves srv on a free loopback port until the test ends.
func serve(t *testing.T, srv node.Server) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

func backend(t *testing.T, route string) string {
	srv, err := node.NewBackend(node.BackendConfig{Route: route}, quiet)
	require.NoError(t, err)
	return serve(t, srv)
}

// goneAddr returns the address of a server that is gone.
func goneAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// middle serves a middle layer over replicas and returns a client of it.
func middle(t *testing.T, cfg node.MiddleConfig) fanout.Backend[int64, xyz.Result] {
	m, err := node.NewMiddle(cfg, node.Both(quiet))
	require.NoError(t, err)
	c := transport.NewClient(serve(t, m), transport.Int64(), xyz.ResultCodec(), quiet, transport.WithService(node.MiddleService))
	t.Cleanup(func() { c.Close() })
	return annotated(c)
}

// annotated returns c with the failures of its partial answers set in the
// answers to the numbers that failed, as the client program reads them.
func annotated(c fanout.Backend[int64, xyz.Result]) fanout.Backend[int64, xyz.Result] {
	return fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, items []int64) ([]xyz.Result, error) {
		out, err := c.Process(ctx, items)
		if pe, ok := err.(*fanout.PartialError); ok {
			return xyz.Annotate(out, len(items), pe), nil
		}
		return out, err
	})
}

func TestMiddleRetriesOnAnotherReplica(t *testing.T) {
	down := goneAddr(t)
	c := middle(t, node.MiddleConfig{Replicas: map[string][]string{
		"x": {backend(t, "x")},
		"y": {down, backend(t, "y"), down},
		"z": {backend(t, "z")},
	}})
	for i := range 20 {
		got, err := c.Process(context.Background(), []int64{-2, 10})
		require.NoError(t, err)
		require.Equal(t, []xyz.Result{{Value: 4, Backend: "x"}, {Value: 5, Backend: "y"}}, got, "call %d", i)
	}
}

func TestMiddleReportsRouteDown(t *testing.T) {
	c := middle(t, node.MiddleConfig{Replicas: map[string][]string{
		"x": {backend(t, "x")},
		"y": {backend(t, "y")},
		"z": {goneAddr(t), goneAddr(t)},
	}})
	// The replicas are tried, then ejected: either way each call fails
	// promptly, and names the route and the numbers it could not process.
	for range 10 {
		got, err := c.Process(context.Background(), []int64{-2, 1, 3})
		require.NoError(t, err)
		require.Equal(t, xyz.Result{Value: 4, Backend: "x"}, got[0])
		for _, r := range got[1:] {
			require.Equal(t, "z", r.Backend)
			require.Contains(t, r.Err, "z could not process numbers 1, 3: ")
			require.Contains(t, r.Err, "backend unavailable")
		}
	}
	got, err := c.Process(context.Background(), []int64{5})
	require.NoError(t, err)
	require.Contains(t, got[0].Err, "all 2 replicas are ejected")
}

// TestMiddleCheck checks that Middle.Check names the replicas it cannot
// reach, logs each once with its route and address, and that the middle
// layer serves around them.
func TestMiddleCheck(t *testing.T) {
	var logs watchedLog
	down, y := goneAddr(t), backend(t, "y")
	m, err := node.NewMiddle(node.MiddleConfig{
		Replicas: map[string][]string{"x": {backend(t, "x")}, "y": {y, down}, "z": {backend(t, "z")}},
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	}, node.Both(quiet))
	require.NoError(t, err)
	err = m.Check(context.Background())
	require.ErrorContains(t, err, "route y: replica 1 ("+down+"): ")
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.NotContains(t, err.Error(), "route x")
	line := logs.wait(t, `msg="fanout: replica failed its check; ejected"`)
	require.Contains(t, line, `level=WARN msg="fanout: replica failed its check; ejected" route=y replica=`+down+" index=1 ")
	require.Equal(t, 1, strings.Count(logs.String(), "\n"), "one line: %s", logs.String())

	c := transport.NewClient(serve(t, m), transport.Int64(), xyz.ResultCodec(), quiet)
	defer c.Close()
	for range 20 {
		got, err := c.Process(context.Background(), []int64{-2, 10})
		require.NoError(t, err)
		require.Equal(t, []xyz.Result{{Value: 4, Backend: "x"}, {Value: 5, Backend: "y"}}, got)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "\n"), "no line per call: %s", logs.String())
}

func TestMiddleBoundsCallsPerRoute(t *testing.T) {
	var logs watchedLog
	slow, err := node.NewBackend(node.BackendConfig{Route: "x", Delay: time.Minute,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, quiet)
	require.NoError(t, err)
	c := middle(t, node.MiddleConfig{MaxInFlight: 1, Replicas: map[string][]string{
		"x": {serve(t, slow)},
		"y": {backend(t, "y")},
		"z": {backend(t, "z")},
	}})

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Process(ctx, []int64{-1})
		first <- err
	}()
	logs.wait(t, `msg="call delayed"`) // the first call reaches x

	got, err := c.Process(context.Background(), []int64{-2, 2})
	require.NoError(t, err)
	require.Equal(t, "x", got[0].Backend)
	require.Contains(t, got[0].Err, "x could not process -2: fanout: overloaded")
	require.Equal(t, xyz.Result{Value: 1, Backend: "y"}, got[1], "other routes have their own bound")

	cancel()
	require.ErrorIs(t, <-first, context.Canceled)
	logs.wait(t, `msg="call cancelled"`) // the cancellation reaches x
}

func TestBackendDelay(t *testing.T) {
	var logs watchedLog
	const delay = 500 * time.Millisecond
	srv, err := node.NewBackend(node.BackendConfig{Route: "z", Delay: delay,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, quiet)
	require.NoError(t, err)
	c := transport.NewClient(serve(t, srv), transport.Int64(), transport.Int64(), quiet)
	defer c.Close()

	// A call waits, then is answered. That it waits the whole delay is what
	// the call below, whose deadline comes first, shows.
	got, err := c.Process(context.Background(), []int64{1, 3})
	require.NoError(t, err)
	require.Equal(t, []int64{4, 10}, got)
	require.Contains(t, logs.String(), `level=DEBUG msg="call delayed" numbers=2 delay=500ms`)
	require.NotContains(t, logs.String(), "level=INFO", "the wait is logged at Debug level only")

	// The deadline travels to the backend, which gives up waiting. The
	// server's copy of the deadline runs from the request's arrival, so the
	// client usually gives up first, which the server sees as a
	// cancellation: either error ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), delay/2)
	defer cancel()
	_, err = c.Process(ctx, []int64{1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	logs.wait(t, `level=INFO msg="call cancelled" numbers=1 err="context `)
}

// TestBackendDelayFraction checks what NewBackend makes of DelayFraction:
// the zero value delays every call, as a config that sets only Delay
// expects, and a fraction outside 0..1 is an error naming the field.
func TestBackendDelayFraction(t *testing.T) {
	var logs watchedLog
	srv, err := node.NewBackend(node.BackendConfig{Route: "y", Delay: time.Nanosecond,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, quiet)
	require.NoError(t, err)
	c := transport.NewClient(serve(t, srv), transport.Int64(), transport.Int64(), quiet)
	defer c.Close()
	const calls = 20
	for range calls {
		got, err := c.Process(context.Background(), []int64{4})
		require.NoError(t, err)
		require.Equal(t, []int64{2}, got)
	}
	require.Equal(t, calls, strings.Count(logs.String(), `msg="call delayed"`), logs.String())

	for _, fraction := range []float64{-0.1, 1.5, math.NaN(), math.Inf(1)} {
		_, err := node.NewBackend(node.BackendConfig{Route: "y", Delay: time.Second, DelayFraction: fraction})
		require.ErrorContains(t, err, "DelayFraction", "fraction %v", fraction)
		require.ErrorContains(t, err, "not between 0 and 1", "fraction %v", fraction)
	}
}

func TestNewMiddleNeedsEveryRoute(t *testing.T) {
	_, err := node.NewMiddle(node.MiddleConfig{Replicas: map[string][]string{"x": {"a:1"}, "y": {"b:1"}}}, node.Both(quiet))
	require.ErrorContains(t, err, "route z")

	_, err = node.NewMiddle(node.MiddleConfig{Replicas: map[string][]string{"x": {"a:1"}, "y": {"b:1"}, "z": {"c:1"}, "w": {"d:1"}}}, node.Both(quiet))
	require.ErrorContains(t, err, "replicas given for 4 routes")

	_, err = node.NewMiddle(node.MiddleConfig{Replicas: map[string][]string{"x": {"a:1"}, "y": {"b:1"}, "z": {"c:1"}}, MaxInFlight: -1}, node.Both(quiet))
	require.ErrorContains(t, err, "route x")
}

func TestNewBackendUnknownRoute(t *testing.T) {
	_, err := node.NewBackend(node.BackendConfig{Route: "w"})
	require.Error(t, err)
}

// watchedLog is a log destination safe for a logger and a test to share,
// which tells the test when a line it waits for is logged: a test waits for
// the state, rather than polling the log or sleeping. A slog handler writes
// each record, a line, in one Write.
type watchedLog struct {
	mu      sync.Mutex
	b       bytes.Buffer
	waiters []logWaiter
}

// A logWaiter waits for a line holding text.
type logWaiter struct {
	text string
	line chan string // gets the first such line
}

func (l *watchedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	waiting := l.waiters[:0]
	for _, w := range l.waiters {
		if line, ok := lineWith(string(p), w.text); ok {
			w.line <- line
			continue
		}
		waiting = append(waiting, w)
	}
	clear(l.waiters[len(waiting):])
	l.waiters = waiting
	return len(p), nil
}

func (l *watchedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait waits until a line holding text is logged, and returns the first.
// It fails the test after a minute: a guard against a hang, which measures
// nothing.
func (l *watchedLog) wait(t *testing.T, text string) string {
	t.Helper()
	w := logWaiter{text: text, line: make(chan string, 1)}
	l.mu.Lock()
	if line, ok := lineWith(l.b.String(), text); ok {
		l.mu.Unlock()
		return line
	}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	select {
	case line := <-w.line:
		return line
	case <-time.After(time.Minute):
		t.Fatalf("no line with %s logged within a minute; the log:\n%s", text, l.String())
		return ""
	}
}

// lineWith returns the first line of s that holds text.
func lineWith(s, text string) (string, bool) {
	for line := range strings.Lines(s) {
		if strings.Contains(line, text) {
			return strings.TrimSuffix(line, "\n"), true
		}
	}
	return "", false
}

func TestRunServesUntilCancelled(t *testing.T) {
	defer goleak.VerifyNone(t)
	var logs watchedLog
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv, err := node.NewBackend(node.BackendConfig{Route: "z"}, quiet)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx, log, "z", srv, "127.0.0.1:0", time.Second) }()

	_, addr, _ := strings.Cut(logs.wait(t, `msg="z ready" addr=`), `msg="z ready" addr=`)

	c := transport.NewClient(addr, transport.Int64(), transport.Int64(), quiet)
	defer c.Close()
	got, err := c.Process(context.Background(), []int64{1, 3})
	require.NoError(t, err)
	require.Equal(t, []int64{4, 10}, got)

	cancel()
	require.NoError(t, <-done)
	require.Contains(t, logs.String(), `msg="z stopped"`)
}

func TestRunFailsToListen(t *testing.T) {
	srv, err := node.NewBackend(node.BackendConfig{Route: "x"}, quiet)
	require.NoError(t, err)
	err = node.Run(context.Background(), slog.New(slog.DiscardHandler), "x", srv, "127.0.0.1:-1", time.Second)
	var opErr *net.OpError
	require.True(t, errors.As(err, &opErr), "error %v", err)
}
