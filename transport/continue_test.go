package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// Tests of the continue frame: a request of more than continueAbove bytes
// of payload sends its header alone, and its payload once the server has
// room for it (PROTOCOL.md).

// quietFor is how long the tests below watch for a message that must not
// come. A correct peer never sends it, so a slow machine cannot fail them;
// it only gives a wrong peer the time to show itself. (These waits decide
// nothing by time: no state is waited for, a non-event is checked.)
const quietFor = 200 * time.Millisecond

// hangGuard bounds a wait for something that must come, so that a broken
// peer fails the test rather than hanging it. It is not a speed check.
const hangGuard = 10 * time.Second

// heldBudget starts a server whose byte budget of 200 KiB is all taken by
// a call its backend holds until release is called, and returns a client
// of it, the count of backend calls and the server's events. The budget's
// holder is released at cleanup at the latest.
func heldBudget(t *testing.T, opts ...ServerOption) (c *Client[int64, int64], release func(), calls *atomic.Int64, ev *Events) {
	t.Helper()
	calls = new(atomic.Int64)
	entered := make(chan struct{}, 1)
	gate := make(chan struct{})
	var first atomic.Bool
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		calls.Add(1)
		if first.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-gate
		}
		return negate(ctx, in)
	})
	_, c, ev = watchedServer(t, backend, append([]ServerOption{WithMaxPendingBytes(200 << 10), WithMaxPendingBytesPerConnection(200 << 10)}, opts...)...)
	letGo := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(letGo) // before the server's Close, even if the test fails

	held := make(chan error, 1)
	go func() {
		// A request of the whole budget takes all of it.
		_, err := c.Process(context.Background(), make([]int64, wholeBudget))
		held <- err
	}()
	<-entered
	release = func() {
		letGo()
		select {
		case err := <-held:
			require.NoError(t, err, "the call that held the budget")
		case <-time.After(hangGuard):
			t.Fatal("the call holding the budget did not return")
		}
	}
	return c, release, calls, ev
}

// wholeBudget is the number of items of a request that takes the whole
// budget of heldBudget's server.
const wholeBudget = (200<<10 - wire.RequestPrefixSize) / 8

func TestServerAsksForALargePayloadOnceItHasRoom(t *testing.T) {
	c, release, _, _ := heldBudget(t)

	sess := rawClientSession(t, c.Addr(), 1<<20)
	defer sess.Close()
	st, err := sess.OpenStream()
	require.NoError(t, err)
	items, req := requestFrame(t, 10000)
	require.Greater(t, len(req)-wire.HeaderSize, wire.ContinueAbove)

	_, err = st.Write(req[:wire.HeaderSize])
	require.NoError(t, err)
	// While the budget is taken, the server does not ask for the payload.
	requireQuiet(t, st) // a non-event, checked for quietFor

	release()
	st.SetReadDeadline(time.Now().Add(hangGuard))
	k, payload, err := wire.ReadFrame(st, 1<<20, nil)
	require.NoError(t, err)
	require.Equal(t, wire.KindContinue, k)
	require.Empty(t, payload)

	_, err = st.Write(req[wire.HeaderSize:])
	require.NoError(t, err)
	requireNegated(t, st, items)

	// A request small enough to go whole is answered without a continue,
	// on the same stream.
	small, frame := requestFrame(t, 2)
	_, err = st.Write(frame)
	require.NoError(t, err)
	requireNegated(t, st, small)
}

func TestCallGivenUpWhileWaitingForRoomGivesNothingBack(t *testing.T) {
	c, release, calls, ev := heldBudget(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Process(ctx, make([]int64, 10000))
		done <- err
	}()
	ev.Await(t, EventWaitingForRoom, 1)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(hangGuard):
		t.Fatal("a call waiting for the server's room did not end when cancelled")
	}

	release()
	// The abandoned request holds none of the budget once room is made:
	// a call that needs all of it is served.
	ctx, cancel = context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	out, err := c.Process(ctx, []int64{1, 2})
	require.NoError(t, err)
	require.Equal(t, []int64{-1, -2}, out)
	out, err = c.Process(ctx, make([]int64, wholeBudget))
	require.NoError(t, err)
	require.Len(t, out, wholeBudget)
	require.EqualValues(t, 3, calls.Load(), "the backend saw the abandoned request")
}

