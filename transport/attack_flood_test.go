package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// floodPings is how many yamux ping requests a flooding peer writes on each
// connection, as the attack of issue 21 did (12 MB).
const floodPings = 1_000_000

// TestAttackPingFlood floods the server with yamux pings, on one and on
// eight connections at once, each time on a new connection once the server
// has closed the last, for as long as the well-behaved callers take to make
// 10 calls. Every flooding connection must be closed by the server with one
// log line naming it and the limit, the callers must be served as before
// and the heap must stay small: without the limit each ping cost a
// goroutine until its answer was written.
func TestAttackPingFlood(t *testing.T) {
	flood := frameFlood(floodPings, yamuxTypePing, yamuxFlagSYN, 0)
	limit := fmt.Sprintf("%d a second, %d at once, WithMaxPingRate", DefaultMaxPingRate, DefaultPingBurst)
	for _, conns := range []int{1, 8} {
		t.Run(fmt.Sprintf("connections=%d", conns), func(t *testing.T) {
			attackFrameFlood(t, conns, flood, DefaultPingBurst, limit)
		})
	}
}

// TestAttackMissingStreamFlood floods the server with window updates for a
// stream that does not exist, each of which yamux logs, on one connection
// at a time: the other bound on frames that carry no call.
//
// The bound is lowered here: the default (65,536 a second) is more than a
// loaded machine under the race detector reads in a second, and a flood
// that does not outpace the bound is let through, as it should be, at the
// bound's rate.
func TestAttackMissingStreamFlood(t *testing.T) {
	const n = 4096
	flood := frameFlood(4*n, yamuxTypeWindowUpdate, 0, 1001)
	attackFrameFlood(t, 1, flood, 0, fmt.Sprintf("%d a second, %d at once", n, n), WithControlFrameLimit(n))
}

