package transport

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	b, ok := <-accepted
	require.True(t, ok, "accept failed")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// yamuxFrame returns a data frame as yamux's send loop writes it: the header,
// then the body.
func yamuxFrame(body []byte) (hdr []byte) {
	hdr = make([]byte, yamuxHeaderSize)
	hdr[1] = yamuxTypeData
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(body)))
	return hdr
}

// TestCoalescerDeliversEveryByteInOrder writes frames through a coalescer to
// a peer that at first does not read, with pauses between some of them, so
// that frames go both ways: written at once by the caller (the connection
// was quiet), in part when the socket takes only some, and by the writer
// goroutine. Writes must not wait for the peer, and the peer must receive
// exactly the bytes written, in order.
func TestCoalescerDeliversEveryByteInOrder(t *testing.T) {
	a, b := tcpPair(t)
	c := newCoalescer(a, 10*time.Second)
	defer c.Close()

	var want bytes.Buffer
	written := make(chan error, 1)
	go func() {
		body := make([]byte, 48<<10)
		for i := range 200 { // about 10 MB: more than the socket buffers, less than maxPending
			for j := range body {
				body[j] = byte(i + j)
			}
			hdr := yamuxFrame(body)
			want.Write(hdr)
			want.Write(body)
			if _, err := c.Write(hdr); err != nil {
				written <- err
				return
			}
			if _, err := c.Write(body); err != nil {
				written <- err
				return
			}
			if i%10 == 0 {
				// Let the connection go quiet, so that the next frame
				// takes the direct path. The sleep only paces the writes:
				// however long it lasts, every byte must arrive in order.
				time.Sleep(2 * quietGap)
			}
		}
		written <- nil
	}()
	select {
	case err := <-written:
		require.NoError(t, err)
	case <-time.After(fuzzGuard):
		t.Fatal("a write waited for a peer that does not read")
	}

	got := make([]byte, want.Len())
	b.SetReadDeadline(time.Now().Add(fuzzGuard))
	_, err := io.ReadFull(b, got)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want.Bytes(), got), "the peer received other bytes than were written")
}
