package node_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

var quiet = transport.WithLogger(nil)

func TestSystem(t *testing.T) {
	defer goleak.VerifyNone(t)
	sys, err := node.StartSystem(quiet)
	require.NoError(t, err)
	defer sys.Close()
	c := transport.NewClient(sys.Addr, transport.Int64(), xyz.ResultCodec(), quiet)
	defer c.Close()

	in := []int64{-3, 4, 7, 0, -1, 1, 9223372036854775806, -3037000499}
	got, err := c.Process(context.Background(), in)
	require.NoError(t, err)
	for i, n := range in {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		require.Equal(t, want, got[i], "input %d", n)
	}

	_, err = c.Process(context.Background(), []int64{1, -3037000500})
	var remote *transport.RemoteError
	require.ErrorAs(t, err, &remote)
	require.Contains(t, remote.Message, `route "x"`)
	require.Contains(t, remote.Message, "x: -3037000500 squared overflows int64")
}

// serve serves srv on a free loopback port until the test ends.
func serve(t *testing.T, srv node.Server) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

func backend(t *testing.T, route string) string {
	srv, err := node.NewBackend(route, quiet)
	require.NoError(t, err)
	return serve(t, srv)
}

func TestMiddleTakesTurnsAmongReplicas(t *testing.T) {
	down, err := net.Listen("tcp", "127.0.0.1:0") // a replica that is gone
	require.NoError(t, err)
	downAddr := down.Addr().String()
	require.NoError(t, down.Close())

	m, err := node.NewMiddle(map[string][]string{
		"x": {backend(t, "x")},
		"y": {backend(t, "y"), downAddr},
		"z": {backend(t, "z")},
	}, quiet)
	require.NoError(t, err)
	c := transport.NewClient(serve(t, m), transport.Int64(), xyz.ResultCodec(), quiet)
	defer c.Close()

	for i := range 4 {
		got, err := c.Process(context.Background(), []int64{-2, 10})
		if i%2 == 0 {
			require.NoError(t, err, "call %d goes to the live replica", i)
			require.Equal(t, []xyz.Result{{Value: 4, Backend: "x"}, {Value: 5, Backend: "y"}}, got)
		} else {
			require.ErrorContains(t, err, downAddr, "call %d goes to the replica that is gone", i)
			require.ErrorContains(t, err, `route "y"`)
		}
	}
}

func TestNewMiddleNeedsEveryRoute(t *testing.T) {
	_, err := node.NewMiddle(map[string][]string{"x": {"a:1"}, "y": {"b:1"}}, quiet)
	require.ErrorContains(t, err, "route z")

	_, err = node.NewMiddle(map[string][]string{"x": {"a:1"}, "y": {"b:1"}, "z": {"c:1"}, "w": {"d:1"}}, quiet)
	require.ErrorContains(t, err, "replicas given for 4 routes")
}

func TestNewBackendUnknownRoute(t *testing.T) {
	_, err := node.NewBackend("w")
	require.Error(t, err)
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
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

func TestRunServesUntilCancelled(t *testing.T) {
	defer goleak.VerifyNone(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv, err := node.NewBackend("z", quiet)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx, log, "z", srv, "127.0.0.1:0", time.Second) }()

	var addr string
	require.Eventually(t, func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if _, a, ok := strings.Cut(line, `msg="z ready" addr=`); ok {
				addr = a
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "ready line")

	c := transport.NewClient(addr, transport.Int64(), transport.Int64(), quiet)
	defer c.Close()
	got, err := c.Process(context.Background(), []int64{1, 3})
	require.NoError(t, err)
	require.Equal(t, []int64{4, 10}, got)

	cancel()
	require.NoError(t, <-done)
	require.Contains(t, logs.String(), `msg="z stopped"`)
}

func TestRunFailsToListen(t *testing.T) {
	srv, err := node.NewBackend("x", quiet)
	require.NoError(t, err)
	err = node.Run(context.Background(), slog.New(slog.DiscardHandler), "x", srv, "127.0.0.1:-1", time.Second)
	var opErr *net.OpError
	require.True(t, errors.As(err, &opErr), "error %v", err)
}
