package transport_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// The raw peers below speak the protocol byte by byte, as PROTOCOL.md
// describes it, so they also check that document.

// wireVersion is the protocol version of PROTOCOL.md.
const wireVersion = 7

func rawHello(version byte, req, resp string, maxMessage uint32) []byte {
	b := []byte("fanout")
	b = append(b, version, byte(len(req)))
	b = append(b, req...)
	b = append(b, byte(len(resp)))
	b = append(b, resp...)
	b = binary.LittleEndian.AppendUint32(b, maxMessage)
	return append(b, 0) // no service named
}

// rawReply reads the server's handshake reply and returns its status and
// message.
func rawReply(t *testing.T, conn net.Conn) (byte, string) {
	t.Helper()
	head := make([]byte, 7)
	_, err := io.ReadFull(conn, head)
	require.NoError(t, err)
	require.Equal(t, "fanout", string(head[:6]))
	require.EqualValues(t, wireVersion, head[6])
	for range 2 {
		n := make([]byte, 1)
		_, err = io.ReadFull(conn, n)
		require.NoError(t, err)
		_, err = io.ReadFull(conn, make([]byte, n[0]))
		require.NoError(t, err)
	}
	maxMessage := make([]byte, 4)
	_, err = io.ReadFull(conn, maxMessage)
	require.NoError(t, err)
	n := make([]byte, 1) // the service's name
	_, err = io.ReadFull(conn, n)
	require.NoError(t, err)
	_, err = io.ReadFull(conn, make([]byte, n[0]))
	require.NoError(t, err)
	tail := make([]byte, 1+2)
	_, err = io.ReadFull(conn, tail)
	require.NoError(t, err)
	msg := make([]byte, binary.LittleEndian.Uint16(tail[1:]))
	_, err = io.ReadFull(conn, msg)
	require.NoError(t, err)
	return tail[0], string(msg)
}

// rawSession handshakes by hand and starts a yamux client session.
func rawSession(t *testing.T, addr string) *yamux.Session {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = conn.Write(rawHello(wireVersion, "int64le", "int64le", 1<<20))
	require.NoError(t, err)
	status, msg := rawReply(t, conn)
	require.Zero(t, status, msg)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { sess.Close() })
	return sess
}

func frame(kind byte, length uint32, payload []byte) []byte {
	b := []byte{kind}
	b = binary.LittleEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// readErrorFrame reads one frame and requires it to be an error reply.
func readErrorFrame(t *testing.T, r io.Reader) (transport.Code, string) {
	t.Helper()
	hdr := make([]byte, 5)
	_, err := io.ReadFull(r, hdr)
	require.NoError(t, err)
	require.EqualValues(t, 3, hdr[0], "expected an error frame")
	payload := make([]byte, binary.LittleEndian.Uint32(hdr[1:]))
	_, err = io.ReadFull(r, payload)
	require.NoError(t, err)
	return transport.Code(payload[0]), string(payload[1:])
}

// keepCalling runs well-formed calls until stop is closed and reports the
// first failure: the server must go on serving while others misbehave.
func keepCalling(t *testing.T, addr string, stop <-chan struct{}) <-chan error {
	c := client(t, addr)
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			out, err := c.Process(context.Background(), []int64{i, i + 1})
			if err == nil && (out[0] != 2*i || out[1] != 2*i+2) {
				err = errors.New("wrong answer")
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

func TestBadMessagesFailOnlyTheirStream(t *testing.T) {
	const limit = 4096
	addr := serve(t, doubler, transport.WithMaxMessageSize(limit))
	stop := make(chan struct{})
	healthy := keepCalling(t, addr, stop)
	sess := rawSession(t, addr)

	timeout := make([]byte, 8)
	tests := []struct {
		name string
		send []byte
		code transport.Code
		says string
	}{
		{"length 0xFFFFFFFF", frame(1, 0xFFFFFFFF, nil), transport.CodeTooLarge, "4294967295 bytes, the server accepts at most 4096"},
		{"one byte over the limit", frame(1, limit+1, nil), transport.CodeTooLarge, "4097 bytes, the server accepts at most 4096"},
		{"unknown kind", frame(9, 0, nil), transport.CodeBadRequest, "unknown message kind 9"},
		{"response sent as request", frame(2, 8, make([]byte, 8)), transport.CodeBadRequest, "expected a request"},
		{"request shorter than its timeout", frame(1, 4, make([]byte, 4)), transport.CodeBadRequest, "expected a request"},
		{"items not a multiple of 8", frame(1, 8+9, append(timeout, make([]byte, 9)...)), transport.CodeBadRequest, "9 bytes is not a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := sess.OpenStream()
			require.NoError(t, err)
			defer st.Close()
			_, err = st.Write(tt.send)
			require.NoError(t, err)
			code, msg := readErrorFrame(t, st)
			require.Equal(t, tt.code, code, msg)
			require.Contains(t, msg, tt.says)
		})
	}

	// The same session still carries good calls.
	st, err := sess.OpenStream()
	require.NoError(t, err)
	req := append(make([]byte, 8), binary.LittleEndian.AppendUint64(nil, uint64(21))...)
	_, err = st.Write(frame(1, uint32(len(req)), req))
	require.NoError(t, err)
	hdr := make([]byte, 5+8)
	_, err = io.ReadFull(st, hdr)
	require.NoError(t, err)
	require.EqualValues(t, 2, hdr[0])
	require.EqualValues(t, 42, binary.LittleEndian.Uint64(hdr[5:]))
	st.Close()

	close(stop)
	require.NoError(t, waitErr(t, healthy))
}

func TestHostileConnections(t *testing.T) {
	var logs logBuffer
	addr := serve(t, doubler, logs.option(), transport.WithHandshakeTimeout(200*time.Millisecond))
	stop := make(chan struct{})
	healthy := keepCalling(t, addr, stop)

	// Each misbehaving connection must be closed by the server.
	closedByServer := func(t *testing.T, conn net.Conn) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "server left the connection open")
	}

	t.Run("random bytes", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		junk := make([]byte, 4096)
		rand.Read(junk)
		copy(junk, "GET / HTTP/1.1\r\n")
		_, err = conn.Write(junk)
		require.NoError(t, err)
		closedByServer(t, conn)
		logs.waitFor(t, "bad magic")
	})
	t.Run("never speaks", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		closedByServer(t, conn)
	})
	t.Run("half a hello", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.Write(rawHello(wireVersion, "int64le", "int64le", 1<<20)[:9])
		require.NoError(t, err)
		closedByServer(t, conn)
	})
	t.Run("other protocol version", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.Write(rawHello(wireVersion+1, "int64le", "int64le", 1<<20))
		require.NoError(t, err)
		status, msg := rawReply(t, conn)
		require.EqualValues(t, 1, status)
		require.Contains(t, msg, fmt.Sprintf("protocol version %d not supported", wireVersion+1))
		closedByServer(t, conn)
	})
	t.Run("codec name 255 bytes long", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.Write(rawHello(wireVersion, strings.Repeat("x", 255), "int64le", 1<<20))
		require.NoError(t, err)
		status, msg := rawReply(t, conn)
		require.EqualValues(t, 1, status)
		require.Contains(t, msg, "codec mismatch")
		closedByServer(t, conn)
	})

	close(stop)
	require.NoError(t, waitErr(t, healthy))
}

