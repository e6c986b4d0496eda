package transport

import (
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// Tests that play one side of the protocol by hand, to send what a real
// peer would not, start from these: the handshake done by hand for
// int64le both ways, then a plain yamux session.

// rawServerSession answers conn's hello as a server that accepts messages
// of up to 1 MiB, and starts yamux's server side on it.
func rawServerSession(conn net.Conn) (*yamux.Session, error) {
	if _, err := wire.ReadHello(conn); err != nil {
		return nil, err
	}
	reply := wire.AppendReply(nil, wire.Hello{Version: wire.Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: 1 << 20}, wire.StatusOK, "")
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
	v := uint8(wire.Version)
	conn, err := net.Dial("tcp", addr)
	require.NoError(tb, err)
	_, err = conn.Write(wire.AppendHello(nil, wire.Hello{Version: v, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: maxMessage}))
	require.NoError(tb, err)
	h, err := wire.ReadHello(conn)
	require.NoError(tb, err)
	require.Equal(tb, v, h.Version)
	status, msg, err := wire.ReadStatus(conn)
	require.NoError(tb, err)
	require.EqualValues(tb, wire.StatusOK, status, msg)
	sess, err := yamux.Client(conn, rawYamuxConfig())
	require.NoError(tb, err)
	return sess
}

// rawStream opens a stream on a new rawClientSession to addr, which is
// closed when the test ends.
func rawStream(tb testing.TB, addr string, maxMessage uint32) *yamux.Stream {
	tb.Helper()
	sess := rawClientSession(tb, addr, maxMessage)
	tb.Cleanup(func() { sess.Close() })
	st, err := sess.OpenStream()
	require.NoError(tb, err)
	return st
}

func rawYamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	return cfg
}

// setFrameLength sets the length of the frame that starts at buf[start] to
// the bytes that follow its header.
func setFrameLength(buf []byte, start int) {
	binary.LittleEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-wire.HeaderSize))
}
