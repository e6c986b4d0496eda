package transport

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
)

// The attack on connection slots: a host that opens many TCP connections
// and sends nothing on them, opening each again as soon as the server
// closes it, to keep every other client out of the handshake.

// attackerHost is the loopback address a test's attacker dials from, so
// that it is another host than the well-behaved clients on 127.0.0.1.
var attackerHost = net.IPv4(127, 0, 0, 2)

// attackerDialer returns a dialer from attackerHost, or skips the test
// where that address cannot be bound (only 127.0.0.1 is loopback there).
func attackerDialer(t *testing.T, addr string) *net.Dialer {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: attackerHost}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("skipped: the attacker needs a second loopback host, and %v cannot be bound here: %v", attackerHost, err)
	}
	conn.Close()
	return d
}

// awaitHandshakesOver waits until srv has no connection in its handshake
// or being refused: each connection gives back its slot before it reports
// its end, so no end is missed between the count and the check.
func awaitHandshakesOver(t *testing.T, at *attackTarget) {
	t.Helper()
	for {
		ended := at.ev.Count(EventConnEnded)
		at.srv.mu.Lock()
		left := at.srv.slots.handshaking + at.srv.slots.refusing
		at.srv.mu.Unlock()
		if left == 0 {
			return
		}
		at.ev.Await(t, EventConnEnded, ended+1)
	}
}

// silentAttack counts what a silent attacker's connections met.
type silentAttack struct {
	opened   atomic.Int64 // connections opened
	answered atomic.Int64 // of those, closed by the server after sending something
	failed   atomic.Int64 // dials that failed
	wg       sync.WaitGroup
}

