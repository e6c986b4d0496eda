package transport

import (
	"context"
	"encoding/binary"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// Attacks on the request budget and on the streams a server keeps, each
// run while the well-behaved callers of attack_test.go call the same
// server.

// readAnswer reads the next frame on st within a hang guard and returns its
// kind and payload.
func readAnswer(t *testing.T, st *yamux.Stream) (wire.Kind, []byte) {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(eventGuard)) // a hang guard, not a speed check
	k, payload, err := wire.ReadFrame(st, 1<<20, nil)
	require.NoError(t, err)
	st.SetReadDeadline(time.Time{})
	return k, payload
}

// requireErrorFrame reads the next frame on st and requires an error frame
// of code whose message contains text, and returns the message.
func requireErrorFrame(t *testing.T, st *yamux.Stream, code Code, text string) (msg string) {
	t.Helper()
	k, payload := readAnswer(t, st)
	require.Equal(t, wire.KindError, k)
	got, msg, err := parseError(payload)
	require.NoError(t, err)
	require.Equal(t, code, got, msg)
	require.Contains(t, msg, text)
	return msg
}

// TestAttackSilentLargeRequests: one connection opens 4 streams, each
// sends the 5-byte header of a large request and then nothing. Today's
// defaults: a 16 MiB budget, a quarter of it per connection, a 2 s stall
// timeout. A header of a 16 MiB request is refused at once (larger than a
// connection's share); a header of a request of the whole share gets its
// continue frame, one stream at a time (the connection's share), and loses
// its room after the stall timeout. The well-behaved callers, on other
// connections, never wait for the attacker's room, and nothing is
// allocated for the payloads that never come.
func TestAttackSilentLargeRequests(t *testing.T) {
	at := serveForAttack(t)
	h := watchHeap()
	v := underAttack(t, at.addr)

	sess := rawClientSession(t, at.addr, 1<<20)
	defer sess.Close()
	header := func(n int) []byte {
		// Asking first: the client says it sends no payload before the
		// continue frame.
		hdr := wire.AppendHeader(nil, wire.KindRequest|wire.FlagAsk)
		binary.LittleEndian.PutUint32(hdr[1:], uint32(n))
		return hdr
	}

	// 16 MiB, the maximum message size but more than the share: refused
	// from its header.
	st, err := sess.OpenStream()
	require.NoError(t, err)
	_, err = st.Write(header(DefaultMaxMessageSize))
	require.NoError(t, err)
	requireErrorFrame(t, st, CodeTooLarge, "the server accepts at most 4194304")

	// The whole share, four times at once, silent after the header.
	const streams = 4
	var wg sync.WaitGroup
	for range streams {
		st, err := sess.OpenStream()
		require.NoError(t, err)
		_, err = st.Write(header(DefaultMaxPendingBytes / 4))
		require.NoError(t, err)
		wg.Go(func() {
			k, payload := readAnswer(t, st)
			require.Equal(t, wire.KindContinue, k, "%q", payload)
			requireErrorFrame(t, st, CodeOverloaded, "no byte of the request's payload for 2s")
		})
	}
	wg.Wait()
	require.Equal(t, streams, at.ev.Count(EventStalled))

	v.Finish(t, time.Second)
	// Four 4 MiB payloads announced, none sent: nothing near their size is
	// held.
	requireHeapWithin(t, h, 8<<20, "payloads announced and not sent are not allocated")
}

