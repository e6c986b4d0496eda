package faultproxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout/internal/faultproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The bounds on waiting below are hang guards, never speed checks. No test
// times the proxy: what latency costs is BenchmarkLatency's to measure.
const hangGuard = 10 * time.Second

// server runs handle on every connection accepted on a loopback port and
// returns its address. Everything is closed, and waited for, when the test
// ends.
func server(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// echo copies everything back, then closes.
func echo(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
}

func proxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readN reads exactly n bytes, failing the test if they do not come within
// the hang guard.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	require.NoError(t, err)
	return b
}

// requireSilent checks that nothing arrives on c for a while and that c is
// still open (the read times out rather than ending). It checks a
// non-event: a correct proxy cannot fail it, however slow the machine; the
// wait only gives a wrong one the time to show itself.
func requireSilent(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n, "bytes arrived through a black hole")
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "expected a read timeout, got %v", err)
}

// requireEnded reads c to its end and returns what arrived and how it ended.
func requireEnded(t *testing.T, c net.Conn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	b, err := io.ReadAll(c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed")
	return b, err
}

// waitAccepted waits until the proxy has accepted n connections, so that
// faults aimed at the connections open now reach them.
func waitAccepted(t *testing.T, p *faultproxy.Proxy, n int) {
	t.Helper()
	require.True(t, faultproxy.AwaitConns(p, hangGuard, func(accepted, _ int) bool { return accepted >= n }),
		"the proxy did not accept %d connections", n)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	return b
}

func TestForwardsBothWaysIntact(t *testing.T) {
	p := proxy(t, server(t, echo))
	data := randomBytes(4 << 20)
	var wg sync.WaitGroup
	for range 4 {
		c := dial(t, p.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Write(data)
			c.CloseWrite() // the end of the stream is forwarded too
		}()
		got, err := requireEnded(t, c)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "echoed bytes differ")
	}
	wg.Wait()
	require.Equal(t, 4, p.Accepted())
}

func TestLatency(t *testing.T) {
	// The server echoes what it receives, and reports it (only while the
	// test reads the reports: a large transfer's are dropped).
	got := make(chan string, 16)
	p := proxy(t, server(t, func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 64<<10)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			select {
			case got <- string(b[:n]):
			default:
			}
			c.Write(b[:n])
		}
	}))
	c := dial(t, p.Addr())
	send := func(msg string) {
		t.Helper()
		_, err := c.Write([]byte(msg))
		require.NoError(t, err)
	}
	arrived := func(msg string) {
		t.Helper()
		select {
		case m := <-got:
			require.Equal(t, msg, m)
		case <-time.After(hangGuard):
			t.Fatalf("%q never reached the server", msg)
		}
	}
	requireNothingArrived := func() {
		t.Helper()
		select {
		case m := <-got:
			t.Fatalf("%q reached the server through an upstream latency of an hour", m)
		default:
		}
	}
	send("warm up")
	arrived("warm up")
	require.Equal(t, "warm up", string(readN(t, c, 7)))

	// A latency holds the bytes of its direction, and only those. Chunks
	// already waiting take a new latency at once: lowered, they go.
	p.SetLatency(faultproxy.Upstream, time.Hour)
	send("up")
	requireSilent(t, c, 50*time.Millisecond)
	requireNothingArrived()
	p.SetLatency(faultproxy.Upstream, 0)
	arrived("up")
	require.Equal(t, "up", string(readN(t, c, 2)))

	p.SetLatency(faultproxy.Downstream, time.Hour)
	send("down")
	arrived("down") // upstream is not delayed
	requireSilent(t, c, 50*time.Millisecond)
	p.SetLatency(faultproxy.Downstream, 0)
	require.Equal(t, "down", string(readN(t, c, 4)))

	p.SetLatency(faultproxy.Both, time.Hour)
	send("held")
	requireSilent(t, c, 50*time.Millisecond)
	requireNothingArrived()
	p.SetLatency(faultproxy.Both, 0)
	arrived("held")
	require.Equal(t, "held", string(readN(t, c, 4)))

	// A latency that runs out lets the bytes go by itself, a large
	// transfer's whole and in order too. (That the proxy delays chunks in
	// a pipeline, not one latency after another, is a matter of speed:
	// BenchmarkLatency measures it.)
	p.SetLatency(faultproxy.Both, 20*time.Millisecond)
	send("both")
	arrived("both")
	require.Equal(t, "both", string(readN(t, c, 4)))
	data := randomBytes(1 << 20)
	go c.Write(data)
	require.True(t, bytes.Equal(data, readN(t, c, len(data))))
}

