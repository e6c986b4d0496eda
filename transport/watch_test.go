package transport

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		target, want, err string
	}{
		{target: "127.0.0.1:7001", want: "127.0.0.1:7001"},
		{target: "a:1, b:2", want: "a:1,b:2"},
		{target: "dns:x.fanout.svc:7001", want: "dns:x.fanout.svc:7001"},
		{target: "srv:_fanout._tcp.x", want: "srv:_fanout._tcp.x"},
		{target: "file:/etc/replicas", want: "file:/etc/replicas"},
		{target: "dns:x:7001,a:1,file:f", want: "dns:x:7001,file:f,a:1"},
		{target: "", err: "no replicas given"},
		{target: "dns:x", err: `"dns:x": want dns:NAME:PORT`},
		{target: "dns::7001", err: `"dns::7001": want dns:NAME:PORT`},
		{target: "srv:", err: `"srv:": want srv:NAME`},
		{target: "file:", err: `"file:": want file:PATH`},
		{target: "x", err: `"x" is not host:port, dns:NAME:PORT, srv:NAME or file:PATH`},
		{target: "a:1,", err: `"" is not host:port`},
	} {
		r, err := ParseTarget(tc.target, nil)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.target)
			continue
		}
		require.NoError(t, err, tc.target)
		assert.Equal(t, tc.want, r.String())
	}
}

func TestFileResolver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replicas")
	require.NoError(t, os.WriteFile(path, []byte("# x's replicas\n127.0.0.1:2\n\n  127.0.0.1:1  \n127.0.0.1:2\n"), 0o644))
	addrs, err := File(path).Resolve(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, addrs, "sorted, once each")

	require.NoError(t, os.WriteFile(path, []byte("127.0.0.1:1\nnot an address\n"), 0o644))
	_, err = File(path).Resolve(context.Background())
	require.EqualError(t, err, path+`:2: "not an address" is not host:port`)

	_, err = File(filepath.Join(t.TempDir(), "none")).Resolve(context.Background())
	require.ErrorIs(t, err, os.ErrNotExist)
}

// named is a backend that answers with its name's number, so a test
// sees which replica answered; its calls wait for gate if it has one.
func namedServer(t *testing.T, id int64, gate <-chan struct{}, entered chan<- int64) string {
	t.Helper()
	srv := NewServer(fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if len(in) > 0 && entered != nil {
			entered <- id
		}
		if len(in) > 0 && gate != nil {
			<-gate
		}
		out := make([]int64, len(in))
		for i := range out {
			out[i] = id
		}
		return out, nil
	}), Int64(), Int64(), WithLogger(slog.New(slog.DiscardHandler)))
	return serveOn(t, srv)
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWatcherFollowsTheFile: over real TCP, a watcher of a file of
// addresses adds a replica that appears (it takes calls once probed),
// drains one that disappears (its call in flight is answered, then its
// client is closed), keeps the last set when the file cannot be read, and
// fails calls clearly when the set is empty.
func TestWatcherFollowsTheFile(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan int64, 1)
	one := namedServer(t, 1, gate, entered)
	two := namedServer(t, 2, nil, nil)
	path := filepath.Join(t.TempDir(), "replicas")
	write := func(addrs ...string) {
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(addrs, "\n")), 0o644))
	}
	write(one)
	logs := new(syncBuffer)
	var mu sync.Mutex
	clients := map[string]*Client[int64, int64]{}
	dial := func(addr string) fanout.Backend[int64, int64] {
		c := NewClient(addr, Int64(), Int64())
		mu.Lock()
		clients[addr] = c
		mu.Unlock()
		return c
	}
	w, err := Watch(context.Background(), File(path), dial,
		WatchConfig{Every: hangGuard, Log: slog.New(slog.NewTextHandler(logs, nil))}, fanout.WithBalancerName("x"))
	require.NoError(t, err)
	defer w.Close()
	b := w.Balancer()
	assert.Equal(t, []string{one}, w.Replicas())
	healthy := func(addr string) bool {
		for _, s := range b.Replicas() {
			if s.Name == addr {
				return s.State == fanout.ReplicaHealthy
			}
		}
		return false
	}
	waitUntil(t, func() bool { return healthy(one) }, "replica one to join")

	// A call in flight on one.
	done := make(chan []int64, 1)
	go func() {
		out, err := b.Process(context.Background(), []int64{0})
		assert.NoError(t, err)
		done <- out
	}()
	require.Equal(t, int64(1), <-entered)

	// two appears and one goes: one drains.
	write(two)
	w.Refresh(context.Background())
	assert.Equal(t, []string{two}, w.Replicas())
	waitUntil(t, func() bool { return healthy(two) }, "replica two to join")
	out, err := b.Process(context.Background(), []int64{0, 0})
	require.NoError(t, err)
	assert.Equal(t, []int64{2, 2}, out, "new calls go to two")
	select {
	case <-done:
		t.Fatal("the call on the removed replica returned before it was let go")
	default:
	}
	close(gate)
	assert.Equal(t, []int64{1}, <-done, "the call in flight on one is answered")
	mu.Lock()
	c1 := clients[one]
	mu.Unlock()
	waitUntil(t, func() bool {
		_, err := c1.Process(context.Background(), []int64{0})
		return err != nil
	}, "one's client to be closed once drained")
	_, err = c1.Process(context.Background(), []int64{0})
	require.ErrorIs(t, err, ErrClosed)

	// The file goes: the last set is kept, and that is logged once.
	require.NoError(t, os.Remove(path))
	w.Refresh(context.Background())
	w.Refresh(context.Background())
	assert.Equal(t, []string{two}, w.Replicas())
	_, err = b.Process(context.Background(), []int64{0})
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(logs.String(), "resolving replicas failed; keeping the last set"), logs.String())

	// An empty file: no replicas, and calls say so.
	write()
	w.Refresh(context.Background())
	assert.Contains(t, logs.String(), "resolving replicas works again")
	assert.Empty(t, w.Replicas())
	_, err = b.Process(context.Background(), []int64{0})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.ErrorContains(t, err, "route x has no replicas")
	assert.Contains(t, logs.String(), "transport: replicas changed")
}

// waitUntil polls cond until it holds; the bound turns a hang into a
// failure and decides nothing else.
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
