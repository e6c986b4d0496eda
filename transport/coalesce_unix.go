//go:build unix

package transport

import (
	"net"
	"syscall"
)

// directWriter makes single non-blocking write attempts on a connection's
// socket, for the coalescer's writes that go out at once (see
// [coalescer.tryWriteLocked]): an attempt never waits for the socket, so
// yamux's send loop, which makes it, never waits for a slow peer.
type directWriter struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool // the attempt, made once so that a write allocates nothing
	buf []byte
	n   int
	err error
}

// newDirectWriter returns a directWriter for conn, or nil if conn has no
// file descriptor (a TLS connection, a pipe).
func newDirectWriter(conn net.Conn) *directWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &directWriter{raw: raw}
	w.fn = func(fd uintptr) bool {
		w.n, w.err = syscall.Write(int(fd), w.buf)
		return true // one attempt: never wait for the socket
	}
	return w
}

// write makes one attempt to write buf and returns the bytes the socket
// took, 0 if it would have had to wait. Its error is one the connection's
// own Write would meet.
func (w *directWriter) write(buf []byte) (int, error) {
	w.buf = buf
	err := w.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.buf = nil
	if err == nil && werr != syscall.EAGAIN {
		err = werr
	}
	if err != nil {
		return 0, err
	}
	return max(n, 0), nil
}
