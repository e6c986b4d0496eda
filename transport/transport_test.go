package transport_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
	"github.com/seed-c94cd834/fanout/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quiet discards log output; tests that check logs use a logBuffer.
var quiet = transport.WithLogger(nil)

// waitGuard bounds the tests' waits for something that must happen: a hang
// guard, not a speed check.
const waitGuard = 10 * time.Second

// logBuffer is a concurrency-safe log sink for asserting on server logs.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed at the next write; nil if nobody waits
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return l.buf.Write(p)
}

// waitFor waits until the log holds msg, woken by each write to the log,
// and fails t after waitGuard.
func (l *logBuffer) waitFor(t *testing.T, msg string) {
	t.Helper()
	guard := time.NewTimer(waitGuard)
	defer guard.Stop()
	for {
		l.mu.Lock()
		if strings.Contains(l.buf.String(), msg) {
			l.mu.Unlock()
			return
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("%q was never logged; the log:\n%s", msg, l.String())
		}
	}
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) option() transport.Option {
	return transport.WithLogger(slog.New(slog.NewTextHandler(l, nil)))
}

// doubler answers 2n for every n.
var doubler = fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
	out := make([]int64, len(in))
	for i, n := range in {
		out[i] = 2 * n
	}
	return out, nil
})

// serve starts a server for b on a loopback port and returns its address.
// The server is closed when the test ends.
func serve(t *testing.T, b fanout.Backend[int64, int64], opts ...transport.ServerOption) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return serveOn(t, l, b, opts...)
}

func serveOn(t *testing.T, l net.Listener, b fanout.Backend[int64, int64], opts ...transport.ServerOption) string {
	t.Helper()
	addr, _ := serveWatchedOn(t, l, b, opts...)
	return addr
}

// serveWatched is serve, and also returns the server's events.
func serveWatched(t *testing.T, b fanout.Backend[int64, int64], opts ...transport.ServerOption) (string, *transport.Events) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return serveWatchedOn(t, l, b, opts...)
}

func serveWatchedOn(t *testing.T, l net.Listener, b fanout.Backend[int64, int64], opts ...transport.ServerOption) (string, *transport.Events) {
	t.Helper()
	srv := transport.NewServer(b, transport.Int64(), transport.Int64(), append([]transport.ServerOption{quiet}, opts...)...)
	ev := transport.WatchEvents(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-done, transport.ErrServerClosed)
	})
	return l.Addr().String(), ev
}

func client(t *testing.T, addr string, opts ...transport.ClientOption) *transport.Client[int64, int64] {
	t.Helper()
	c := transport.NewClient(addr, transport.Int64(), transport.Int64(), append([]transport.ClientOption{quiet}, opts...)...)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		addr := serve(t, leaf)
		return client(t, addr)
	})
}

func TestConformanceThroughRemoteRouter(t *testing.T) {
	// A router whose routes are remote clients, itself served remotely: the
	// shape of the example system.
	backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		routes := map[string]fanout.Backend[int64, int64]{}
		for _, name := range []string{"even", "odd"} {
			addr := serve(t, leaf)
			routes[name] = client(t, addr)
		}
		r, err := fanout.NewRouter(fanout.ClassifierFunc[int64](func(n int64) (string, error) {
			if n%2 == 0 {
				return "even", nil
			}
			return "odd", nil
		}), routes)
		require.NoError(t, err)
		addr := serve(t, r)
		return client(t, addr)
	})
}

func TestRemoteErrorIsDistinguishable(t *testing.T) {
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return nil, errors.New("z: 3*n+1 overflows int64 for n=4611686018427387904")
	}))
	_, err := client(t, addr).Process(context.Background(), []int64{1})
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, transport.CodeBackend, re.Code)
	require.Equal(t, addr, re.Addr)
	require.Contains(t, err.Error(), "overflows int64 for n=4611686018427387904")

	// A transport failure is not a RemoteError, and names the address.
	down := freeAddr(t)
	_, err = client(t, down).Process(context.Background(), []int64{1})
	require.Error(t, err)
	require.False(t, errors.As(err, &re), "dial failure must not look remote: %v", err)
	require.Contains(t, err.Error(), down)
}

