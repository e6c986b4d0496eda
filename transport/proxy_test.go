package transport_test

// Fault-injection tests of the real transport: real TCP on loopback and real
// yamux, with an internal/faultproxy between client and server that adds
// latency, black-holes, resets or cuts the connection while many callers
// are calling.
//
// Every test asserts behaviour (which calls succeed, that failures are
// errors and not wrong answers, that every call ends), never speed: no test
// bounds how long a call takes. Where a call must end at its deadline, the
// test sets every other timeout that could end it to an hour, and requires
// it to end while the fault that would hold it lasts. Waits for recovery
// use generous hang guards.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/faultproxy"
	"github.com/seed-c94cd834/fanout/transport"
)

// proxyGuard bounds waits for something that must happen eventually (a
// recovery, a keepalive verdict): a hang guard, not a speed check.
const proxyGuard = 30 * time.Second

// pxDouble answers 2n for every n.
var pxDouble = fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
	out := make([]int64, len(in))
	for i, n := range in {
		out[i] = 2 * n
	}
	return out, nil
})

// pxQuiet discards the transport's logs.
var pxQuiet = transport.WithLogger(nil)

// pxEnv is a client, a fault proxy and a server: client -> proxy -> server.
type pxEnv struct {
	p  *faultproxy.Proxy
	c  *transport.Client[int64, int64]
	ev *transport.Events // the server's

	// seen holds the first item of every batch the server's backend was
	// given; unavailable, that of every load call that failed with
	// fanout.ErrUnavailable, which promises the request was not delivered.
	seen, unavailable sync.Map
}

// proxied starts a server for backend, a fault proxy in front of it and a
// client of the proxy. Everything is closed when the test ends, the client
// first. Then, once the server has finished every call, the test checks
// that no load call that failed as not delivered reached the backend.
func proxied(t *testing.T, backend fanout.Backend[int64, int64], serverOpts []transport.ServerOption, clientOpts []transport.ClientOption) *pxEnv {
	t.Helper()
	env := &pxEnv{}
	t.Cleanup(func() {
		env.unavailable.Range(func(k, v any) bool {
			if _, ok := env.seen.Load(k); ok {
				t.Errorf("a call failed as not delivered, but the backend processed it: %v", v)
			}
			return true
		})
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	recording := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if len(in) > 0 {
			env.seen.Store(in[0], true)
		}
		return backend.Process(ctx, in)
	})
	srv := transport.NewServer[int64, int64](recording, transport.Int64(), transport.Int64(), append([]transport.ServerOption{pxQuiet}, serverOpts...)...)
	env.ev = transport.WatchEvents(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, transport.ErrServerClosed)
	})

	env.p, err = faultproxy.New(l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, env.p.Close()) })

	env.c = transport.NewClient(env.p.Addr(), transport.Int64(), transport.Int64(), append([]transport.ClientOption{pxQuiet}, clientOpts...)...)
	t.Cleanup(func() { require.NoError(t, env.c.Close()) })
	return env
}

// pxBatch returns n distinct items for caller g's i-th call; the first,
// g<<40 | i<<24, identifies the call.
func pxBatch(g, i, n int) []int64 {
	items := make([]int64, n)
	base := int64(g)<<40 | int64(i)<<24
	for j := range items {
		items[j] = base + int64(j)
		if j%2 == 1 {
			items[j] = -items[j]
		}
	}
	return items
}

// pxCheck returns an error unless out is exactly the doubled items.
func pxCheck(items, out []int64) error {
	if len(out) != len(items) {
		return fmt.Errorf("%d results for %d items", len(out), len(items))
	}
	for j, n := range items {
		if out[j] != 2*n {
			return fmt.Errorf("result %d is %d for item %d, want %d", j, out[j], n, 2*n)
		}
	}
	return nil
}

// pxCall makes one call with a deadline and checks its outcome: a success
// must carry exactly the right results; a failure must be classified (see
// pxClassify). It returns the call's error.
func pxCall(t *testing.T, c *transport.Client[int64, int64], deadline time.Duration, items []int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	out, err := c.Process(ctx, items)
	if err != nil {
		if out != nil {
			t.Errorf("a failed call returned results too: %v", err)
		}
		if pxClassify(err) == "" {
			t.Errorf("an error that says neither whether the request was delivered nor that the server sent it: %v", err)
		}
		if !strings.Contains(err.Error(), c.Addr()) {
			t.Errorf("an error that does not name the server: %v", err)
		}
		return err
	}
	if err := pxCheck(items, out); err != nil {
		t.Errorf("wrong answer: %v", err)
		return err
	}
	return nil
}

