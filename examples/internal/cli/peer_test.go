package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// closedAddr returns a loopback address where nothing listens: a port
// that was free a moment ago.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestMiddleLayerError(t *testing.T) {
	addr := closedAddr(t)

	// A transport client's call, and dial, of an address where nothing
	// listens.
	c := transport.NewClient(addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(nil))
	defer c.Close()
	_, callErr := c.Process(context.Background(), []int64{1})
	require.Error(t, callErr)
	_, dialErr := transport.Dial(context.Background(), addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(nil))
	require.Error(t, dialErr)
	for _, err := range []error{callErr, dialErr} {
		got := MiddleLayerError(addr, err)
		want := "the middle layer at " + addr + " is not reachable: dial tcp " + addr + ": "
		require.True(t, strings.HasPrefix(got.Error(), want), "%q", got)
		require.NotContains(t, got.Error(), "next attempt")
		require.ErrorIs(t, got, err, "the error is kept")
	}
	require.ErrorIs(t, MiddleLayerError(addr, callErr), fanout.ErrUnavailable)

	// A connection refused in the handshake, as a transport client reports
	// it while it waits to dial again.
	refused := errors.New("handshake: server closed the connection unanswered (busy, or requires TLS): EOF")
	call := fmt.Errorf("transport: call %s: %w", addr, fmt.Errorf("%w: %w", fanout.ErrUnavailable, fmt.Errorf("%w (next attempt in 44ms)", refused)))
	require.EqualError(t, MiddleLayerError(addr, call), "the middle layer at "+addr+" is unavailable: "+refused.Error())
	require.ErrorIs(t, MiddleLayerError(addr, call), refused)
	dial := fmt.Errorf("transport: dial %s: %w", addr, fmt.Errorf("%w (next attempt in 1s)", refused))
	require.EqualError(t, MiddleLayerError(addr, dial), "the middle layer at "+addr+" is unavailable: "+refused.Error())

	// Errors of other kinds are left as they are: the middle layer's own
	// report (here, that it is shutting down), a call cut off, none.
	remote := fmt.Errorf("wrapped: %w", &transport.RemoteError{Addr: addr, Code: transport.CodeUnavailable, Message: "server shutting down"})
	cut := fmt.Errorf("transport: call %s: %w: connection lost", addr, fanout.ErrInterrupted)
	for _, err := range []error{remote, cut, nil} {
		require.Equal(t, err, MiddleLayerError(addr, err))
	}
}

func TestMainMiddleLayerNotReachable(t *testing.T) {
	addr := closedAddr(t)
	c := transport.NewClient(addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(nil))
	defer c.Close()
	r := runMain(t, c, "", "1", "2")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.True(t, strings.HasPrefix(r.stderr, "client: the middle layer at "+addr+" is not reachable: dial tcp "+addr+": "), "%q", r.stderr)
	require.NotContains(t, r.stderr, "next attempt")

	// At the prompt too, where the next line tries again.
	cmd, _ := command()
	var stdout, stderr bytes.Buffer
	require.NoError(t, cmd.interactive(context.Background(), c, strings.NewReader("1\n"), &stdout, &stderr))
	require.Contains(t, stderr.String(), "client: the middle layer at "+addr+" is not reachable: ")
	require.NotContains(t, stderr.String(), "next attempt")
}