// TestServerForgetsARequestGivenUpWhileWaitingForRoom gives up on large
// requests waiting for room on a server that takes 4 streams per
// connection: the server must see each client leave and free its stream
// at once, not when room comes, so that the connection's next call is not
// refused as overloaded meanwhile.
func TestServerForgetsARequestGivenUpWhileWaitingForRoom(t *testing.T) {
	c, release, _, ev := heldBudget(t, WithMaxConcurrentCalls(4))
	// giveUp makes a call of n items, and gives up on it once it waits for
	// room.
	giveUp := func(n int) {
		t.Helper()
		waiting := ev.Count(EventWaitingForRoom)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := c.Process(ctx, make([]int64, n))
			done <- err
		}()
		ev.Await(t, EventWaitingForRoom, waiting+1)
		cancel()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(hangGuard):
			t.Fatal("a call waiting for the server's room did not end when cancelled")
		}
	}
	for range 3 {
		giveUp(10000)
	}
	// The server sees the three clients leave, and frees their streams,
	// before any room is made.
	ev.Await(t, EventStreamEnded, 3)
	// So a fourth call waits for room too (the budget is all taken),
	// rather than being refused: the held call and it are 2 streams of 4.
	giveUp(1)
	release()
}

// continueServer is a raw server whose streams each read a request's
// header, then hand the stream to serve.
func continueServer(t *testing.T, serve func(st *yamux.Stream, hdr []byte)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sessions []*yamux.Session
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, s := range sessions {
			s.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			sess, err := rawServerSession(conn)
			if err != nil {
				conn.Close()
				continue
			}
			mu.Lock()
			sessions = append(sessions, sess)
			mu.Unlock()
			wg.Go(func() {
				for {
					st, err := sess.AcceptStream()
					if err != nil {
						return
					}
					wg.Go(func() {
						defer st.Close()
						hdr := make([]byte, wire.HeaderSize)
						if _, err := io.ReadFull(st, hdr); err == nil {
							serve(st, hdr)
						}
					})
				}
			})
		}
	})
	return l.Addr().String()
}

