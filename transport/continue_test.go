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

// Tests of the continue and wait frames: a request of more than
// continueAbove bytes of payload is sent whole and taken if the server has
// room for it, or dropped and asked for again once it has; a client asking
// first sends its header alone, and its payload once the server has room
// for it (PROTOCOL.md).

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
	return heldBudgetOf(t, 200<<10, opts...)
}

// heldBudgetOf is heldBudget with a budget of the given size.
func heldBudgetOf(t *testing.T, budget int64, opts ...ServerOption) (c *Client[int64, int64], release func(), calls *atomic.Int64, ev *Events) {
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
	_, c, ev = watchedServer(t, backend, append([]ServerOption{WithMaxPendingBytes(budget), WithMaxPendingBytesPerConnection(budget)}, opts...)...)
	letGo := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(letGo) // before the server's Close, even if the test fails

	held := make(chan error, 1)
	go func() {
		// A request of the whole budget takes all of it.
		_, err := c.Process(context.Background(), make([]int64, (budget-wire.RequestPrefixSize)/8))
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

// requireEmptyFrame reads the next frame on st and requires a frame of
// kind want with no payload (a continue or a wait frame).
func requireEmptyFrame(t *testing.T, st *yamux.Stream, want wire.Kind) {
	t.Helper()
	k, payload := readAnswer(t, st)
	require.Equal(t, want, k)
	require.Empty(t, payload)
}

// requireContinueOnRoom requires that the server, waiting for room for the
// request req of items on st, does not ask for its payload until release
// makes room, then asks with a continue frame and answers the payload sent.
func requireContinueOnRoom(t *testing.T, st *yamux.Stream, release func(), req []byte, items []int64) {
	t.Helper()
	requireQuiet(t, st) // a non-event, checked for quietFor
	release()
	requireEmptyFrame(t, st, wire.KindContinue)
	_, err := st.Write(req[wire.HeaderSize:])
	require.NoError(t, err)
	requireNegated(t, st, items)
}

// wholeBudget is the number of items of a request that takes the whole
// budget of heldBudget's server.
const wholeBudget = (200<<10 - wire.RequestPrefixSize) / 8

func TestServerAsksForALargePayloadOnceItHasRoom(t *testing.T) {
	c, release, _, _ := heldBudget(t)

	st := rawStream(t, c.Addr(), 1<<20)
	items, req := requestFrame(t, 10000)
	require.Greater(t, len(req)-wire.HeaderSize, wire.ContinueAbove)

	req[0] |= wire.FlagAsk
	_, err := st.Write(req[:wire.HeaderSize])
	require.NoError(t, err)
	// While the budget is taken, the server does not ask for the payload.
	requireContinueOnRoom(t, st, release, req, items)

	// A request small enough to go whole is answered without a continue,
	// on the same stream.
	small, frame := requestFrame(t, 2)
	_, err = st.Write(frame)
	require.NoError(t, err)
	requireNegated(t, st, small)
}

// TestServerDropsALargeRequestItHasNoRoomFor sends a large request whole
// while the budget is taken: the server answers with a wait frame, reads
// and drops the payload (it does not wait holding it), and asks for it
// again with a continue frame once it has room.
func TestServerDropsALargeRequestItHasNoRoomFor(t *testing.T) {
	c, release, calls, ev := heldBudgetOf(t, 1<<20)

	st := rawStream(t, c.Addr(), 1<<20)
	items, req := requestFrame(t, 100_000) // 800 KB: more than the stream window
	st.SetWriteDeadline(time.Now().Add(hangGuard))
	// The write ends only if the server reads the payload it has no room
	// for, which it drops.
	_, err := st.Write(req)
	require.NoError(t, err, "the server did not read a payload it had no room for")
	requireEmptyFrame(t, st, wire.KindWait)
	require.Equal(t, 1, ev.Count(EventDropping))
	// Dropped, the request waits for room with its header only, and the
	// server does not ask for it yet.
	ev.Await(t, EventWaitingForRoom, 1)
	requireContinueOnRoom(t, st, release, req, items)
	require.EqualValues(t, 2, calls.Load(), "the holder's call and the request sent again, once")
}

// TestDroppedPayloadThatStallsIsRefused: a payload being dropped for want
// of room must keep arriving, as one that had room must: one that stops
// for the stall timeout is refused as overloaded, not processed.
func TestDroppedPayloadThatStallsIsRefused(t *testing.T) {
	c, _, calls, ev := heldBudgetOf(t, 1<<20, WithStallTimeout(100*time.Millisecond))
	st := rawStream(t, c.Addr(), 1<<20)
	_, req := requestFrame(t, 10000)
	_, err := st.Write(req[:len(req)/2]) // then nothing more
	require.NoError(t, err)
	k, _ := readAnswer(t, st)
	require.Equal(t, wire.KindWait, k)
	ev.Await(t, EventStalled, 1)
	st.SetWriteDeadline(time.Now().Add(hangGuard)) // a hang guard
	_, err = st.Write(req[len(req)/2:])
	require.NoError(t, err, "the server stopped reading a stalled payload")
	msg := requireErrorFrame(t, st, CodeOverloaded, "not processed")
	require.NotContains(t, msg, "its room in the budget", "a dropped request held no room")
	require.EqualValues(t, 1, calls.Load(), "only the holder's call")
}

// TestServerRefusesAPayloadSentBeforeItsContinue: once the server has
// dropped a payload and waits for room, the client must send nothing until
// the continue frame.
func TestServerRefusesAPayloadSentBeforeItsContinue(t *testing.T) {
	c, _, _, ev := heldBudget(t)
	st := rawStream(t, c.Addr(), 1<<20)
	_, req := requestFrame(t, 10000)
	_, err := st.Write(req)
	require.NoError(t, err)
	k, _ := readAnswer(t, st)
	require.Equal(t, wire.KindWait, k)
	ev.Await(t, EventWaitingForRoom, 1)
	_, err = st.Write(req[wire.HeaderSize:]) // unasked
	require.NoError(t, err)
	requireErrorFrame(t, st, CodeBadRequest, "request payload sent before the continue frame")
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

// answerNegated reads the payload of the request whose header is hdr
// from st and answers it with every item negated, as a raw server.
func answerNegated(st *yamux.Stream, hdr []byte) {
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
}

// checkedCall makes a call of n items 0 to n-1 on c and checks that each
// result is the item negated.
func checkedCall(t *testing.T, c *Client[int64, int64], n int) {
	t.Helper()
	items := make([]int64, n)
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
}

// TestAskingFirstAsPROTOCOLSays sends PROTOCOL.md's example of a call
// asking first, byte for byte.
func TestAskingFirstAsPROTOCOLSays(t *testing.T) {
	srv := NewServer(fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
		out := make([]int64, len(in))
		for i, n := range in {
			out[i] = n * n
		}
		return out, nil
	}), Int64(), Int64(), WithLogger(nil))
	addr := serveOn(t, srv)
	st := rawStream(t, addr, 1<<20)
	defer st.Close()
	st.SetDeadline(time.Now().Add(hangGuard))
	_, err := st.Write(unhex(t, "81 10 00 00 00"))
	require.NoError(t, err)
	got := make([]byte, wire.HeaderSize)
	_, err = io.ReadFull(st, got)
	require.NoError(t, err)
	require.Equal(t, unhex(t, "04 00 00 00 00"), got, "the continue frame")
	_, err = st.Write(unhex(t, "00 94 35 77 00 00 00 00  fd ff ff ff ff ff ff ff"))
	require.NoError(t, err)
	got = make([]byte, 13)
	_, err = io.ReadFull(st, got)
	require.NoError(t, err)
	require.Equal(t, unhex(t, "02 08 00 00 00  09 00 00 00 00 00 00 00"), got)
}

func TestClientSendsALargeRequestWhole(t *testing.T) {
	kinds := make(chan byte, 1)
	addr := continueServer(t, func(st *yamux.Stream, hdr []byte) {
		kinds <- hdr[0]
		answerNegated(st, hdr) // the payload follows the header unasked
	})
	c := NewClient(addr, Int64(), Int64(), WithLogger(nil))
	defer c.Close()
	checkedCall(t, c, 10000)
	require.Equal(t, byte(wire.KindRequest), <-kinds, "a large request sent whole, not asking first")
}

// TestClientSendsAgainAfterAWaitThenAsksFirst: a server with no room for a
// large request sent whole answers with a wait frame, drops the payload and
// asks for it again; the client sends it again only when asked, and asks
// first for the large requests it sends next.
func TestClientSendsAgainAfterAWaitThenAsksFirst(t *testing.T) {
	var calls atomic.Int32
	early := make(chan error, 2) // what the server saw before its continue
	kinds := make(chan byte, 2)
	addr := continueServer(t, func(st *yamux.Stream, hdr []byte) {
		// As a server does, it serves the stream's requests one after
		// another: the client may send the next call on the same stream.
		for {
			kinds <- hdr[0]
			st.SetReadDeadline(time.Now().Add(hangGuard))
			if calls.Add(1) == 1 {
				st.Write(wire.WaitFrame)
				_, n, err := wire.ParseHeader(hdr, 1<<20)
				if err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, st, int64(n)); err != nil {
					return
				}
			}
			// A correct client sends nothing more before the continue: a
			// non-event, checked for quietFor.
			st.SetReadDeadline(time.Now().Add(quietFor))
			var b [1]byte
			_, err := st.Read(b[:])
			early <- err
			st.SetReadDeadline(time.Now().Add(hangGuard))
			st.Write(wire.ContinueFrame)
			answerNegated(st, hdr)
			st.SetReadDeadline(time.Time{})
			if _, err := io.ReadFull(st, hdr); err != nil {
				return
			}
		}
	})
	c := NewClient(addr, Int64(), Int64(), WithLogger(nil))
	defer c.Close()
	checkedCall(t, c, 10000)
	require.Equal(t, byte(wire.KindRequest), <-kinds, "the first request sent whole")
	require.ErrorIs(t, <-early, yamux.ErrTimeout, "the client sent the payload again before it was asked to")
	checkedCall(t, c, 10000)
	require.Equal(t, byte(wire.KindRequest|wire.FlagAsk), <-kinds, "the next large request asks first")
	require.ErrorIs(t, <-early, yamux.ErrTimeout, "the client sent the payload before it was asked to")
}

