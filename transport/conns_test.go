package transport_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// connDialer dials TCP and keeps every connection it made, so that a test
// can cut them.
type connDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *connDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, conn)
		d.mu.Unlock()
	}
	return conn, err
}

func (d *connDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
}

func TestServerRefusesConnectionsPastItsLimit(t *testing.T) {
	var logs logBuffer
	addr, ev := serveWatched(t, doubler, transport.WithMaxConnections(1), logs.option())
	var d connDialer
	first := client(t, addr, transport.WithDialer(d.dial), transport.WithRedialBackoff(time.Millisecond, time.Millisecond))
	out, err := first.Process(context.Background(), []int64{1})
	require.NoError(t, err)
	require.Equal(t, []int64{2}, out)

	// A second connection is refused in the handshake, with the reason.
	_, err = transport.Dial(context.Background(), addr, transport.Int64(), transport.Int64(), quiet)
	require.ErrorContains(t, err, "server at its limit of 1 connections")
	require.NotErrorIs(t, err, transport.ErrHandshake, "a busy server is no protocol mismatch")
	logs.waitFor(t, "connection refused: server at its limit of 1 connections")

	// The connection served goes on.
	out, err = first.Process(context.Background(), []int64{2})
	require.NoError(t, err)
	require.Equal(t, []int64{4}, out)

	// Once it ends, its slot is free for another client: once the server
	// has forgotten it, and the refused one.
	firstSession := transport.SessionDone(first)
	d.cut()
	ev.Await(t, transport.EventConnEnded, 2)
	second := client(t, addr)
	out, err = second.Process(context.Background(), []int64{3})
	require.NoError(t, err)
	require.Equal(t, []int64{6}, out)

	// The first client, whose connection was cut, redials once it has
	// seen its session end, and is refused: its calls fail as unavailable,
	// naming the limit.
	waitClosed(t, firstSession, "the first client's session did not end with its connection")
	_, err = first.Process(context.Background(), []int64{4})
	require.ErrorContains(t, err, "server at its limit of 1 connections")
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	out, err = second.Process(context.Background(), []int64{5})
	require.NoError(t, err)
	require.Equal(t, []int64{10}, out)
}

// A flood of connections past the handshake slots costs the server a
// bounded number of refusals in progress: past those, connections are
// closed unanswered.
func TestServerClosesConnectionsPastItsHandshakeSlotsOnceRefusingEnough(t *testing.T) {
	const refusing = 64 // the server's maxRefusing
	addr, ev := serveWatched(t, doubler, transport.WithHandshakeLimits(1, 1),
		transport.WithHandshakeTimeout(time.Minute), transport.WithRefuseTimeout(time.Minute))
	c := client(t, addr)
	_, err := c.Process(context.Background(), []int64{1})
	require.NoError(t, err)

	// One connection that sends no hello holds the handshake slot; the
	// next ones wait for their hello, each in a refusal.
	silent := make([]net.Conn, 1+refusing)
	for i := range silent {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		silent[i] = conn
	}
	// One more is closed without an answer, long before either timeout.
	// (The accept loop takes them in order, so the refusals above are
	// counted by the time it takes this one.)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF, "the connection past the refusals was not closed")

	// The connection served goes on meanwhile.
	out, err := c.Process(context.Background(), []int64{2})
	require.NoError(t, err)
	require.Equal(t, []int64{4}, out)

	// Once the refusals have gone, a client is refused as busy, with the
	// reason, while the handshake slot is held.
	ended := ev.Count(transport.EventConnEnded)
	for _, conn := range silent[1:] {
		conn.Close()
	}
	ev.Await(t, transport.EventConnEnded, ended+refusing)
	_, err = transport.Dial(context.Background(), addr, transport.Int64(), transport.Int64(), quiet)
	require.ErrorContains(t, err, "server busy: at its limit of 1 connections in their handshake")

	// Once the slot is free, a client gets through.
	silent[0].Close()
	ev.Await(t, transport.EventConnEnded, ended+refusing+2)
	other := client(t, addr)
	out, err = other.Process(context.Background(), []int64{3})
	require.NoError(t, err)
	require.Equal(t, []int64{6}, out)
}