// attackFrameFlood floods a server, with opts, with flood on conns
// connections at once, the pings of which the server answers up to pings a
// connection, and requires that each flooding connection is closed with a
// log line that names limit.
func attackFrameFlood(t *testing.T, conns int, flood []byte, pings int, limit string, opts ...ServerOption) {
	logs := &lineLog{}
	// The flooders and the well-behaved callers all connect from one host,
	// 127.0.0.1: the server lets them all be in their handshake at once (the
	// flooders, the fresh caller's connection and the kept caller's), so that
	// a flooder's handshake is not refused as busy by the per-host bound,
	// which this test is not about (attack_conns_test.go is).
	hosts := WithHandshakeLimits(DefaultMaxHandshakes, max(DefaultMaxHandshakesPerHost, conns+2))
	at := serveForAttack(t, append([]ServerOption{hosts, WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})))}, opts...)...)
	v := underAttack(t, at.addr)
	// The heap follows what is live more closely: the flooders' churn is
	// garbage soon collected.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	h := watchHeap()
	base := runtime.NumGoroutine()
	g := watchGoroutines()
	answered := at.ev.Count(EventAnswered)
	ended := at.ev.Count(EventConnEnded)

	var (
		mu      sync.Mutex
		remotes = map[string]int{} // the flooding connections, by the address the server sees (a port may be used again)
		flooded int                // the flooding connections
		wg      sync.WaitGroup
		errs    = make(chan error, conns)
	)
	for range conns {
		wg.Go(func() {
			for at.ev.Count(EventAnswered) < answered+10 {
				remote, err := floodOnce(at.addr, flood, pings)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				remotes[remote]++
				flooded++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// The connections have ended on the server too (each flooder saw its
	// connection closed), so what is left of them has been released.
	at.ev.Await(t, EventConnEnded, ended+flooded)
	goroutines := g.Stop()

	// The server serves as before: the well-behaved callers make two
	// more calls each after the attack.
	at.ev.Await(t, EventAnswered, at.ev.Count(EventAnswered)+4)
	v.Finish(t, time.Second)
	// The flooders open and close connections as fast as they can, and
	// their garbage counts until it is collected; and per flooding
	// connection at once: its session and buffers, and the pings the limit
	// lets through, each a goroutine until its answer is buffered.
	requireHeapWithin(t, h, uint64(24<<20+conns*(1<<20)),
		fmt.Sprintf("24 MiB for the connections' churn, plus 1 MiB for each of %d flooding connections at once with up to %d pings answered", conns, pings))

	lines := logs.Lines()
	t.Logf("flooding connections: %d, each closed by the server; log lines at Warn or above: %d; goroutines at most %d above the %d before",
		flooded, len(lines), goroutines-base, base)
	// Per flooding connection at once: its flooder, the server's
	// goroutines of a session (a handful), and one for each ping the limit
	// lets through, twice over, since a connection still closing overlaps
	// its flooder's next; and some for the well-behaved callers'
	// connections. (Without the limit, one connection's flood took about
	// 107,000.)
	require.LessOrEqual(t, goroutines-base, 2*conns*(pings+16)+128, "goroutines during the attack")
	for _, line := range lines {
		if strings.Contains(line, "keepalive failed") {
			// The server's own keepalive ping, sent while a slow flood
			// was still being written, could not be written: the flooder
			// reads nothing until its write ends.
			continue
		}
		require.Contains(t, line, "level=WARN")
		require.Contains(t, line, "too many frames that carry no call")
		require.Contains(t, line, limit)
		remote := strings.Fields(line[strings.Index(line, "remote=")+len("remote="):])[0]
		require.Positive(t, remotes[remote], "a log line about %s, not a flooding connection: %s", remote, line)
		if remotes[remote]--; remotes[remote] == 0 { // one line each
			delete(remotes, remote)
		}
	}
	require.Empty(t, remotes, "flooding connections closed without a log line")
}

// frameFlood returns n yamux frames without a body, back to back, of type
// typ with flags, for stream id, their lengths counting up from 0 (a
// ping's length is its id).
func frameFlood(n int, typ uint8, flags uint16, id uint32) []byte {
	b := make([]byte, 0, n*yamuxHeaderSize)
	for i := range n {
		b = append(b, 0, typ)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint32(b, id)
		b = binary.BigEndian.AppendUint32(b, uint32(i))
	}
	return b
}

// floodOnce connects to addr, does the handshake by hand, and writes flood
// on the connection; it then reads until the connection ends, and returns
// the flooder's address, or an error if the server did not close the
// connection or answered more than pings pings.
func floodOnce(addr string, flood []byte, pings int) (string, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(eventGuard)) // a hang guard
	if _, err := conn.Write(wire.AppendHello(nil, wire.Hello{Version: wire.Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: 1 << 20})); err != nil {
		return "", err
	}
	if _, err := wire.ReadHello(conn); err != nil {
		return "", err
	}
	if status, msg, err := wire.ReadStatus(conn); err != nil || status != wire.StatusOK {
		return "", fmt.Errorf("handshake: status %d %q, %v", status, msg, err)
	}
	// The server closes the connection while the flood is being written:
	// the write fails unless the socket's buffers took all of it.
	conn.Write(flood)
	// What the server writes is the answers of the pings it let through,
	// then the end of the connection.
	got, err := io.ReadAll(conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", fmt.Errorf("the server did not close a flooding connection, after writing %d bytes", len(got))
	}
	// The server writes frame headers only (no stream carries data here):
	// count the ping answers (ACK), not the server's own keepalive pings.
	answers := 0
	for b := got; len(b) >= yamuxHeaderSize; b = b[yamuxHeaderSize:] {
		if b[1] == yamuxTypePing && binary.BigEndian.Uint16(b[2:])&yamuxFlagACK != 0 {
			answers++
		}
	}
	if answers > pings {
		return "", fmt.Errorf("the server answered %d pings, more than the limit lets through at once", answers)
	}
	return conn.LocalAddr().String(), nil
}

// yamuxFlagACK is yamux's flag of a ping's answer.
const yamuxFlagACK = 2

// lineLog collects log lines.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.FieldsFunc(l.buf.String(), func(r rune) bool { return r == '\n' })
}

// goroutineWatch samples the number of goroutines every few milliseconds,
// from its start until Stop.
type goroutineWatch struct {
	stop chan struct{}
	peak atomic.Int64
	done chan struct{}
}

func watchGoroutines() *goroutineWatch {
	g := &goroutineWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			g.peak.Store(max(g.peak.Load(), int64(runtime.NumGoroutine())))
			select {
			case <-g.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return g
}

// Stop ends the sampling and returns the peak.
func (g *goroutineWatch) Stop() int {
	close(g.stop)
	<-g.done
	return int(g.peak.Load())
}
