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
// goroutine. With a bound larger than all of them, writes must not wait for
// the peer, and the peer must receive exactly the bytes written, in order.
func TestCoalescerDeliversEveryByteInOrder(t *testing.T) {
	a, b := tcpPair(t)
	c := newCoalescer(a, 10*time.Second, 64<<20, nil)
	defer c.Close()

	var want bytes.Buffer
	written := make(chan error, 1)
	go func() {
		body := make([]byte, 48<<10)
		for i := range 200 { // about 10 MB: more than the socket buffers, less than the bound
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

// TestCoalescerBoundsWhatItHolds writes to a peer that does not read, through
// a coalescer with a small bound and a pool smaller still: writes past the
// bound must wait, the pool must never be exceeded (but for a frame
// header), the write timeout must cut the peer off and fail every later
// write, and the coalescer must give all its memory back.
func TestCoalescerBoundsWhatItHolds(t *testing.T) {
	a, _ := tcpPair(t)
	const maxBuf = 64 << 10
	pool := newWritePool(maxBuf / 2)
	c := newCoalescer(a, 200*time.Millisecond, maxBuf, pool)
	defer c.Close()

	body := make([]byte, 16<<10)
	var err error
	for err == nil { // until the write timeout fails a write
		if _, err = c.Write(yamuxFrame(body)); err == nil {
			_, err = c.Write(body)
		}
		c.mu.Lock()
		queued := c.queued()
		c.mu.Unlock()
		require.LessOrEqual(t, queued, maxBuf+yamuxHeaderSize, "the coalescer queued more than its bound")
	}
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "the write failed for another reason than the timeout: %v", err)
	_, err2 := c.Write(body)
	require.Error(t, err2, "a write after the timeout succeeded")
	require.LessOrEqual(t, pool.peak.Load(), int64(maxBuf/2+yamuxHeaderSize), "the coalescer took more than the pool holds")
	require.Zero(t, pool.used.Load(), "the coalescer kept its buffers after a write error")
}

// TestCoalescerWritesPastThePool writes through a coalescer whose pool has
// no room at all, to a peer that reads: every frame must be written by the
// caller itself, in order, and nothing taken from the pool but headers.
func TestCoalescerWritesPastThePool(t *testing.T) {
	a, b := tcpPair(t)
	pool := newWritePool(1)
	c := newCoalescer(a, 10*time.Second, DefaultMaxWriteBuffer, pool)
	defer c.Close()

	var want bytes.Buffer
	written := make(chan error, 1)
	go func() {
		for i := range 500 {
			body := bytes.Repeat([]byte{byte(i)}, 1+i*97%(40<<10))
			want.Write(yamuxFrame(body))
			want.Write(body)
			if _, err := c.Write(yamuxFrame(body)); err != nil {
				written <- err
				return
			}
			if _, err := c.Write(body); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	var got bytes.Buffer
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, b)
		read <- err
	}()
	select {
	case err := <-written:
		require.NoError(t, err)
	case <-time.After(fuzzGuard):
		t.Fatal("writes past the pool did not end")
	}
	require.NoError(t, c.Close())
	require.NoError(t, <-read)
	require.True(t, bytes.Equal(want.Bytes(), got.Bytes()), "the peer received other bytes than were written")
	require.LessOrEqual(t, pool.peak.Load(), int64(2*yamuxHeaderSize), "the coalescer buffered past its pool")
	require.Zero(t, pool.used.Load(), "the coalescer kept its buffers once closed")
}
