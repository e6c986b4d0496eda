package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// These tests look inside the client, at the streams it keeps between calls,
// to check that streams are reused when they may be and only then.

// reuseServer serves backend on loopback and returns a client of it. The
// client gets those of opts that concern both sides.
func reuseServer(t *testing.T, backend fanout.Backend[int64, int64], opts ...ServerOption) (*Server[int64, int64], *Client[int64, int64]) {
	t.Helper()
	srv, c, _ := watchedServer(t, backend, opts...)
	return srv, c
}

// watchedServer is reuseServer, and also returns the server's events.
func watchedServer(t *testing.T, backend fanout.Backend[int64, int64], opts ...ServerOption) (*Server[int64, int64], *Client[int64, int64], *Events) {
	t.Helper()
	opts = append([]ServerOption{WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	var copts []ClientOption
	for _, o := range opts {
		if co, ok := o.(ClientOption); ok {
			copts = append(copts, co)
		}
	}
	srv := NewServer(backend, Int64(), Int64(), opts...)
	ev := WatchEvents(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c := NewClient(l.Addr().String(), Int64(), Int64(), copts...)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		require.ErrorIs(t, <-served, ErrServerClosed)
	})
	return srv, c, ev
}

// idleIDs returns the IDs of the client's idle streams.
func idleIDs(c *Client[int64, int64]) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint32
	for _, is := range c.idle {
		ids = append(ids, is.st.StreamID())
	}
	return ids
}

var negate = fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = -n
	}
	return out, nil
})

func TestSequentialCallsShareOneStream(t *testing.T) {
	_, c := reuseServer(t, negate, WithRequestTimeout(50*time.Millisecond))
	ctx := context.Background()
	for i := range int64(20) {
		out, err := c.Process(ctx, []int64{i, -i})
		require.NoError(t, err)
		require.Equal(t, []int64{-i, i}, out)
		require.Equal(t, []uint32{1}, idleIDs(c), "call %d did not leave the first stream idle", i)
	}
	// An idle stream may wait for its next request longer than the request
	// timeout, which only bounds a request once it starts. The server's own
	// clock tells when the timeout has run out since the stream went idle:
	// it ends a stream opened now, which sends no request, at that timeout.
	sess, _, err := c.session(ctx)
	require.NoError(t, err)
	clock, err := sess.OpenStream()
	require.NoError(t, err)
	defer clock.Close()
	clock.SetReadDeadline(time.Now().Add(hangGuard))
	_, err = io.Copy(io.Discard, clock)
	require.NoError(t, err, "the server did not end a stream that sent no request")
	out, err := c.Process(ctx, []int64{7})
	require.NoError(t, err)
	require.Equal(t, []int64{-7}, out)
	require.Equal(t, []uint32{1}, idleIDs(c))
}

func TestConcurrentCallsReuseTheirStreams(t *testing.T) {
	const n = 8
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	hold := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		entered <- struct{}{}
		<-release
		return negate(ctx, items)
	})
	_, c := reuseServer(t, hold)
	round := func() {
		var wg sync.WaitGroup
		for i := range int64(n) {
			wg.Go(func() {
				out, err := c.Process(context.Background(), []int64{i})
				if err == nil && out[0] != -i {
					err = errors.New("wrong answer")
				}
				assert.NoError(t, err)
			})
		}
		for range n {
			<-entered
		}
		release <- struct{}{} // one at a time, then all
		close(release)
		wg.Wait()
	}
	round()
	first := idleIDs(c)
	require.Len(t, first, n, "every stream of the first round is kept")
	release = make(chan struct{})
	round()
	require.ElementsMatch(t, first, idleIDs(c), "the second round opened new streams")
}

func TestFailedCallsReuseOrDropTheirStream(t *testing.T) {
	fail := errors.New("backend says no")
	started := make(chan struct{}, 1)
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		switch items[0] {
		case 1:
			return nil, fail
		case 2:
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return negate(ctx, items)
	})
	_, c := reuseServer(t, backend)
	ctx := context.Background()

	_, err := c.Process(ctx, []int64{1})
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, CodeBackend, re.Code)
	require.Equal(t, []uint32{1}, idleIDs(c), "a backend error leaves the stream usable")

	// A cancelled call's stream is closed, never reused: its answer may
	// still come.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		<-started
		cancel()
	}()
	_, err = c.Process(cctx, []int64{2})
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, idleIDs(c))

	out, err := c.Process(ctx, []int64{3})
	require.NoError(t, err)
	require.Equal(t, []int64{-3}, out)
	require.Equal(t, []uint32{3}, idleIDs(c), "a new stream replaces the cancelled one")
}