func TestEmptyBatchIsAProbe(t *testing.T) {
	// An empty batch is a round trip that the server answers itself.
	var calls atomic.Int64
	addr := serve(t, fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
		calls.Add(1)
		return in, nil
	}))
	out, err := client(t, addr).Process(context.Background(), nil)
	require.NoError(t, err)
	require.Empty(t, out)
	require.Zero(t, calls.Load(), "the backend must not be called for an empty batch")

	// So it fails when the server is down, with an error saying the request
	// was not delivered.
	_, err = client(t, freeAddr(t)).Process(context.Background(), nil)
	require.ErrorIs(t, err, fanout.ErrUnavailable)
}

func TestDeadlineReachesServer(t *testing.T) {
	type seenDeadline struct{ deadline, at time.Time }
	seen := make(chan seenDeadline, 1)
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		d, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("no deadline")
		}
		seen <- seenDeadline{d, time.Now()}
		return in, nil
	}))
	const budget = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	want, _ := ctx.Deadline()
	start := time.Now()
	_, err := client(t, addr).Process(ctx, []int64{1})
	require.NoError(t, err)
	got := <-seen
	// The deadline travels as the time left when the request is sent, and
	// the server counts it from when it reads the request: its copy ends
	// no sooner than the caller's, and no later than the caller's plus the
	// request's transit (sent after start, read before the backend ran):
	// orderings of the clock, not bounds on how long anything took.
	left := want.Sub(start)
	require.False(t, got.deadline.Before(want), "server deadline %v is before the caller's %v", got.deadline, want)
	require.False(t, got.deadline.After(got.at.Add(left)), "server deadline %v is later than the %v left at the call's start, counted from when the backend ran (%v)", got.deadline, left, got.at)

	// The backend's deadline ends its call on the server, which reports it.
	addr = serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = client(t, addr).Process(ctx, []int64{1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCancelReachesServer(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		close(started)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return nil, ctx.Err()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := client(t, addr).Process(ctx, []int64{1})
		errc <- err
	}()
	<-started
	cancel()
	require.ErrorIs(t, waitErr(t, errc), context.Canceled)
	select {
	case err := <-cancelled:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("the server's backend never saw the cancellation")
	}
}

// A client that goes away cancels its call in flight on the server, and the
// server's goroutines for its idle streams end with the connection. The
// server ends a failed connection's reads with a read deadline in the past
// (yamux would otherwise spin them until it has closed every stream), so
// the watcher of the call in flight must take that deadline for the
// client's departure, not for the end of the call.
func TestLostConnectionCancelsTheCallInFlight(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	addr, ev := serveWatched(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if in[0] != 0 {
			return in, nil
		}
		close(started)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return nil, ctx.Err()
	}))
	c := transport.NewClient(addr, transport.Int64(), transport.Int64(), quiet)
	var idle sync.WaitGroup // calls that leave streams idle on the connection
	for range 16 {
		idle.Go(func() {
			_, err := c.Process(context.Background(), []int64{1})
			assert.NoError(t, err)
		})
	}
	idle.Wait()

	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), []int64{0})
		errc <- err
	}()
	<-started
	// The server starts watching a call for its client's departure once it
	// has run 10-20 ms: go away once it watches.
	ev.Await(t, transport.EventWatching, 1)
	require.NoError(t, c.Close())
	require.ErrorIs(t, waitErr(t, errc), fanout.ErrInterrupted)
	select {
	case err := <-cancelled:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("the server's backend was never cancelled")
	}
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	counting := &countingListener{Listener: l}
	addr := serveOn(t, counting, doubler)
	c := client(t, addr)

	const callers, calls = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				n := int64(g*1000 + i)
				out, err := c.Process(context.Background(), []int64{n, -n, n + 1})
				if err != nil {
					errs <- err
					return
				}
				if out[0] != 2*n || out[1] != -2*n || out[2] != 2*n+2 {
					errs <- errors.New("wrong answer")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, counting.accepted.Load(), "all calls must share one connection")
}