// pxClassify names the class of a failed call's error, or returns "" if it
// has none: the faults here must all end in one of these.
func pxClassify(err error) string {
	var re *transport.RemoteError
	switch {
	case errors.As(err, &re):
		return "remote"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, fanout.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, fanout.ErrInterrupted):
		return "interrupted"
	case errors.Is(err, fanout.ErrOverloaded):
		return "overloaded"
	}
	return ""
}

// pxLoad is many concurrent callers calling until stopped.
type pxLoad struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup

	mu      sync.Mutex
	errs    map[string]int // failures by message, for the test log
	changed chan struct{}  // closed and replaced once ok or failed has grown
}

// startLoad starts callers goroutines that call env's client in a loop with
// the given deadline and batches of 1 to maxItems items, until the load is
// ended.
func startLoad(t *testing.T, env *pxEnv, callers int, deadline time.Duration, maxItems int) *pxLoad {
	l := &pxLoad{stop: make(chan struct{}), errs: map[string]int{}, changed: make(chan struct{})}
	for g := range callers {
		g += 1000 // apart from the calls the tests make themselves
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				items := pxBatch(g, i, 1+r.IntN(maxItems))
				err := pxCall(t, env.c, deadline, items)
				if err == nil {
					l.ok.Add(1)
					l.note()
					continue
				}
				l.failed.Add(1)
				if errors.Is(err, fanout.ErrUnavailable) {
					env.unavailable.Store(items[0], err)
				}
				l.mu.Lock()
				l.errs[pxClassify(err)+": "+pxShorten(err)]++
				l.mu.Unlock()
				l.note()
			}
		}()
	}
	return l
}

// pxShorten drops the varying parts of an error message (addresses,
// durations) so that failures group in the log.
func pxShorten(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, " (next attempt in"); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.Index(msg, "read tcp "); i >= 0 {
		msg = msg[:i] + "read tcp ..."
	}
	return msg
}

// note wakes the tests waiting for the load's counts to grow.
func (l *pxLoad) note() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitOK waits until the load has had n more successes than now.
func (l *pxLoad) waitOK(t *testing.T, n int64) {
	t.Helper()
	l.await(t, &l.ok, n, "the callers stopped succeeding")
}

// waitFailed waits until the load has had n more failures than now.
func (l *pxLoad) waitFailed(t *testing.T, n int64) {
	t.Helper()
	l.await(t, &l.failed, n, "the fault caused no failure")
}

// await waits until count has grown by n, woken as the callers' calls end,
// and fails t with msg after proxyGuard.
func (l *pxLoad) await(t *testing.T, count *atomic.Int64, n int64, msg string) {
	t.Helper()
	target := count.Load() + n
	guard := time.NewTimer(proxyGuard)
	defer guard.Stop()
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if count.Load() >= target {
			return
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatal(msg)
		}
	}
}

// pxWaitAll waits for wg, failing t with msg after proxyGuard.
func pxWaitAll(t *testing.T, wg *sync.WaitGroup, msg string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(proxyGuard):
		t.Fatal(msg)
	}
}

// pxOnlyDeadlines gives a client an hour for every timeout of its own that
// could end a call on a stalled connection, or free what it waits for: the
// write timeout (which also bounds keepalive pings), the stream open
// timeout, the stream close timeout (which ends a stream closed before it
// was acknowledged, and so frees its place in yamux's backlog) and the
// keepalive interval. In a fault that lasts, only a call's deadline can
// end it then.
var pxOnlyDeadlines = []transport.ClientOption{
	transport.WithWriteTimeout(time.Hour),
	transport.WithHandshakeTimeout(time.Hour),
	transport.WithRequestTimeout(time.Hour),
	transport.WithKeepAlive(time.Hour),
}

// end stops the callers, waits for them and logs the outcome.
func (l *pxLoad) end(t *testing.T) {
	close(l.stop)
	l.wg.Wait()
	t.Logf("%d calls succeeded, %d failed", l.ok.Load(), l.failed.Load())
	for msg, n := range l.errs {
		t.Logf("  %4d x %s", n, msg)
	}
}

// requireInterrupted requires err to be the failure of a call in flight
// whose connection failed: a transport error, not the server's, that says
// the request may have been delivered.
func requireInterrupted(t *testing.T, err error, addr string) {
	t.Helper()
	require.Error(t, err)
	var re *transport.RemoteError
	require.False(t, errors.As(err, &re), "a connection failure is not the server's error: %v", err)
	require.ErrorIs(t, err, fanout.ErrInterrupted)
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), addr)
}