// attackSilently opens n connections to addr with d, sends nothing on them,
// and opens each again as soon as the server closes it, until ctx ends.
func attackSilently(ctx context.Context, d *net.Dialer, addr string, n int) *silentAttack {
	a := &silentAttack{}
	for range n {
		a.wg.Go(func() {
			for ctx.Err() == nil {
				conn, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					if ctx.Err() == nil {
						a.failed.Add(1)
						// Paces a failing dial (out of ports or files, say).
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				a.opened.Add(1)
				stop := context.AfterFunc(ctx, func() { conn.Close() })
				got, _ := io.Copy(io.Discard, conn) // until the server closes it
				stop()
				conn.Close()
				if got > 0 {
					a.answered.Add(1)
				}
			}
		})
	}
	return a
}

func TestAttackSilentConnections(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // after the server's cleanup
	// The server's defaults: the handshake timeout and limits under test.
	at := serveForAttack(t)
	d := attackerDialer(t, at.addr)

	// Each silent connection costs two files here, the attacker's and the
	// server's, while the server holds it; leave room for the rest.
	n := 2000
	if limit := openFileLimit(); limit > 0 {
		n = min(n, (limit-256)/2)
	}
	t.Logf("open file limit %d: %d silent connections from %v", openFileLimit(), n, attackerHost)
	require.Greater(t, n, DefaultMaxHandshakesPerHost+maxRefusing, "too few files to fill the slots")

	h := watchHeap()
	v := underAttack(t, at.addr)
	ctx, stop := context.WithCancel(context.Background())
	a := attackSilently(ctx, d, at.addr, n)
	// The attack lasts a handshake timeout and a little more: each
	// connection in a slot is closed at its timeout and opened again.
	// (The sleep paces the attack; no state is waited for.)
	time.Sleep(DefaultHandshakeTimeout + time.Second)
	stop()
	a.wg.Wait()
	t.Logf("attacker: %d connections opened, %d answered before the server closed them, %d dials failed",
		a.opened.Load(), a.answered.Load(), a.failed.Load())

	// The fresh caller's handshakes waited only for the accept queue, which
	// the attacker fills with its connections again and again.
	v.Finish(t, 3*time.Second)
	// The server holds a goroutine, a connection and its handshake's
	// buffers for each connection in a handshake slot or a refusal, and
	// nothing for the ones it closes at once; the attacker's own n
	// connections are in this process too, and the churn makes garbage.
	const perConn = 16 << 10
	bound := uint64(32<<20 + (DefaultMaxHandshakes+maxRefusing)*perConn + n*perConn)
	requireHeapWithin(t, h, bound, "32 MiB + 16 KiB for each handshake slot and refusal of the server's, and for each of the attacker's connections")
	require.Greater(t, a.opened.Load(), int64(n), "the server closed no silent connection")

	// Once the attacker has gone, the server serves clients from its host
	// as from any other. Connections the attacker closed may still wait in
	// the listener's accept queue: each takes a handshake slot once
	// accepted, until the server reads its end, so a client can find its
	// host's slots full for a moment after the attack, and be told the
	// server is busy. It is then served once those connections are gone.
	c := NewClient(at.addr, Int64(), Int64(), WithLogger(nil), WithRedialBackoff(time.Millisecond, time.Millisecond),
		WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	defer c.Close()
	deadline := time.Now().Add(hangGuard)
	for {
		awaitHandshakesOver(t, at)
		out, err := c.Process(context.Background(), []int64{5})
		if err == nil {
			require.Equal(t, []int64{-5}, out)
			break
		}
		require.ErrorContains(t, err, "busy", "the only refusal a client of the attacker's host may meet")
		require.True(t, time.Now().Before(deadline), "still refused after %v: %v", hangGuard, err)
		time.Sleep(2 * time.Millisecond) // the client's redial backoff: paces the loop, decides nothing
	}
}

// A client refused for want of a handshake slot is told that the server is
// busy, and why; once the refusals are full too, it is closed unanswered,
// and the client's error says the server may be busy, not only that it may
// require TLS.
func TestHandshakeSlotsFullRefusedAsBusy(t *testing.T) {
	call := func(addr string, copts ...ClientOption) error {
		c := NewClient(addr, Int64(), Int64(), append([]ClientOption{WithLogger(nil)}, copts...)...)
		defer c.Close()
		_, err := c.Process(context.Background(), []int64{1})
		return err
	}
	dialSilent := func(t *testing.T, addr string, n int) {
		for range n {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
		}
	}

	t.Run("total", func(t *testing.T) {
		at := serveForAttack(t, WithHandshakeLimits(1, 1), WithHandshakeTimeout(time.Minute), WithRefuseTimeout(time.Minute))
		dialSilent(t, at.addr, 1) // holds the one handshake slot
		err := call(at.addr)
		t.Logf("refused: %v", err)
		require.ErrorIs(t, err, fanout.ErrUnavailable)
		require.NotErrorIs(t, err, ErrHandshake, "a busy server is no protocol mismatch")
		require.ErrorContains(t, err, "connection refused: server busy: at its limit of 1 connections in their handshake")
		require.NotContains(t, err.Error(), "TLS")

		// With every refusal under way too (each waits for a hello), the
		// next connection is closed unanswered.
		dialSilent(t, at.addr, maxRefusing)
		err = call(at.addr)
		t.Logf("closed unanswered: %v", err)
		require.ErrorIs(t, err, fanout.ErrUnavailable)
		require.ErrorContains(t, err, "server closed the connection unanswered (busy, or requires TLS)")
	})

	t.Run("per host", func(t *testing.T) {
		at := serveForAttack(t, WithHandshakeLimits(4, 1), WithHandshakeTimeout(time.Minute))
		d := attackerDialer(t, at.addr)
		awaitHandshakesOver(t, at) // the dialer's probe has gone
		dialSilent(t, at.addr, 1)  // holds 127.0.0.1's one handshake slot
		err := call(at.addr)
		t.Logf("refused: %v", err)
		require.ErrorIs(t, err, fanout.ErrUnavailable)
		require.ErrorContains(t, err, "connection refused: server busy: at its limit of 1 connections in their handshake from one host")
		require.NotContains(t, err.Error(), "TLS")

		// Another host gets through.
		require.NoError(t, call(at.addr, WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		})))
	})
}

// A connection's handshake slot is given back however its handshake ends,
// and a host's slots are forgotten once it has none in use.
func TestHandshakeSlotsGivenBack(t *testing.T) {
	at := serveForAttack(t, WithHandshakeLimits(2, 1), WithHandshakeTimeout(time.Minute))
	conn, err := net.Dial("tcp", at.addr)
	require.NoError(t, err)
	conn.Write([]byte("not a hello"))
	io.Copy(io.Discard, conn) // until the server closes it: a bad magic
	conn.Close()
	awaitHandshakesOver(t, at)
	at.srv.mu.Lock()
	require.Empty(t, at.srv.slots.perHost)
	at.srv.mu.Unlock()

	c := NewClient(at.addr, Int64(), Int64(), WithLogger(nil))
	defer c.Close()
	out, err := c.Process(context.Background(), []int64{2})
	require.NoError(t, err)
	require.Equal(t, []int64{-2}, out)
	at.srv.mu.Lock()
	require.Equal(t, connSlots{perHost: map[string]int{}, served: 1}, at.srv.slots)
	at.srv.mu.Unlock()
}