type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func TestCodecMismatch(t *testing.T) {
	var logs logBuffer
	addr := serve(t, doubler, logs.option())
	_, err := transport.Dial(context.Background(), addr, transport.Float64(), transport.Int64(), quiet)
	require.ErrorIs(t, err, transport.ErrHandshake)
	require.Contains(t, err.Error(), `client sends "float64le"`)
	require.Contains(t, err.Error(), `server expects "int64le"`)
	logs.waitFor(t, "codec mismatch")

	// The server goes on serving clients that agree with it.
	out, err := client(t, addr).Process(context.Background(), []int64{21})
	require.NoError(t, err)
	require.Equal(t, []int64{42}, out)
}

func TestServiceMismatchIsRefusedOnBothEnds(t *testing.T) {
	var logs logBuffer
	addr := serve(t, doubler, logs.option(), transport.WithService("x"))

	// A client that expects y at x's address is refused at the handshake.
	y := client(t, addr, transport.WithService("y"))
	_, err := y.Process(t.Context(), []int64{21})
	require.ErrorIs(t, err, transport.ErrHandshake)
	require.ErrorIs(t, err, fanout.ErrUnavailable, "not delivered")
	require.Contains(t, err.Error(), `client expects service "y", server serves "x"`)
	logs.waitFor(t, `client expects service \"y\", server serves \"x\"`)

	// A server that serves no named service is refused too.
	unnamed := serve(t, doubler)
	_, err = transport.Dial(t.Context(), unnamed, transport.Int64(), transport.Int64(), quiet, transport.WithService("y"))
	require.ErrorIs(t, err, transport.ErrHandshake)
	require.Contains(t, err.Error(), `client expects service "y", server serves no named service`)

	// The right service, and a client that expects none, are served.
	for _, opt := range []transport.ClientOption{transport.WithService("x"), quiet} {
		out, err := client(t, addr, opt).Process(t.Context(), []int64{21})
		require.NoError(t, err)
		require.Equal(t, []int64{42}, out)
	}
}

func TestHelloCarriesTheServiceAsPROTOCOLSays(t *testing.T) {
	addr := serve(t, doubler, transport.WithService("x"))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	hello := rawHello(wireVersion, "int64le", "int64le", 1<<20)
	hello[len(hello)-1] = 1 // L3: a service name of one byte
	_, err = conn.Write(append(hello, 'y'))
	require.NoError(t, err)

	want := append([]byte("fanout"), wireVersion, 7)
	want = append(want, "int64le"...)
	want = append(want, 7)
	want = append(want, "int64le"...)
	want = binary.LittleEndian.AppendUint32(want, 4<<20) // the connection's share of the budget
	want = append(want, 1, 'x')
	got := make([]byte, len(want))
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	require.Equal(t, want, got, "the server's hello, service last")
	status, msg := make([]byte, 3), ""
	_, err = io.ReadFull(conn, status)
	require.NoError(t, err)
	text := make([]byte, binary.LittleEndian.Uint16(status[1:]))
	_, err = io.ReadFull(conn, text)
	require.NoError(t, err)
	msg = string(text)
	require.EqualValues(t, 1, status[0], "refused")
	require.Equal(t, `service mismatch: client expects service "y", server serves "x"`, msg)
}

func TestBackendPanicFailsOnlyItsCall(t *testing.T) {
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if in[0] == 13 {
			panic("unlucky")
		}
		return doubler(ctx, in)
	}))
	c := client(t, addr)
	_, err := c.Process(context.Background(), []int64{13})
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, transport.CodeInternal, re.Code)
	require.Contains(t, re.Message, "unlucky")
	out, err := c.Process(context.Background(), []int64{1})
	require.NoError(t, err)
	require.Equal(t, []int64{2}, out)
}

func TestServerChecksResultCount(t *testing.T) {
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return in[:len(in)-1], nil
	}))
	_, err := client(t, addr).Process(context.Background(), []int64{1, 2})
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, transport.CodeInternal, re.Code)
	require.Contains(t, re.Message, "1 results for 2 items")
}

func TestRequestLargerThanServerLimitIsRefusedLocally(t *testing.T) {
	var calls atomic.Int64
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		calls.Add(1)
		return in, nil
	}), transport.WithMaxMessageSize(1024))
	c := client(t, addr)
	_, err := c.Process(context.Background(), make([]int64, 1000))
	require.ErrorIs(t, err, transport.ErrMessageTooLarge)
	require.Contains(t, err.Error(), "accepts at most 1024")
	require.Zero(t, calls.Load())
	out, err := c.Process(context.Background(), make([]int64, 100))
	require.NoError(t, err)
	require.Len(t, out, 100)
}