// TestClientAsksFirstPastTheServersShare: a large request that would take
// the client's large requests in flight past the server's maximum (its
// share of the budget for one connection) asks first rather than being
// sent whole, since the server could not take it now: it is neither
// dropped nor sent twice.
func TestClientAsksFirstPastTheServersShare(t *testing.T) {
	c, release, calls, ev := heldBudgetOf(t, 1<<20) // its holder: one large request of the whole share
	done := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), make([]int64, 100_000))
		done <- err
	}()
	ev.Await(t, EventWaitingForRoom, 1)
	require.Zero(t, ev.Count(EventDropping), "a request past the share was sent whole, and dropped")
	release()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(hangGuard):
		t.Fatal("the call asking first was not served once there was room")
	}
	require.EqualValues(t, 2, calls.Load())
	require.Zero(t, ev.Count(EventDropping))
}

func TestClientTakesARefusalInsteadOfAContinue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	refuse := func(st *yamux.Stream) {
		st.Write(appendErrorFrame(nil, CodeOverloaded, "no room", 1<<20))
	}
	requireRefused := func(c *Client[int64, int64], n int) {
		t.Helper()
		_, err := c.Process(ctx, make([]int64, n))
		var re *RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, CodeOverloaded, re.Code)
		require.ErrorIs(t, err, fanout.ErrOverloaded, "a refused request was not processed: safe to send again")
		require.Empty(t, idleIDs(c), "a stream refused before its payload was read is not kept")
	}

	// Sent whole and refused from its header, the payload unread: the
	// refusal ends the client's write, which would otherwise wait for the
	// stream's window until the write timeout, after the call's deadline.
	addr := continueServer(t, func(st *yamux.Stream, hdr []byte) { refuse(st) })
	c := NewClient(addr, Int64(), Int64(), WithLogger(nil), WithWriteTimeout(time.Hour))
	defer c.Close()
	requireRefused(c, 100_000) // 800 KB: more than the stream's window

	// Asking first, refused before the continue.
	early := make(chan error, 1) // what the server saw before its refusal
	addr = continueServer(t, func(st *yamux.Stream, hdr []byte) {
		// A non-event, checked for quietFor, as above.
		st.SetReadDeadline(time.Now().Add(quietFor))
		var b [1]byte
		_, err := st.Read(b[:])
		early <- err
		refuse(st)
	})
	asking := NewClient(addr, Int64(), Int64(), WithLogger(nil))
	defer asking.Close()
	asking.askUntil.Store(time.Now().Add(time.Hour).UnixNano())
	requireRefused(asking, 10000)
	require.ErrorIs(t, <-early, yamux.ErrTimeout, "the client sent more than the header before the continue")

	// A continue or a wait frame with a payload, or an answer before the
	// request was read, breaks the protocol.
	for name, frame := range map[string][]byte{
		"continue with a payload": {byte(wire.KindContinue), 1, 0, 0, 0, 0},
		"wait with a payload":     {byte(wire.KindWait), 1, 0, 0, 0, 0},
		"an early answer":         {byte(wire.KindResponse), 0, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			addr := continueServer(t, func(st *yamux.Stream, hdr []byte) { st.Write(frame) })
			c := NewClient(addr, Int64(), Int64(), WithLogger(nil), WithWriteTimeout(time.Hour))
			defer c.Close()
			if frame[0] == byte(wire.KindContinue) {
				c.askUntil.Store(time.Now().Add(time.Hour).UnixNano())
			}
			_, err := c.Process(ctx, make([]int64, 100_000))
			require.ErrorIs(t, err, ErrProtocol)
			require.False(t, errors.Is(err, fanout.ErrUnavailable))
		})
	}
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
