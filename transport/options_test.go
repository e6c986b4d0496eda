package transport

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each option is of the type of the sides it concerns, so that handing it
// to the other side does not compile: a value that does not implement
// ServerOption cannot be passed to NewServer.
func TestOptionSides(t *testing.T) {
	dial := func(context.Context, string) (net.Conn, error) { return nil, nil }
	cases := []struct {
		name           string
		opt            any
		server, client bool
	}{
		{"WithLogger", WithLogger(slog.Default()), true, true},
		{"WithMaxMessageSize", WithMaxMessageSize(1 << 20), true, true},
		{"WithHandshakeTimeout", WithHandshakeTimeout(time.Second), true, true},
		{"WithRequestTimeout", WithRequestTimeout(time.Second), true, true},
		{"WithWriteTimeout", WithWriteTimeout(time.Second), true, true},
		{"WithKeepAlive", WithKeepAlive(time.Second), true, true},
		{"WithMaxConcurrentCalls", WithMaxConcurrentCalls(8), true, true},
		{"WithTLSConfig", WithTLSConfig(&tls.Config{}), true, true},
		{"WithMaxConnections", WithMaxConnections(8), true, false},
		{"WithMaxPendingBytes", WithMaxPendingBytes(1 << 20), true, false},
		{"WithHandshakeLimits", WithHandshakeLimits(16, 2), true, false},
		{"WithDialTimeout", WithDialTimeout(time.Second), false, true},
		{"WithRedialBackoff", WithRedialBackoff(time.Millisecond, time.Second), false, true},
		{"WithChunks", WithChunks(1024, 2), false, true},
		{"WithDialer", WithDialer(dial), false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, server := tc.opt.(ServerOption)
			_, client := tc.opt.(ClientOption)
			require.Equal(t, tc.server, server, "is a ServerOption")
			require.Equal(t, tc.client, client, "is a ClientOption")
		})
	}
}

// An option sets what it says on the side it is given to.
func TestOptionsApply(t *testing.T) {
	srv := newServerConfig([]ServerOption{WithMaxConnections(3), WithMaxPendingBytes(5), WithMaxConcurrentCalls(7)})
	require.Equal(t, 3, srv.maxConns)
	require.Equal(t, int64(5), srv.maxPending)
	require.Equal(t, 7, srv.maxCalls)
	cli := newClientConfig([]ClientOption{WithChunks(11, 0), WithDialTimeout(time.Minute), WithMaxConcurrentCalls(7)})
	require.Equal(t, 11, cli.chunkItems)
	require.Equal(t, 1, cli.chunkCalls, "in flight below 1 means 1")
	require.Equal(t, time.Minute, cli.dialTimeout)
	require.Equal(t, 7, cli.maxCalls)
	require.NotNil(t, cli.dial, "a client dials TCP by default")
}

// The handshake timeout is short on a server and longer on a client, where
// it bounds only a new stream's wait; the handshake limits are clamped.
func TestHandshakeOptions(t *testing.T) {
	srv, cli := newServerConfig(nil), newClientConfig(nil)
	require.Equal(t, DefaultHandshakeTimeout, srv.handshakeTimeout)
	require.Equal(t, DefaultClientHandshakeTimeout, cli.handshakeTimeout)
	require.Equal(t, DefaultHandshakeTimeout, newClientConfig([]ClientOption{WithHandshakeTimeout(DefaultHandshakeTimeout)}).handshakeTimeout)
	require.Equal(t, DefaultMaxHandshakes, srv.maxHandshakes)
	require.Equal(t, DefaultMaxHandshakesPerHost, srv.hostHandshakes)

	srv = newServerConfig([]ServerOption{WithHandshakeLimits(4, 9)})
	require.Equal(t, 4, srv.maxHandshakes)
	require.Equal(t, 4, srv.hostHandshakes, "per host above total means total")
	srv = newServerConfig([]ServerOption{WithHandshakeLimits(0, -1)})
	require.Equal(t, 1, srv.maxHandshakes, "below 1 means 1")
	require.Equal(t, 1, srv.hostHandshakes, "below 1 means 1")
}
