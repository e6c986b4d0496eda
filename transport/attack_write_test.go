package transport

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// The attack on the write side: peers that send many calls and never read
// the socket, so that every answer the server writes waits for them.

const (
	neverReadRequests = 500  // requests each attacking connection sends
	neverReadItems    = 8000 // numbers in each request: 64,008 bytes of payload, sent whole (no continue)
	// neverReadTimeout is the server's write timeout in the attack: after
	// it, a peer that has taken nothing is cut off.
	neverReadTimeout = time.Second
)

// appendYamuxData appends a yamux data frame of stream id, with flags,
// carrying body.
func appendYamuxData(dst []byte, id uint32, flags uint16, body []byte) []byte {
	var hdr [yamuxHeaderSize]byte
	hdr[1] = yamuxTypeData
	binary.BigEndian.PutUint16(hdr[2:], flags)
	binary.BigEndian.PutUint32(hdr[4:], id)
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(body)))
	return append(append(dst, hdr[:]...), body...)
}

// neverReadingPeer dials addr and does the handshake by hand, then returns
// the connection, on which the caller writes yamux frames and never reads.
func neverReadingPeer(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.Write(wire.AppendHello(nil, wire.Hello{Version: wire.Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: 1 << 20}))
	require.NoError(t, err)
	_, err = wire.ReadHello(conn)
	require.NoError(t, err)
	status, msg, err := wire.ReadStatus(conn)
	require.NoError(t, err)
	require.EqualValues(t, wire.StatusOK, status, msg)
	return conn
}

// neverReadFrames returns what a never-reading peer sends: n streams (odd
// IDs, as a yamux client's), each opened by a data frame with SYN that
// carries one request of neverReadItems numbers and no deadline. One
// request per stream stays far within the stream's window (256 KiB) both
// ways, so that the server's answers wait for the connection only.
func neverReadFrames(n int) []byte {
	req := wire.AppendHeader(nil, wire.KindRequest)
	req = binary.LittleEndian.AppendUint64(req, 0) // no deadline
	for i := range neverReadItems {
		req = binary.LittleEndian.AppendUint64(req, uint64(i))
	}
	setFrameLength(req, 0)
	out := make([]byte, 0, n*(yamuxHeaderSize+len(req)))
	for i := range n {
		out = appendYamuxData(out, uint32(2*i+1), yamuxFlagSYN, req)
	}
	return out
}

// awaitState waits, woken by each of the server's events, until cond
// holds, and fails t after a generous hang guard.
func awaitState(t *testing.T, e *Events, cond func() bool) {
	t.Helper()
	guard := time.NewTimer(eventGuard)
	defer guard.Stop()
	for {
		e.mu.Lock()
		changed := e.changed
		e.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("the server did not reach the state awaited in %v", eventGuard)
		}
	}
}

// servesAny reports whether srv still has a connection from one of the
// addresses in remotes.
func servesAny[In, Out any](srv *Server[In, Out], remotes []string) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for c := range srv.conns {
		if slices.Contains(remotes, c.RemoteAddr().String()) {
			return true
		}
	}
	return false
}

// heapInUse collects garbage (twice, so that sync.Pools are emptied too)
// and returns the heap in use.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestAttackConnectionsThatNeverRead attacks a server with connections that
// send neverReadRequests requests of neverReadItems numbers each and never
// read the socket, on 1 and on 8 connections at once, while well-behaved
// callers call it. Their calls must all succeed; the coalescers' buffers
// must stay within the server's bounds (WithMaxWriteBuffer) and the heap
// within a bound derived from them, the request budget and what the
// attackers sent; every attacker must be cut off once its writes time out,
// its memory given back; and the server must go on serving.
func TestAttackConnectionsThatNeverRead(t *testing.T) {
	for _, conns := range []int{1, 8} {
		t.Run(fmt.Sprintf("conns=%d", conns), func(t *testing.T) { attackNeverRead(t, conns) })
	}
}