// BenchmarkLatency measures what the proxy's latency of 10 ms each way
// costs an echoed message (ns/op is its round trip): at least 20 ms for a
// small one, and about as much more than without for 4 MiB, which the
// proxy delays in a pipeline, not one latency per chunk (128 of them:
// 2.56 s).
func BenchmarkLatency(b *testing.B) {
	const lat = 10 * time.Millisecond
	for _, size := range []int{8, 4 << 20} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			p, err := faultproxy.New(server(b, echo))
			require.NoError(b, err)
			defer p.Close()
			c, err := net.Dial("tcp", p.Addr())
			require.NoError(b, err)
			defer c.Close()
			data := randomBytes(size)
			buf := make([]byte, size)
			p.SetLatency(faultproxy.Both, lat)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for b.Loop() {
				go c.Write(data)
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestBlackHole(t *testing.T) {
	closedByServer := make(chan struct{})
	p := proxy(t, server(t, func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		c.Write(b)
		if string(b) == "close" {
			// The end of this stream must be held too.
			close(closedByServer)
			return
		}
		io.Copy(c, c)
	}))
	before := dial(t, p.Addr())
	_, err := before.Write([]byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(readN(t, before, 5)))

	p.SetBlackHole(true)
	_, err = before.Write([]byte("again"))
	require.NoError(t, err)
	requireSilent(t, before, 200*time.Millisecond)

	// A new connection is accepted, but carries nothing, its end included.
	during := dial(t, p.Addr())
	waitAccepted(t, p, 2)
	_, err = during.Write([]byte("close"))
	require.NoError(t, err)
	requireSilent(t, during, 200*time.Millisecond)

	// Lifted: what was held arrives, in order, on the same connections.
	p.SetBlackHole(false)
	require.Equal(t, "again", string(readN(t, before, 5)))
	got, err := requireEnded(t, during)
	require.NoError(t, err)
	require.Equal(t, "close", string(got))
	select {
	case <-closedByServer:
	default:
		t.Fatal("the server did not see the request held in the black hole")
	}
	_, err = before.Write([]byte("after"))
	require.NoError(t, err)
	require.Equal(t, "after", string(readN(t, before, 5)))
}

func TestReset(t *testing.T) {
	serverErr := make(chan error, 2)
	p := proxy(t, server(t, func(c net.Conn) {
		defer c.Close()
		c.Write([]byte("ready"))
		_, err := io.Copy(io.Discard, c)
		serverErr <- err
	}))
	c := dial(t, p.Addr())
	require.Equal(t, "ready", string(readN(t, c, 5)))

	require.Equal(t, 1, p.Reset())
	// Both peers see a reset, not an orderly end of stream.
	_, err := requireEnded(t, c)
	require.ErrorIs(t, err, syscall.ECONNRESET)
	select {
	case err := <-serverErr:
		require.ErrorIs(t, err, syscall.ECONNRESET)
	case <-time.After(hangGuard):
		t.Fatal("the server's side was not reset")
	}

	// New connections are not affected. (The one reset is aborted already,
	// though it may not be forgotten yet: Reset counts only this one.)
	c = dial(t, p.Addr())
	require.Equal(t, "ready", string(readN(t, c, 5)))
	require.Equal(t, 1, p.Reset())
	_, err = requireEnded(t, c)
	require.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestCutAfter(t *testing.T) {
	data := randomBytes(1 << 20)
	received := make(chan []byte, 1)
	p := proxy(t, server(t, func(c net.Conn) {
		defer c.Close()
		var cmd [1]byte
		if _, err := io.ReadFull(c, cmd[:]); err != nil {
			return
		}
		switch cmd[0] {
		case 'd': // download: send the data
			c.Write(data)
		case 'u': // upload: report what arrived before the end
			b, _ := io.ReadAll(c)
			received <- b
		}
	}))

	t.Run("downstream", func(t *testing.T) {
		c := dial(t, p.Addr())
		waitAccepted(t, p, 1)
		require.Equal(t, 1, p.CutAfter(faultproxy.Downstream, 1000))
		_, err := c.Write([]byte("d"))
		require.NoError(t, err)
		got, _ := requireEnded(t, c)
		require.Equal(t, data[:1000], got, "exactly the bytes before the cut arrive")
	})

	t.Run("upstream", func(t *testing.T) {
		before := p.Accepted()
		c := dial(t, p.Addr())
		waitAccepted(t, p, before+1)
		// The command byte counts: 1 + 99 bytes pass.
		require.Equal(t, 1, p.CutAfter(faultproxy.Upstream, 100))
		_, err := c.Write(append([]byte("u"), data[:5000]...))
		require.NoError(t, err)
		select {
		case got := <-received:
			require.Equal(t, data[:99], got)
		case <-time.After(hangGuard):
			t.Fatal("the server's side was not closed")
		}
		requireEnded(t, c)
	})

	t.Run("disarmed and later connections are whole", func(t *testing.T) {
		before := p.Accepted()
		c := dial(t, p.Addr())
		waitAccepted(t, p, before+1)
		require.Equal(t, 1, p.CutAfter(faultproxy.Both, 10))
		require.Equal(t, 1, p.CutAfter(faultproxy.Both, -1))
		_, err := c.Write([]byte("d"))
		require.NoError(t, err)
		got, err := requireEnded(t, c)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))

		// Armed on no connection: a connection opened afterwards is whole.
		c.Close()
		require.True(t, faultproxy.AwaitConns(p, hangGuard, func(_, open int) bool { return open == 0 }),
			"the previous connections did not end")
		require.Zero(t, p.CutAfter(faultproxy.Downstream, 0))
		c = dial(t, p.Addr())
		_, err = c.Write([]byte("d"))
		require.NoError(t, err)
		got, err = requireEnded(t, c)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))
	})
}