func TestClientSendsALargePayloadOnlyWhenAsked(t *testing.T) {
	early := make(chan error, 1) // what the server saw before its continue
	addr := continueServer(t, func(st *yamux.Stream, hdr []byte) {
		// A correct client sends nothing more before the continue: a
		// non-event, checked for quietFor.
		st.SetReadDeadline(time.Now().Add(quietFor))
		var b [1]byte
		_, err := st.Read(b[:])
		early <- err
		st.SetReadDeadline(time.Now().Add(hangGuard))
		st.Write(wire.ContinueFrame)
		_, payload, err := wire.ReadPayload(st, 1<<20, hdr)
		if err != nil {
			return
		}
		in, err := Int64().Decode(nil, payload[wire.RequestPrefixSize:])
		if err != nil {
			return
		}
		out, _ := negate(context.Background(), in)
		resp := wire.AppendHeader(nil, wire.KindResponse)
		resp, _ = Int64().Append(resp, out)
		setFrameLength(resp, 0)
		st.Write(resp)
	})
	c := NewClient(addr, Int64(), Int64(), WithLogger(nil))
	defer c.Close()
	items := make([]int64, 10000)
	for i := range items {
		items[i] = int64(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	out, err := c.Process(ctx, items)
	require.NoError(t, err)
	require.Len(t, out, len(items))
	for i, v := range out {
		require.Equal(t, -items[i], v)
	}
	require.ErrorIs(t, <-early, yamux.ErrTimeout, "the client sent the payload before it was asked to")
}

func TestClientTakesARefusalInsteadOfAContinue(t *testing.T) {
	early := make(chan error, 1) // what the server saw before its refusal
	addr := continueServer(t, func(st *yamux.Stream, hdr []byte) {
		// A non-event, checked for quietFor, as above.
		st.SetReadDeadline(time.Now().Add(quietFor))
		var b [1]byte
		_, err := st.Read(b[:])
		early <- err
		st.Write(appendErrorFrame(nil, CodeOverloaded, "no room", 1<<20))
	})
	c := NewClient(addr, Int64(), Int64(), WithLogger(nil))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	_, err := c.Process(ctx, make([]int64, 10000))
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, CodeOverloaded, re.Code)
	require.ErrorIs(t, err, fanout.ErrOverloaded, "a refused request was not sent: safe to send again")
	require.Empty(t, idleIDs(c), "a stream refused before its payload is not kept")
	require.ErrorIs(t, <-early, yamux.ErrTimeout, "the client sent more than the header before the continue")

	// A continue frame with a payload breaks the protocol.
	addr = continueServer(t, func(st *yamux.Stream, hdr []byte) {
		st.Write([]byte{byte(wire.KindContinue), 1, 0, 0, 0, 0})
	})
	c2 := NewClient(addr, Int64(), Int64(), WithLogger(nil))
	defer c2.Close()
	_, err = c2.Process(ctx, make([]int64, 10000))
	require.ErrorIs(t, err, ErrProtocol)
	require.False(t, errors.Is(err, fanout.ErrUnavailable))
}

// TestServerGoneBeforeTheContinueIsSafeToRetry closes the server while a
// large request waits for room: the request's payload was never sent, so
// the call's error says that it was not processed.
func TestServerGoneBeforeTheContinueIsSafeToRetry(t *testing.T) {
	entered := make(chan struct{}, 1)
	gate := make(chan struct{})
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		// Not before the other calls have seen the server close: the
		// budget this call holds must not make room for them meanwhile.
		<-gate
		return nil, ctx.Err()
	})
	srv, c, ev := watchedServer(t, backend, WithMaxPendingBytes(200<<10), WithMaxPendingBytesPerConnection(200<<10))
	letGo := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(letGo) // before the server's Close, even if the test fails
	held := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), make([]int64, wholeBudget)) // all of the budget
		held <- err
	}()
	<-entered
	waiting := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), make([]int64, 10000))
		waiting <- err
	}()
	// A call in four chunks, all of them waiting for room: the first to
	// fail cancels the others, which were not sent either.
	chunked := NewClient(c.Addr(), Int64(), Int64(), WithLogger(nil), WithChunks(20000, 4))
	defer chunked.Close()
	waitingChunks := make(chan error, 1)
	go func() {
		_, err := chunked.Process(context.Background(), make([]int64, 80000))
		waitingChunks <- err
	}()
	// All five requests, the call and the four chunks, wait for room.
	ev.Await(t, EventWaitingForRoom, 5)
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }() // which waits for the held call
	for _, ch := range []chan error{waiting, waitingChunks, held} {
		if ch == held {
			letGo()
		}
		select {
		case err := <-ch:
			require.Error(t, err)
			if ch == held {
				require.ErrorIs(t, err, fanout.ErrInterrupted, "a request the server was processing")
			} else {
				require.ErrorIs(t, err, fanout.ErrUnavailable, "a request whose payload was not sent")
				require.False(t, errors.Is(err, fanout.ErrInterrupted), "%v", err)
			}
		case <-time.After(hangGuard):
			t.Fatal("a call did not end when its server closed")
		}
	}
	select {
	case <-closed:
	case <-time.After(hangGuard):
		t.Fatal("the server's Close did not return")
	}
}

// requestFrame returns n items, 0 to n-1, and a whole request frame of
// them without a deadline.
func requestFrame(t *testing.T, n int) ([]int64, []byte) {
	t.Helper()
	return requestFrameOf(t, n)
}

// requireQuiet checks that the server sends nothing on st for quietFor:
// it has no room for the request, and neither answers it nor asks for its
// payload. A correct server never does, however slow the machine.
func requireQuiet(t *testing.T, st *yamux.Stream) {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(quietFor))
	var b [1]byte
	_, err := st.Read(b[:])
	require.ErrorIs(t, err, yamux.ErrTimeout, "the server answered a request it has no room for")
	st.SetReadDeadline(time.Time{})
}

// requireNegated reads the next frame on st and checks that it is the
// response to items: each item negated.
func requireNegated(t *testing.T, st *yamux.Stream, items []int64) {
	t.Helper()
	k, payload, err := wire.ReadFrame(st, 1<<20, nil)
	require.NoError(t, err)
	require.Equal(t, wire.KindResponse, k)
	out, err := Int64().Decode(nil, payload)
	require.NoError(t, err)
	require.Equal(t, len(items), len(out))
	for i, v := range out {
		require.Equal(t, -items[i], v, "item %d", i)
	}
}