var pxFastRedial = transport.WithRedialBackoff(10*time.Millisecond, 100*time.Millisecond)

func TestProxyLatency(t *testing.T) {
	const latency = 100 * time.Millisecond
	env := proxied(t, pxDouble, nil, nil)
	p, c := env.p, env.c
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 0, 10)))
	p.SetLatency(faultproxy.Both, latency)

	// Calls still return correct answers, large ones included.
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 1, 1)))
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 2, 50_000)))

	// A call whose deadline is shorter than the round trip ends with a
	// deadline error, once its deadline has passed: no answer can arrive
	// before 2*latency.
	const short = latency / 2
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	_, err := c.Process(ctx, pxBatch(0, 3, 10))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded, "the call ended before its deadline")
	var re *transport.RemoteError
	require.False(t, errors.As(err, &re), "the client's own deadline, not the server's: %v", err)

	// Many callers at once: those with a long deadline all get right
	// answers, those with a deadline below the round trip all end with a
	// deadline error.
	long := startLoad(t, env, 8, proxyGuard, 5000)
	var wg sync.WaitGroup
	var shortFailed atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				err := pxCall(t, c, short, pxBatch(100+g, i, 100))
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("a call with deadline %v through %v of latency each way ended with %v", short, latency, err)
				}
				shortFailed.Add(1)
			}
		}()
	}
	wg.Wait()
	long.waitOK(t, 20)
	long.end(t)
	require.Zero(t, long.failed.Load(), "calls with a long deadline failed under latency alone")
	require.EqualValues(t, 40, shortFailed.Load())

	// The abandoned calls did not damage the connection.
	p.SetLatency(faultproxy.Both, 0)
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 4, 1000)))
	require.Equal(t, 1, p.Accepted(), "latency alone must not cost the connection")
}

func TestProxyBlackHole(t *testing.T) {
	var logs logBuffer
	env := proxied(t, pxDouble, nil, []transport.ClientOption{
		logs.option(),
		// Keepalive declares the session dead after an interval plus a
		// ping timeout (the write timeout) without an answer. The write
		// timeout also bounds how long a call can be stuck behind the
		// stalled connection past its deadline (see
		// TestProxyDeadlineWhileSendPathStalled).
		transport.WithKeepAlive(100 * time.Millisecond),
		transport.WithWriteTimeout(500 * time.Millisecond),
		transport.WithDialTimeout(500 * time.Millisecond),
		pxFastRedial,
	})
	p, c := env.p, env.c
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 0, 10)))

	const deadline = 300 * time.Millisecond
	load := startLoad(t, env, 16, deadline, 2000)
	load.waitOK(t, 50)

	p.SetBlackHole(true)
	// A call without a deadline ends anyway: keepalive declares the silent
	// session dead and fails its calls. (Should the call start only once
	// the session is dead, its dial times out instead.)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), pxBatch(1, 0, 10))
		errc <- err
	}()
	select {
	case err := <-errc:
		require.Error(t, err)
		require.Contains(t, err.Error(), p.Addr())
		require.True(t, errors.Is(err, fanout.ErrInterrupted) || errors.Is(err, fanout.ErrUnavailable),
			"a black hole is a transport failure: %v", err)
	case <-time.After(proxyGuard):
		t.Fatal("a call without a deadline hung in the black hole")
	}
	logs.waitFor(t, "keepalive failed")

	// Meanwhile calls with a deadline fail, including those that wait for a
	// redial the black hole swallows. (That a deadline holds however the
	// connection is stalled is TestProxyDeadlineWhileSendPathStalled's and
	// TestProxyDeadlineWithManyUnacknowledgedStreams' to check: here the
	// keepalive and dial timeouts are short, and end calls too.)
	load.waitFailed(t, 50)

	// Lifted: calls succeed again, on a new connection.
	p.SetBlackHole(false)
	load.waitOK(t, 50)
	load.end(t)
	require.Greater(t, p.Accepted(), 1, "the client never redialled")
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 1, 10_000)))
}