// TestAttackStreamsThatNeverReadTheirAnswers: one connection, 64 streams,
// each sending a request of 100,000 numbers (800 KB) and never reading its
// answer. The connection holds at most its share of the budget (4 MiB: 5
// such requests) while their answers wait for the write timeout (0.5 s
// here), after which each stream is closed and its room given back. The
// well-behaved callers use the rest of the budget meanwhile.
func TestAttackStreamsThatNeverReadTheirAnswers(t *testing.T) {
	const (
		streams = 64
		numbers = 100_000
	)
	at := serveForAttack(t, WithWriteTimeout(500*time.Millisecond))
	// The heap follows what is live more closely: the answers written
	// and dropped are garbage soon collected.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	h := watchHeap()
	v := underAttack(t, at.addr)

	sess := rawClientSession(t, at.addr, 1<<20)
	defer sess.Close()
	_, req := requestFrameOf(t, numbers)
	req[0] |= wire.FlagAsk
	var wg sync.WaitGroup
	for range streams {
		st, err := sess.OpenStream()
		require.NoError(t, err)
		wg.Go(func() {
			// The protocol followed to the letter, but for reading the
			// answer: the header asking first, the continue, the payload.
			_, err := st.Write(req[:wire.HeaderSize])
			require.NoError(t, err)
			k, _ := readAnswer(t, st)
			require.Equal(t, wire.KindContinue, k)
			_, err = st.Write(req[wire.HeaderSize:])
			require.NoError(t, err)
		})
	}
	wg.Wait()
	at.ev.Await(t, EventUnwritten, streams)

	v.Finish(t, 2*time.Second)
	// The server holds at most the share's requests (4 MiB), their items
	// and answers (as much again each); the attacker, in this process too,
	// keeps each unread answer's stream window in a buffer that yamux grows
	// to two windows (512 KiB); 16 MiB for the rest, and a quarter more for
	// the garbage the collector leaves.
	requireHeapWithin(t, h, (3*4<<20+streams*512<<10+16<<20)*5/4, "a connection's share three times, two stream windows per attacker stream, 16 MiB, and a quarter for garbage")

	// The server serves on.
	c := NewClient(at.addr, Int64(), Int64(), WithLogger(slog.New(slog.DiscardHandler)))
	defer c.Close()
	out, err := c.Process(context.Background(), []int64{7})
	require.NoError(t, err)
	require.Equal(t, []int64{-7}, out)
}

// requestFrameOf is requestFrame for n numbers, with a limit fit for them.
func requestFrameOf(t *testing.T, n int) ([]int64, []byte) {
	t.Helper()
	items := make([]int64, n)
	for i := range items {
		items[i] = int64(i)
	}
	req := wire.AppendHeader(nil, wire.KindRequest)
	req = append(req, make([]byte, wire.RequestPrefixSize)...)
	req, err := Int64().Append(req, items)
	require.NoError(t, err)
	require.NoError(t, wire.FinishFrame(req, 0, maxMessageLimit))
	return items, req
}

// openIdle opens n streams on sess, each carrying one small call, answered,
// and then left open. It returns the streams the server took, and counts
// those it refused as overloaded.
func openIdle(t *testing.T, sess *yamux.Session, n int, refused *atomic.Int64) []*yamux.Stream {
	t.Helper()
	_, req := requestFrameOf(t, 1)
	var kept []*yamux.Stream
	for range n {
		st, err := sess.OpenStream()
		require.NoError(t, err)
		_, err = st.Write(req)
		require.NoError(t, err)
		k, payload := readAnswer(t, st)
		if k == wire.KindError {
			code, msg, err := parseError(payload)
			require.NoError(t, err)
			require.Equal(t, CodeOverloaded, code, msg)
			require.Contains(t, msg, "server-wide stream limit of")
			refused.Add(1)
			st.Close()
			continue
		}
		require.Equal(t, wire.KindResponse, k)
		kept = append(kept, st)
	}
	return kept
}

