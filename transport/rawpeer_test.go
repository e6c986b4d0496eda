package transport

import (
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"
)

// Tests that play one side of the protocol by hand, to send what a real
// peer would not, start from these: the handshake done by hand for
// int64le both ways, then a plain yamux session.

// rawServerSession answers conn's hello as a server that accepts messages
// of up to 1 MiB, and starts yamux's server side on it.
func rawServerSession(conn net.Conn) (*yamux.Session, error) {
	if _, err := readHello(conn); err != nil {
		return nil, err
	}
	reply := appendReply(nil, hello{version: protocolVersion, reqCodec: "int64le", respCodec: "int64le", maxMessage: 1 << 20}, statusOK, "")
	if _, err := conn.Write(reply); err != nil {
		return nil, err
	}
	return yamux.Server(conn, rawYamuxConfig())
}

// rawClientSession dials addr as a client that accepts answers of up to
// maxMessage bytes, and starts yamux's client side on the connection,
// which the session closes.
func rawClientSession(tb testing.TB, addr string, maxMessage uint32) *yamux.Session {
	tb.Helper()
	v := uint8(protocolVersion)
	conn, err := net.Dial("tcp", addr)
	require.NoError(tb, err)
	_, err = conn.Write(appendHello(nil, hello{version: v, reqCodec: "int64le", respCodec: "int64le", maxMessage: maxMessage}))
	require.NoError(tb, err)
	h, err := readHello(conn)
	require.NoError(tb, err)
	require.Equal(tb, v, h.version)
	status, msg, err := readStatus(conn)
	require.NoError(tb, err)
	require.EqualValues(tb, statusOK, status, msg)
	sess, err := yamux.Client(conn, rawYamuxConfig())
	require.NoError(tb, err)
	return sess
}

func rawYamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	return cfg
}