func TestProxyReset(t *testing.T) {
	// Calls of a batch starting with -1 block on the server until
	// released, so that some are in flight when the connection is reset.
	const inflight = 8
	started := make(chan struct{}, inflight)
	release := make(chan struct{})
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if in[0] == -1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return pxDouble(ctx, in)
	})
	env := proxied(t, backend, nil, []transport.ClientOption{pxFastRedial})
	p, c := env.p, env.c
	defer close(release)
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 0, 10)))

	// Calls in flight fail at once with a clear error, though they have no
	// deadline.
	errc := make(chan error, inflight)
	for range inflight {
		go func() {
			_, err := c.Process(context.Background(), []int64{-1, 2, 3})
			errc <- err
		}()
	}
	for range inflight {
		select {
		case <-started:
		case <-time.After(proxyGuard):
			t.Fatal("the calls never reached the backend")
		}
	}
	require.Equal(t, 1, p.Reset())
	for range inflight {
		select {
		case err := <-errc:
			requireInterrupted(t, err, p.Addr())
		case <-time.After(proxyGuard):
			t.Fatal("a call in flight hung after a reset")
		}
	}

	// The next call redials and succeeds: the dead session was noticed.
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 1, 10)))
	require.Equal(t, 2, p.Accepted())

	// Resets under load: every call ends with the right answer or an error,
	// within its deadline, and calls succeed again between resets.
	load := startLoad(t, env, 16, 2*time.Second, 2000)
	for range 5 {
		load.waitOK(t, 20)
		p.Reset()
	}
	load.waitOK(t, 20)
	load.end(t)
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 2, 1000)))
}

func TestProxyCutLargeResponse(t *testing.T) {
	const large = 1_000_000 // 8 MB each way
	env := proxied(t, pxDouble, nil, []transport.ClientOption{pxFastRedial})
	p, c := env.p, env.c
	big := pxBatch(0, 0, large)
	require.NoError(t, pxCall(t, c, proxyGuard, big))

	// The response is cut after its first MiB.
	require.Equal(t, 1, p.CutAfter(faultproxy.Downstream, 1<<20))
	requireInterrupted(t, pxCall(t, c, proxyGuard, big), p.Addr())

	// The following call redials and gets the whole answer.
	require.NoError(t, pxCall(t, c, proxyGuard, big))
	require.Equal(t, 2, p.Accepted())

	// The same for a request cut halfway to the server.
	require.Equal(t, 1, p.CutAfter(faultproxy.Upstream, 4<<20))
	requireInterrupted(t, pxCall(t, c, proxyGuard, big), p.Addr())
	require.NoError(t, pxCall(t, c, proxyGuard, big))
	require.Equal(t, 3, p.Accepted())

	// Cuts under load, with large calls among small ones: every call ends
	// with exactly the right answer or an error.
	load := startLoad(t, env, 8, 10*time.Second, 5000)
	bigDone := make(chan struct{})
	go func() {
		defer close(bigDone)
		for i := range 3 {
			if err := pxCall(t, c, proxyGuard, pxBatch(99, i, large)); err != nil {
				t.Logf("large call under cuts: %v", err)
			}
		}
	}()
	for range 4 {
		load.waitOK(t, 20)
		p.CutAfter(faultproxy.Both, 256<<10)
	}
	load.waitOK(t, 20)
	select {
	case <-bigDone:
	case <-time.After(3 * proxyGuard):
		t.Fatal("the large calls never ended")
	}
	load.end(t)
	require.NoError(t, pxCall(t, c, proxyGuard, big))
}

// A call's deadline must hold even when the connection's send path is
// stalled. Here a black hole fills every buffer between client and server
// with large requests; yamux then queues each new frame (a stream's SYN, a
// request) behind the stalled connection and waits for it for up to the
// write timeout (10 s by default), whatever the caller's context says. The
// coalescer keeps yamux's send loop from blocking and the client writes on
// a goroutine of its own, so calls with a 200 ms deadline end at it
// (before, they returned after about 10 s). With the write timeout an hour,
// the calls must end while the black hole lasts: nothing but their
// deadlines can end them.
func TestProxyDeadlineWhileSendPathStalled(t *testing.T) {
	env := proxied(t, pxDouble, nil, pxOnlyDeadlines)
	p, c := env.p, env.c
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 0, 10)))
	p.SetBlackHole(true)
	defer p.SetBlackHole(false)

	// 256 requests of 8,000 items (64,008 bytes of payload, the most that
	// is sent without waiting for the server's continue frame): 16 MiB,
	// more than the proxy's and the kernel's buffers hold. The batches are
	// built before the calls start, so that under -race building them does
	// not eat into the calls' deadlines.
	const deadline = 200 * time.Millisecond
	batches := make([][]int64, 256)
	for g := range batches {
		batches[g] = pxBatch(g+1, 0, 8_000)
	}
	var wg sync.WaitGroup
	for _, items := range batches {
		wg.Go(func() {
			if err := pxCall(t, c, deadline, items); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a call in the black hole ended with %v, not its deadline", err)
			}
		})
	}
	pxWaitAll(t, &wg, "calls on a stalled connection did not end at their deadlines")
	require.ErrorIs(t, pxCall(t, c, deadline, pxBatch(0, 1, 1)), context.DeadlineExceeded)
}