func TestResponseLargerThanClientLimit(t *testing.T) {
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return make([]int64, len(in)), nil
	}))
	c := client(t, addr, transport.WithMaxMessageSize(1024), transport.WithChunks(0, 0))
	_, err := c.Process(context.Background(), make([]int64, 1000))
	require.ErrorIs(t, err, transport.ErrMessageTooLarge)
	// The codec tells the answer's size ahead: the client refuses the call
	// before sending it, and nobody does the work of it.
	var re *transport.RemoteError
	require.False(t, errors.As(err, &re), "refused by the server, not before sending: %v", err)
	require.Contains(t, err.Error(), "the answer to 1000 items takes at least 8000 bytes, this client accepts at most 1024")
	// Cut in chunks (the default), the same call is answered.
	c2 := client(t, addr, transport.WithMaxMessageSize(1024))
	out, err := c2.Process(context.Background(), make([]int64, 1000))
	require.NoError(t, err)
	require.Len(t, out, 1000)
	out, err = c.Process(context.Background(), make([]int64, 10))
	require.NoError(t, err)
	require.Len(t, out, 10)
}

func TestClientAndServerCloseAreIdempotent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := transport.NewServer[int64, int64](doubler, transport.Int64(), transport.Int64(), quiet)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	c := transport.NewClient(l.Addr().String(), transport.Int64(), transport.Int64(), quiet)
	_, err = c.Process(context.Background(), []int64{1})
	require.NoError(t, err)

	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	_, err = c.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, transport.ErrClosed)

	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close())
	require.NoError(t, srv.Shutdown(context.Background()))
	require.ErrorIs(t, <-done, transport.ErrServerClosed)
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.ErrorIs(t, srv.Serve(l2), transport.ErrServerClosed)
}

func TestGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := transport.NewServer[int64, int64](fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		started <- struct{}{}
		select {
		case <-release:
			return doubler(ctx, in)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}), transport.Int64(), transport.Int64(), quiet)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c := client(t, l.Addr().String())

	inflight := make(chan error, 1)
	go func() {
		out, err := c.Process(context.Background(), []int64{5})
		if err == nil && out[0] != 10 {
			err = errors.New("wrong answer")
		}
		inflight <- err
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	require.ErrorIs(t, waitErr(t, served), transport.ErrServerClosed)

	// New calls are refused while the call in flight finishes, with an
	// error saying they were not delivered.
	_, err = c.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the call in flight finished", err)
	default:
	}
	close(release)
	require.NoError(t, waitErr(t, inflight))
	require.NoError(t, waitErr(t, shut))
}

func TestShutdownGracePeriodEnds(t *testing.T) {
	cancelled := make(chan struct{})
	started := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := transport.NewServer[int64, int64](fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}), transport.Int64(), transport.Int64(), quiet)
	go srv.Serve(l)
	c := client(t, l.Addr().String())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), []int64{1})
		errc <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, srv.Shutdown(ctx), context.DeadlineExceeded)
	<-cancelled
	// The call was delivered, then cut off: it may have been processed.
	require.ErrorIs(t, waitErr(t, errc), fanout.ErrInterrupted)
}

// blocking returns a backend whose calls signal entered and wait for
// release, and the two channels.
func blocking() (fanout.Backend[int64, int64], chan struct{}, chan struct{}) {
	entered, release := make(chan struct{}, 64), make(chan struct{})
	return fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return doubler(ctx, in)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}), entered, release
}

func TestServerRefusesCallsPastItsConnectionLimit(t *testing.T) {
	b, entered, release := blocking()
	addr := serve(t, b, transport.WithMaxConcurrentCalls(2))
	c := client(t, addr)

	errc := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := c.Process(context.Background(), []int64{1})
			errc <- err
		}()
		<-entered
	}
	// A third call is refused at once, without reaching the backend.
	_, err := c.Process(context.Background(), []int64{1})
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, transport.CodeOverloaded, re.Code)
	require.ErrorIs(t, err, fanout.ErrOverloaded)
	require.ErrorContains(t, err, "stream limit of 2 reached on this connection")
	require.Empty(t, entered)

	close(release)
	require.NoError(t, waitErr(t, errc))
	require.NoError(t, waitErr(t, errc))
	out, err := c.Process(context.Background(), []int64{3})
	require.NoError(t, err)
	require.Equal(t, []int64{6}, out)
}