func TestServerShutdownRefusesCallsOnIdleStreams(t *testing.T) {
	var calls sync.WaitGroup
	entered := make(chan struct{})
	release := make(chan struct{})
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		if items[0] == 0 {
			close(entered)
			<-release
		}
		return negate(ctx, items)
	})
	// The server of reuseServer, with Serve's return at hand.
	srv := NewServer(backend, Int64(), Int64(), WithLogger(slog.New(slog.DiscardHandler)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c := NewClient(l.Addr().String(), Int64(), Int64(), WithLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	ctx := context.Background()
	// Two idle streams: one for the call that holds the shutdown open, one
	// for the call that arrives during it.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			_, err := c.Process(ctx, []int64{5})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	require.NotEmpty(t, idleIDs(c))

	calls.Go(func() {
		out, err := c.Process(ctx, []int64{0})
		assert.NoError(t, err, "a call in flight finishes during a shutdown")
		assert.Equal(t, []int64{0}, out)
	})
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	// Serve returns once the shutdown has begun: it closed the listener.
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrServerClosed)
	case <-time.After(hangGuard):
		t.Fatal("Serve did not return when the shutdown began")
	}

	_, err = c.Process(ctx, []int64{6})
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, CodeUnavailable, re.Code)
	require.ErrorIs(t, err, fanout.ErrUnavailable, "safe to send again")
	close(release)
	calls.Wait()
	require.NoError(t, <-shut)
}

// TestStrayBytesAfterAnAnswerAreNeverTakenForTheNext checks the client
// against a server that breaks the protocol: it answers a request with two
// frames. The next call must get its own answer, on a stream of its own.
func TestStrayBytesAfterAnAnswerAreNeverTakenForTheNext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { l.Close() })
	wg.Go(func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		sess, err := rawServerSession(conn)
		if err != nil {
			return
		}
		defer sess.Close()
		answer := func(v int64) []byte {
			b, _ := Int64().Append(wire.AppendHeader(nil, wire.KindResponse), []int64{v})
			setFrameLength(b, 0)
			return b
		}
		for i := int64(1); ; i++ {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			if _, _, err := wire.ReadFrame(st, 1<<20, nil); err != nil {
				return
			}
			if i == 1 {
				// The answer, then a second one nobody asked for, in one
				// yamux frame, so that they arrive together.
				st.Write(append(answer(i), answer(-i)...))
				continue
			}
			st.Write(answer(i))
		}
	})
	c := NewClient(l.Addr().String(), Int64(), Int64(), WithLogger(slog.New(slog.DiscardHandler)))
	defer c.Close()
	for i := int64(1); i <= 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := c.Process(ctx, []int64{0})
		cancel()
		require.NoError(t, err, "call %d", i)
		require.Equal(t, []int64{i}, out, "call %d got another call's answer", i)
	}
}

// TestServerEndsTheStreamAfterAnAnswerThatEndsIt checks the server's side of
// PROTOCOL.md's rule: after results, or an error of code 1, 5 or 7, the
// stream carries the next call; after any other code the server closes its
// side. Here the answer is too large for the client (code 3).
func TestServerEndsTheStreamAfterAnAnswerThatEndsIt(t *testing.T) {
	_, c := reuseServer(t, negate)
	const limit = 64 // bytes of answer this client accepts
	st := rawStream(t, c.Addr(), limit)
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))

	request := func(n int) []byte {
		b, err := Int64().Append(append(wire.AppendHeader(nil, wire.KindRequest), make([]byte, wire.RequestPrefixSize)...), make([]int64, n))
		require.NoError(t, err)
		require.NoError(t, wire.FinishFrame(b, 0, DefaultMaxMessageSize))
		return b
	}
	// A small answer keeps the stream: the next request on it is answered.
	for range 2 {
		_, err := st.Write(request(2))
		require.NoError(t, err)
		k, _, err := wire.ReadFrame(st, limit, nil)
		require.NoError(t, err)
		require.Equal(t, wire.KindResponse, k)
	}
	// An answer too large for the client ends it.
	_, err := st.Write(request(limit))
	require.NoError(t, err)
	k, payload, err := wire.ReadFrame(st, limit, nil)
	require.NoError(t, err)
	require.Equal(t, wire.KindError, k)
	code, _, err := parseError(payload)
	require.NoError(t, err)
	require.Equal(t, CodeTooLarge, code)
	_, _, err = wire.ReadFrame(st, limit, nil)
	require.ErrorIs(t, err, io.EOF, "the server kept a stream the protocol says it ends")
}