func TestUnreachableTarget(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	down := l.Addr().String()
	require.NoError(t, l.Close())

	// The client is aborted: so fast that its own dial may see the reset.
	p := proxy(t, down)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	defer c.Close()
	got, _ := requireEnded(t, c)
	require.Empty(t, got)
}

func TestCloseEndsEverythingAndIsIdempotent(t *testing.T) {
	p, err := faultproxy.New(server(t, echo))
	require.NoError(t, err)
	addr := p.Addr()

	// Connections in every state: idle, with a large transfer blocked on a
	// peer that does not read, black-holed, and delayed.
	idle := dial(t, addr)
	stuck := dial(t, addr)
	go stuck.Write(randomBytes(8 << 20)) // echoed back, never read
	p.SetBlackHole(true)
	holed := dial(t, addr)
	holed.Write([]byte("x"))
	p.SetLatency(faultproxy.Both, time.Hour)
	p.SetBlackHole(false)
	delayed := dial(t, addr)
	delayed.Write([]byte("x"))
	waitAccepted(t, p, 4)

	require.NoError(t, p.Close())
	require.NoError(t, p.Close())
	for _, c := range []net.Conn{idle, delayed, holed} {
		requireEnded(t, c)
	}
	_, err = net.DialTimeout("tcp", addr, hangGuard)
	require.Error(t, err, "the proxy still accepts after Close")
	// Every other method is harmless after Close.
	p.SetLatency(faultproxy.Both, time.Second)
	p.SetBlackHole(true)
	require.Zero(t, p.Reset())
	require.Zero(t, p.CutAfter(faultproxy.Both, 1))
	// goleak, in TestMain, checks that no goroutine of the proxy is left.
}

func TestFaultsChangeSafelyUnderTraffic(t *testing.T) {
	p := proxy(t, server(t, echo))
	var wg sync.WaitGroup
	// 200 changes of the faults, then none: the transfers below, under way
	// meanwhile, all end whole.
	wg.Go(func() {
		for i := range 200 {
			p.SetLatency(faultproxy.Direction(i%3+1), time.Duration(i%5)*time.Millisecond)
			p.SetBlackHole(i%7 == 0)
			p.CutAfter(faultproxy.Both, -1)
			time.Sleep(time.Millisecond) // only paces the changes
		}
		p.SetBlackHole(false)
		p.SetLatency(faultproxy.Both, 0)
	})
	data := randomBytes(256 << 10)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			go c.Write(data)
			c.SetReadDeadline(time.Now().Add(hangGuard))
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(data, got) {
				t.Error("bytes changed on the way")
			}
		}()
	}
	wg.Wait()
}

func TestDirectionString(t *testing.T) {
	require.Equal(t, "upstream", faultproxy.Upstream.String())
	require.Equal(t, "downstream", faultproxy.Downstream.String())
	require.Equal(t, "both", faultproxy.Both.String())
	require.Equal(t, "none", faultproxy.Direction(0).String())
}
