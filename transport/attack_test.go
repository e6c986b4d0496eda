package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// The tests of hostile clients (attack tests) share what is here: a server
// to attack, the well-behaved callers that must keep being served while an
// attack runs, and a watch on the process's memory.

// attackTarget is a server under attack: its address, its server, and its
// events.
type attackTarget struct {
	addr string
	srv  *Server[int64, int64]
	ev   *Events
}

// serveForAttack serves the negating backend with opts on loopback, for an
// attack test. The server logs to the test's log at Warn level.
func serveForAttack(t *testing.T, opts ...ServerOption) *attackTarget {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts = append([]ServerOption{WithLogger(log)}, opts...)
	srv := NewServer(fanout.BackendFunc[int64, int64](negate), Int64(), Int64(), opts...)
	ev := WatchEvents(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		require.ErrorIs(t, <-served, ErrServerClosed)
	})
	return &attackTarget{addr: l.Addr().String(), srv: srv, ev: ev}
}

// testWriter writes a server's log lines to the test's log, until the test
// ends.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // a line logged after the test ended
	w.t.Log(string(p))
	return len(p), nil
}

// victims are the well-behaved callers of an attacked server: one calls
// every keptEvery on a client it keeps (one connection), another every
// freshEvery on a new client each time (a new connection and handshake).
// Each call negates a batch of 10 numbers, and its answer is checked.
type victims struct {
	stop   context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	lat    []time.Duration // of every call, kept and fresh
	failed []string        // what went wrong, call by call
}

const (
	keptEvery  = 100 * time.Millisecond
	freshEvery = 500 * time.Millisecond
	// victimTimeout is each well-behaved call's deadline: long enough that
	// a call the server serves at all succeeds, so that latency, not a
	// timeout, shows what an attack costs.
	victimTimeout = 20 * time.Second
)

// underAttack starts the well-behaved callers of addr, with copts for their
// clients. Call Finish before the test ends. The first kept call is made
// before underAttack returns, so the kept connection exists before the
// attack starts.
func underAttack(t *testing.T, addr string, copts ...ClientOption) *victims {
	t.Helper()
	copts = append([]ClientOption{WithLogger(slog.New(slog.DiscardHandler))}, copts...)
	ctx, stop := context.WithCancel(context.Background())
	v := &victims{stop: stop}
	kept := NewClient(addr, Int64(), Int64(), copts...)
	v.call(ctx, kept, "kept")
	require.Empty(t, v.failed, "the well-behaved caller failed before the attack")
	v.wg.Go(func() {
		defer kept.Close()
		v.every(ctx, keptEvery, func() { v.call(ctx, kept, "kept") })
	})
	v.wg.Go(func() {
		v.every(ctx, freshEvery, func() {
			c := NewClient(addr, Int64(), Int64(), copts...)
			defer c.Close()
			v.call(ctx, c, "fresh")
		})
	})
	return v
}

// every runs f every d (the sleep paces load; nothing waits on it) until
// ctx ends.
func (v *victims) every(ctx context.Context, d time.Duration, f func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

func (v *victims) call(ctx context.Context, c *Client[int64, int64], who string) {
	in := []int64{1, -2, 3, -4, 5, -6, 7, -8, 9, -10}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), victimTimeout)
	defer cancel()
	start := time.Now()
	out, err := c.Process(cctx, in)
	took := time.Since(start)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lat = append(v.lat, took)
	switch {
	case err != nil:
		v.failed = append(v.failed, fmt.Sprintf("%s call after %v: %v", who, took, err))
	case len(out) != len(in):
		v.failed = append(v.failed, fmt.Sprintf("%s call: %d results for %d numbers", who, len(out), len(in)))
	default:
		for i := range in {
			if out[i] != -in[i] {
				v.failed = append(v.failed, fmt.Sprintf("%s call: wrong answer %d for %d", who, out[i], in[i]))
				break
			}
		}
	}
}

// Finish stops the well-behaved callers and requires that every call
// succeeded with the right answer, and that the slowest took at most
// bound. It logs the calls' count, median and slowest.
func (v *victims) Finish(t *testing.T, bound time.Duration) {
	t.Helper()
	v.stop()
	v.wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	lat := slices.Clone(v.lat)
	slices.Sort(lat)
	require.NotEmpty(t, lat)
	t.Logf("well-behaved calls during the attack: %d, median %v, slowest %v (bound %v), failed %d",
		len(lat), lat[len(lat)/2], lat[len(lat)-1], bound, len(v.failed))
	require.Empty(t, v.failed, "well-behaved calls failed during the attack")
	require.LessOrEqual(t, lat[len(lat)-1], bound, "a well-behaved call took longer than the stated bound")
}

// heapWatch samples the process's heap in use (runtime.MemStats.HeapInuse:
// live objects and garbage not yet swept, an upper bound on what the
// server holds) every few milliseconds, from its start until Stop.
type heapWatch struct {
	base uint64
	stop chan struct{}
	done chan uint64
}

// watchHeap collects garbage, takes the heap in use as the baseline, and
// starts sampling.
func watchHeap() *heapWatch {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h := &heapWatch{base: m.HeapInuse, stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		peak := m.HeapInuse
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
		}
	}()
	return h
}

// Stop ends the sampling and returns the peak heap in use above the
// baseline.
func (h *heapWatch) Stop() uint64 {
	close(h.stop)
	peak := <-h.done
	return peak - min(peak, h.base)
}

// requireHeapWithin stops h and requires its peak above the baseline to be
// at most bound bytes, logging both.
func requireHeapWithin(t *testing.T, h *heapWatch, bound uint64, why string) {
	t.Helper()
	peak := h.Stop()
	t.Logf("heap in use above the baseline during the attack: peak %.1f MiB (bound %.1f MiB: %s)",
		float64(peak)/(1<<20), float64(bound)/(1<<20), why)
	require.LessOrEqual(t, peak, bound, "the server's memory went past its stated bound")
}

// TestVictimsWithoutAttack checks the harness itself: with no attack, every
// well-behaved call succeeds, and the heap watch reads a small peak.
func TestVictimsWithoutAttack(t *testing.T) {
	at := serveForAttack(t)
	h := watchHeap()
	v := underAttack(t, at.addr)
	// Let both callers make a few calls: wait for the answers.
	at.ev.Await(t, EventAnswered, 8)
	v.Finish(t, victimTimeout)
	requireHeapWithin(t, h, 64<<20, "a few small calls")
}