// TestAttackStreamsLeftOpen: 4 connections open 1,024 streams each (the
// per-connection bound), each makes one small call and stays open. The
// server keeps at most its server-wide bound of streams (2,048 here) plus
// one per connection, and refuses the rest as overloaded; the well-behaved
// callers, whose connections each get their first stream whatever the
// count, are served.
func TestAttackStreamsLeftOpen(t *testing.T) {
	const (
		conns     = 4
		perConn   = 1024
		maxStream = 2048
	)
	at := serveForAttack(t, WithMaxStreams(maxStream), WithIdleTimeout(0))
	h := watchHeap()
	v := underAttack(t, at.addr)

	var refused atomic.Int64
	var mu sync.Mutex
	var kept []*yamux.Stream
	var wg sync.WaitGroup
	for range conns {
		sess := rawClientSession(t, at.addr, 1<<20)
		defer sess.Close()
		wg.Go(func() {
			ks := openIdle(t, sess, perConn, &refused)
			mu.Lock()
			kept = append(kept, ks...)
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("streams kept open: %d, refused as overloaded: %d", len(kept), refused.Load())
	require.LessOrEqual(t, len(kept), maxStream)
	require.Greater(t, refused.Load(), int64(0))
	require.EqualValues(t, conns*perConn, int64(len(kept))+refused.Load())

	v.Finish(t, 2*time.Second)
	// Both ends of every stream live in this process: the server's record,
	// goroutine and yamux stream, and the attacker's yamux stream.
	requireHeapWithin(t, h, uint64(maxStream+2*conns)*48<<10, "48 KiB per stream kept, both ends")
}

// TestIdleStreamsAreReclaimed: 1,000 streams each make one small call and
// stay open, on a server that closes streams idle for 200 ms: each is
// answered with code 9 and closed, and their memory goes back. Meanwhile
// the well-behaved callers, whose streams the server closes too when they
// idle, are served: a request that crosses the server's closing is sent
// again.
func TestIdleStreamsAreReclaimed(t *testing.T) {
	const n = 1000
	at := serveForAttack(t, WithIdleTimeout(200*time.Millisecond))
	base := watchHeap()
	v := underAttack(t, at.addr)

	sess := rawClientSession(t, at.addr, 1<<20)
	defer sess.Close()
	var refused atomic.Int64
	kept := openIdle(t, sess, n, &refused)
	require.Len(t, kept, n)
	for _, st := range kept {
		requireErrorFrame(t, st, CodeStreamIdle, "without a request")
	}
	at.ev.Await(t, EventIdleClosed, n)
	v.Finish(t, 2*time.Second)
	for _, st := range kept {
		st.Close()
	}
	sess.Close()
	requireHeapWithin(t, base, 64<<20, "1,000 idle streams at most, then none")
}

// TestTooLargeAnswerRefusedBeforeTheWork: a client that accepts messages of
// at most 1 KiB asks for the answer to 1,000 numbers (8,000 bytes): the
// server, whose response codec tells the answer's size ahead, refuses the
// request without calling the backend, and the stream's next call is
// served.
func TestTooLargeAnswerRefusedBeforeTheWork(t *testing.T) {
	var calls atomic.Int64
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		calls.Add(1)
		return negate(ctx, in)
	})
	_, c, _ := watchedServer(t, backend)
	st := rawStream(t, c.Addr(), 1024)
	_, req := requestFrameOf(t, 1000)
	_, err := st.Write(req)
	require.NoError(t, err)
	requireErrorFrame(t, st, CodeTooLarge, "response refused before processing")
	require.Zero(t, calls.Load(), "the backend did the work of an answer that could not be sent")
}

// TestStalledRequestIsAnsweredNotReset: a client slow rather than silent,
// whose request stalls past the stall timeout and then arrives after all,
// finishes writing it and reads the refusal (overloaded: not processed),
// rather than having its write cut by a reset; the stream then ends.
func TestStalledRequestIsAnsweredNotReset(t *testing.T) {
	at := serveForAttack(t, WithStallTimeout(100*time.Millisecond))
	st := rawStream(t, at.addr, 1<<20)
	_, req := requestFrameOf(t, 100_000) // 800 KB: more than the stream window
	req[0] |= wire.FlagAsk
	_, err := st.Write(req[:wire.HeaderSize])
	require.NoError(t, err)
	k, _ := readAnswer(t, st)
	require.Equal(t, wire.KindContinue, k)
	at.ev.Await(t, EventStalled, 1)
	st.SetWriteDeadline(time.Now().Add(eventGuard)) // a hang guard
	_, err = st.Write(req[wire.HeaderSize:])
	require.NoError(t, err, "the server stopped reading a stalled request's payload")
	requireErrorFrame(t, st, CodeOverloaded, "not processed")
	re := &RemoteError{Code: CodeOverloaded}
	require.ErrorIs(t, re, fanout.ErrOverloaded)
}