func TestStreamWithoutRequestIsClosed(t *testing.T) {
	addr := serve(t, doubler, transport.WithRequestTimeout(100*time.Millisecond))
	sess := rawSession(t, addr)
	st, err := sess.OpenStream()
	require.NoError(t, err)
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, st)
	require.NoError(t, err, "expected the server to end the stream")

	out, err := client(t, addr).Process(context.Background(), []int64{4})
	require.NoError(t, err)
	require.Equal(t, []int64{8}, out)
}

func TestRedialAfterServerRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	srv := transport.NewServer[int64, int64](doubler, transport.Int64(), transport.Int64(), quiet)
	go srv.Serve(l)

	c := client(t, addr, transport.WithRedialBackoff(10*time.Millisecond, 100*time.Millisecond))
	_, err = c.Process(context.Background(), []int64{1})
	require.NoError(t, err)

	// The server goes away: the next call fails with an error that names
	// it, promptly rather than at some timeout.
	require.NoError(t, srv.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Process(ctx, []int64{1})
	require.Error(t, err)
	require.Contains(t, err.Error(), addr)
	require.NoError(t, ctx.Err(), "the failure should not wait for the deadline")

	// It comes back on the same address: calls succeed again without a new
	// client, once the redial backoff (at most 100 ms) lets the client dial.
	// (The client keeps no clock a test could wait on: this polls for that
	// state, with a hang guard, and decides nothing by time.)
	l, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	serveOn(t, l, doubler)
	require.Eventually(t, func() bool {
		out, err := c.Process(context.Background(), []int64{3})
		return err == nil && out[0] == 6
	}, 10*time.Second, 20*time.Millisecond)
}

func TestSilentServerDoesNotHangDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn) // accepted, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})

	_, err = transport.Dial(context.Background(), l.Addr().String(), transport.Int64(), transport.Int64(),
		quiet, transport.WithDialTimeout(100*time.Millisecond))
	require.Error(t, err)
	require.Contains(t, err.Error(), "no answer from server")

	c := client(t, l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Process(ctx, []int64{1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestBackendIgnoringContextDoesNotHoldTheCaller(t *testing.T) {
	release := make(chan struct{})
	addr := serve(t, fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		<-release // ignores ctx on purpose
		return in, nil
	}))
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client(t, addr).Process(ctx, []int64{1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// A server that completes the handshake and then goes silent: it never
// acknowledges a stream and never answers a keepalive ping. A call without a
// deadline must still end, once keepalive declares the peer dead.
func TestPeerSilentAfterHandshake(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		hello := make([]byte, len(rawHello(wireVersion, "int64le", "int64le", 0)))
		if _, err := io.ReadFull(conn, hello); err == nil {
			reply := append(rawHello(wireVersion, "int64le", "int64le", 1<<20), 0, 0, 0)
			conn.Write(reply)
		}
		accepted <- conn // and never read or write again
	}()
	t.Cleanup(func() {
		l.Close()
		select {
		case conn := <-accepted:
			conn.Close()
		default:
		}
	})

	c := client(t, l.Addr().String(),
		transport.WithKeepAlive(50*time.Millisecond), transport.WithWriteTimeout(200*time.Millisecond))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(context.Background(), []int64{1})
		errc <- err
	}()
	err = waitErr(t, errc)
	require.Error(t, err)
	require.Contains(t, err.Error(), l.Addr().String())
}