// A call's deadline must hold however many streams wait for the server's
// acknowledgement. yamux lets at most 256 streams (its accept backlog) wait
// for one; OpenStream then blocks, ignoring the caller's context, until an
// acknowledgement comes or the session dies: in a black hole, until the
// stream open timeout (the handshake timeout, 10 s) closes the session. The
// client allows 1024 calls in flight by default, so the transport sizes the
// backlog to the call limit; before, the 257th concurrent call with a 200 ms
// deadline returned after about 10 s. With the stream open timeout an hour,
// the calls must end while the black hole lasts: nothing but their
// deadlines can end them.
func TestProxyDeadlineWithManyUnacknowledgedStreams(t *testing.T) {
	env := proxied(t, pxDouble, nil, pxOnlyDeadlines)
	p, c := env.p, env.c
	require.NoError(t, pxCall(t, c, proxyGuard, pxBatch(0, 0, 10)))
	p.SetBlackHole(true)
	defer p.SetBlackHole(false)

	const deadline = 200 * time.Millisecond
	var wg sync.WaitGroup
	for g := range 300 {
		wg.Go(func() {
			if err := pxCall(t, c, deadline, pxBatch(g+1, 0, 1)); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a call in the black hole ended with %v, not its deadline", err)
			}
		})
	}
	pxWaitAll(t, &wg, "calls waiting for streams to be acknowledged did not end at their deadlines")
}

// fanout.ErrUnavailable promises that the request was not delivered, so a
// Balancer retries it even when it is not idempotent. A call the backend
// processed, and whose answer the server wrote while the connection was
// partitioned, must not be reported as ErrUnavailable however it ends: the
// client gets the answer once the partition heals, or, had the server
// reset the stream meanwhile, an interruption. (yamux resets a stream
// whose close the peer does not acknowledge within the stream close
// timeout, the request timeout, 300 ms here; the client used to report
// resets as "the server refused the stream", and now reports them as
// ErrInterrupted. The server keeps a stream after results, so here the
// answer simply arrives.)
func TestProxyAnsweredCallReportedUndelivered(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var processed atomic.Int64
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		started <- struct{}{}
		<-release
		processed.Add(1)
		return pxDouble(ctx, in)
	})
	noKeepAlive := transport.WithKeepAlive(time.Hour) // keep the sessions alive through the partition
	env := proxied(t, backend, []transport.ServerOption{noKeepAlive, transport.WithRequestTimeout(300 * time.Millisecond)}, []transport.ClientOption{noKeepAlive})
	p, c := env.p, env.c

	errc := make(chan error, 1)
	go func() {
		errc <- pxCall(t, c, proxyGuard, pxBatch(0, 0, 30_000)) // 240 KB: within one stream window
	}()
	<-started
	answered := env.ev.Count(transport.EventAnswered)
	p.SetBlackHole(true)
	close(release)
	env.ev.Await(t, transport.EventAnswered, answered+1) // the server answered into the black hole
	p.SetBlackHole(false)

	err := waitErr(t, errc)
	require.EqualValues(t, 1, processed.Load())
	require.NotErrorIs(t, err, fanout.ErrUnavailable, "the backend processed this call")
}

// A server at its per-connection call limit answers an extra stream with
// CodeOverloaded "at once, without reading its request". A request larger
// than the stream window (256 KiB, 32,768 int64 items) cannot be written to
// a stream nobody reads, so the client reads the answer while it writes:
// the call fails with ErrOverloaded. (It used to stall until the server's
// stream close timeout, the request timeout, reset the stream: an hour
// here, past the calls' deadlines.) No fault is injected here: the proxy
// only stands in the middle.
func TestProxyLargeRequestRefusedLate(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if in[0] == -1 {
			started <- struct{}{}
			<-release
		}
		return pxDouble(ctx, in)
	})
	env := proxied(t, backend, []transport.ServerOption{transport.WithMaxConcurrentCalls(1), transport.WithRequestTimeout(time.Hour)}, nil)
	c := env.c
	defer close(release)
	go c.Process(context.Background(), []int64{-1})
	<-started

	// A small request is refused at once; so must a large one be.
	for _, n := range []int{10, 100_000} {
		err := pxCall(t, c, proxyGuard, pxBatch(0, n, n))
		require.ErrorIs(t, err, fanout.ErrOverloaded, "a request of %d items", n)
	}
}