func attackNeverRead(t *testing.T, conns int, opts ...ServerOption) {
	// Collect garbage sooner than by default, so that the heap in use
	// follows what the server holds more closely: the bound allows a
	// quarter more for garbage not yet collected.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	// A short request timeout too: it is how long yamux keeps the
	// attackers' streams after they are cut off (see the end), so that
	// the tests that follow do not see their memory.
	at := serveForAttack(t, append([]ServerOption{WithWriteTimeout(neverReadTimeout), WithRequestTimeout(neverReadTimeout)}, opts...)...)
	v := underAttack(t, at.addr)
	pool := at.srv.cfg.writePool
	frames := make([][]byte, conns)
	attackBytes := uint64(0)
	for i := range frames {
		frames[i] = neverReadFrames(neverReadRequests)
		attackBytes += uint64(len(frames[i]))
	}
	frameSize := uint64(len(neverReadFrames(1)))

	base := heapInUse()
	h := watchHeap()
	peers := make([]net.Conn, conns)
	remotes := make([]string, conns)
	for i := range peers {
		peers[i] = neverReadingPeer(t, at.addr)
		remotes[i] = peers[i].LocalAddr().String()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range peers {
		// The write ends when it is done or when the server cuts the
		// peer off; either way the peer reads nothing.
		wg.Go(func() { c.Write(frames[i]) })
	}
	// Every attacker is cut off once the server's writes to it time out.
	awaitState(t, at.ev, func() bool { return !servesAny(at.srv, remotes) })
	cutOff := time.Since(start)
	wg.Wait()
	for _, c := range peers {
		c.Close()
	}

	// The bound: the write side holds at most its server-wide pool, and a
	// connection at most two buffers of its cap, whichever is less, plus
	// a frame header per connection (headers are buffered past the
	// bounds). The request side holds at most the request budget's worth
	// of calls (items, answer and its encoding: 3 copies); yamux holds up
	// to 64 frames queued per connection; and every request the attackers
	// sent and the server has not read yet waits in its stream's receive
	// buffer, which yamux grows to twice the frame (the first buffer is
	// garbage then, until collected: three frames in all).
	writeSide := min(uint64(conns)*2*DefaultMaxWriteBuffer, DefaultMaxWriteBuffers) + uint64(conns*yamuxHeaderSize)
	requestSide := 3*uint64(DefaultMaxPendingBytes) + 3*attackBytes
	queued := uint64(conns) * 64 * frameSize
	slack := uint64(16 << 20) // the well-behaved callers, goroutines, yamux's own buffers, garbage not yet collected
	bound := (writeSide + requestSide + queued + slack) * 5 / 4
	t.Logf("attack: %d connection(s), %d requests of %d numbers on each, %.1f MiB sent; cut off after %v (write timeout %v)",
		conns, neverReadRequests, neverReadItems, float64(attackBytes)/(1<<20), cutOff.Round(time.Millisecond), neverReadTimeout)
	t.Logf("coalescers' buffers: peak %.2f MiB (bound %.2f MiB)", float64(pool.peak.Load())/(1<<20), float64(writeSide)/(1<<20))
	requireHeapWithin(t, h, bound, fmt.Sprintf("(write side %.0f MiB + request side %.0f MiB + yamux queues %.0f MiB + %.0f MiB) x 1.25",
		float64(writeSide)/(1<<20), float64(requestSide)/(1<<20), float64(queued)/(1<<20), float64(slack)/(1<<20)))
	require.LessOrEqual(t, uint64(pool.peak.Load()), writeSide, "the coalescers held more than their bounds")

	// The server goes on serving: the well-behaved callers get answers
	// after the attackers are gone. A well-behaved call may have waited
	// for room in the request budget, which the attackers' calls hold
	// until they are cut off (the budget's fairness is not this test's):
	// the bound is ten write timeouts.
	at.ev.Await(t, EventAnswered, at.ev.Count(EventAnswered)+4)
	v.Finish(t, 10*neverReadTimeout)

	// Once every connection has closed (the well-behaved callers' too),
	// the coalescers hold nothing, and the attackers' memory is given
	// back.
	awaitState(t, at.ev, func() bool {
		at.srv.mu.Lock()
		defer at.srv.mu.Unlock()
		return len(at.srv.conns) == 0
	})
	require.Zero(t, pool.used.Load(), "the coalescers of closed connections still hold buffers")
	// Nothing of the server keeps the attack's memory (pools, maps) once
	// its goroutines have ended, with one exception: yamux (v0.1.2) keeps
	// a stream the server closed but its peer did not, with the requests
	// unread in its receive buffer, until the stream's close timeout
	// (the request timeout) even after its session has closed, and the
	// attackers' streams are such. So the heap comes back to the baseline
	// but for at most the attackers' requests (three frames each, as
	// above); the coalescers, which those streams reach through their
	// session, hold nothing (pool.used above).
	require.NoError(t, at.srv.Close())
	after := heapInUse()
	runtime.KeepAlive(frames) // counted in the baseline
	t.Logf("heap in use after the attack: %.1f MiB above the baseline (bound %.1f MiB: requests left to yamux's close timers + %.0f MiB)",
		(float64(after)-float64(base))/(1<<20), float64(3*attackBytes+slack)/(1<<20), float64(slack)/(1<<20))
	require.LessOrEqual(t, after, base+3*attackBytes+slack, "the server kept memory of the attack after its connections closed")
}