func TestClientRefusesCallsPastItsLimit(t *testing.T) {
	b, entered, release := blocking()
	c := client(t, serve(t, b), transport.WithMaxConcurrentCalls(1))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), []int64{1})
		errc <- err
	}()
	<-entered
	_, err := c.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrOverloaded)
	var re *transport.RemoteError
	require.False(t, errors.As(err, &re), "the client refused it, not the server: %v", err)
	close(release)
	require.NoError(t, waitErr(t, errc))
}

func TestDialFailureIsUnavailable(t *testing.T) {
	_, err := client(t, freeAddr(t)).Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.NotErrorIs(t, err, fanout.ErrInterrupted)
}

// waitErr receives from errc, failing the test if nothing arrives in a
// generous time (a hang guard, not a speed check).
func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(waitGuard):
		t.Fatal("timed out waiting for a result")
		return nil
	}
}

// waitClosed waits until done is closed, and fails t with msg after
// waitGuard.
func waitClosed(t *testing.T, done <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(waitGuard):
		t.Fatal(msg)
	}
}

// freeAddr returns a loopback address where nothing listens.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestAbandonedCallDoesNotHoldTheServer(t *testing.T) {
	// The backend ignores cancellation and then answers a large batch that
	// nobody reads. With an hour-long write timeout, a server whose write of
	// it blocked on the full stream window would hang in Shutdown: it must
	// give up the write as soon as it knows the client is gone.
	release := make(chan struct{})
	started := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := transport.NewServer[int64, int64](fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		close(started)
		<-release
		return make([]int64, len(in)), nil
	}), transport.Int64(), transport.Int64(), quiet, transport.WithWriteTimeout(time.Hour))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	// One call, sent whole: the backend is to be called once.
	c := client(t, l.Addr().String(), transport.WithChunks(0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(ctx, make([]int64, 500_000)) // within a connection's share of the budget
		errc <- err
	}()
	<-started
	cancel()
	require.ErrorIs(t, waitErr(t, errc), context.Canceled)
	close(release)

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	require.NoError(t, waitErr(t, shut))
	require.ErrorIs(t, waitErr(t, served), transport.ErrServerClosed)
}

// TestShutdownServesARequestWaitingForTheBudget starts a shutdown while a
// request waits for room in the byte budget behind a call in flight: the
// server must serve it, since the call arrived before the shutdown; never
// cut it, which would leave its client unable to tell whether it was
// processed. (A call that arrives once the shutdown has begun is refused as
// unavailable: see TestGracefulShutdown.)
func TestShutdownServesARequestWaitingForTheBudget(t *testing.T) {
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := transport.NewServer[int64, int64](fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		<-release
		return make([]int64, len(in)), nil
	}), transport.Int64(), transport.Int64(), quiet, transport.WithMaxPendingBytes(600<<10), transport.WithMaxPendingBytesPerConnection(600<<10))
	ev := transport.WatchEvents(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(func() { letGo(); srv.Close() })

	c := client(t, l.Addr().String(), transport.WithChunks(0, 0))
	call := func() chan error {
		errc := make(chan error, 1)
		go func() {
			out, err := c.Process(context.Background(), make([]int64, 50000)) // 400 KB
			if err == nil && len(out) != 50000 {
				err = fmt.Errorf("%d results", len(out))
			}
			errc <- err
		}()
		return errc
	}
	a := call()
	<-entered // a holds most of the budget
	b := call()
	ev.Await(t, transport.EventWaitingForRoom, 1) // b waits for room
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	// Serve returns once the shutdown has begun: it closed the listener.
	require.ErrorIs(t, waitErr(t, served), transport.ErrServerClosed)
	letGo()
	require.NoError(t, waitErr(t, a))
	require.NoError(t, waitErr(t, b), "a request that arrived before the shutdown is served, never cut")
	require.NoError(t, waitErr(t, shut))
}
