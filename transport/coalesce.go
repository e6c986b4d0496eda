package transport

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// coalescer sits between a yamux session and its connection and turns
// yamux's many small writes into few large ones.
//
// yamux's send loop writes every frame as two writes, its 12-byte header and
// then its body, one frame at a time, and waits for each write to finish.
// The coalescer keeps a data frame's header until its body arrives, so the
// two leave in one write, and it writes on a goroutine of its own: while one
// write is in the kernel, the frames that follow (other streams' requests,
// answers, acknowledgements, window updates) gather in a buffer and leave
// together in the next. Under load this packs many frames into each system
// call. A frame that comes after the connection has been quiet for
// quietGap is written at once by yamux's send loop instead, in one
// non-blocking attempt, which saves a lone call the hand-over to the writer
// goroutine; so is a large body (directBody or more) when no write is in
// progress, which saves copying it. What the socket does not take is left
// to the writer.
//
// Writes return once the bytes are written or buffered. A write error (including the
// write timeout, which bounds every flush) is kept and returned by every
// later Write, and closes the connection so that yamux's reader sees it too.
//
// The buffer is bounded (Write blocks while maxPending bytes wait), but
// large: yamux's send loop must not block on a slow or stalled connection,
// because every stream's open, write and close waits in its queue, and those
// waits ignore the caller's context (they end only at the write timeout).
// What a stalled connection can buffer is bounded anyway by the streams'
// flow-control windows: each stream has at most its window (256 KiB) unacknowledged.
type coalescer struct {
	net.Conn
	writeTimeout time.Duration

	mu      sync.Mutex
	space   sync.Cond     // signalled when the buffer drains
	pending []byte        // bytes to write next
	spare   []byte        // the buffer being written, reused when done
	err     error         // the first write error
	closed  bool          // Close was called: Write fails
	writing bool          // a write to the connection is in progress
	idle    time.Time     // when the last write ended
	direct  *directWriter // non-blocking writes to the socket; nil where there are none
	wake    chan struct{}
	done    chan struct{} // closed when the writer goroutine returns

	// readFailed, if set before yamux starts reading, is called when a
	// Read of the connection fails, before yamux sees the error.
	readFailed func()
	// frames, if set before yamux starts reading, follows the frames
	// read; once they go past its limits, Read fails with its error and
	// calls flooded with it, once. A server sets both.
	frames   *frameLimiter
	flooded  func(error)
	floodErr error // the error reads fail with, once frames found one
}

// maxPending bounds the bytes a coalescer buffers: 256 streams' full
// windows.
const maxPending = 64 << 20

// quietGap is how long a connection must have been idle for a frame to be
// written at once, by the goroutine that hands it over, rather than by the
// writer goroutine. Under load frames follow each other more closely, and
// the writer goroutine batches them.
const quietGap = 10 * time.Microsecond

// directBody is the smallest frame body that is written without being
// copied into the buffer, when no write is in progress.
const directBody = 32 << 10

// closeTimeout bounds how long Close spends writing what is buffered.
const closeTimeout = time.Second

// yamux frame header layout (see yamux's spec.md).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

func newCoalescer(conn net.Conn, writeTimeout time.Duration) *coalescer {
	c := &coalescer{
		Conn:         conn,
		writeTimeout: writeTimeout,
		wake:         make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
	c.space.L = &c.mu
	c.direct = newDirectWriter(conn)
	go c.writeLoop()
	return c
}

// Read reads from the connection, calling readFailed if it fails. With
// frames set, it hands yamux the frames before one over the limits, and
// then fails.
func (c *coalescer) Read(p []byte) (int, error) {
	if c.floodErr != nil {
		return 0, c.failed(c.floodErr)
	}
	n, err := c.Conn.Read(p)
	if c.frames != nil && n > 0 {
		var ferr error
		if n, ferr = c.frames.feed(p[:n]); ferr != nil {
			c.floodErr = ferr
			c.flooded(ferr)
			if n > 0 {
				return n, nil // the frames before it; the next Read fails
			}
			err = ferr
		}
	}
	if err != nil {
		return n, c.failed(err)
	}
	return n, nil
}

// failed calls readFailed, if set, and returns err.
func (c *coalescer) failed(err error) error {
	if c.readFailed != nil {
		c.readFailed()
	}
	return err
}

// Write buffers p for the writer goroutine, or writes it at once if no
// write is in progress and p is a large body or comes after a quiet spell.
func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && len(c.pending) > 0 && len(c.pending)+len(p) > maxPending {
		c.space.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, net.ErrClosed
	}
	switch {
	case isDataHeader(p):
		c.pending = append(c.pending, p...)
		return len(p), nil // its body is yamux's very next write
	case c.direct != nil && !c.writing && len(p) >= directBody:
		// A large body gains nothing from waiting for company, and
		// copying it costs: write it from yamux's buffer if the socket
		// takes it.
		c.writeDirectLocked(p)
		if len(c.pending) == 0 {
			return len(p), nil
		}
	default:
		c.pending = append(c.pending, p...)
		if c.direct != nil && !c.writing && time.Since(c.idle) > quietGap && c.tryWriteLocked() {
			return len(p), nil
		}
	}
	select {
	case c.wake <- struct{}{}:
	default: // the writer is already due to run
	}
	return len(p), nil
}

// isDataHeader reports whether p is exactly the header of a yamux data frame
// that has a body.
func isDataHeader(p []byte) bool {
	return len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0
}

func (c *coalescer) writeLoop() {
	defer close(c.done)
	for {
		_, open := <-c.wake
		if !c.flush() || !open {
			return
		}
	}
}

// flush writes until the buffer is empty, and reports false after a write
// error.
func (c *coalescer) flush() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) > 0 && c.err == nil {
		c.writeLocked()
	}
	return c.err == nil
}

// tryWriteLocked writes what is buffered at once, on the calling goroutine,
// if the connection takes it all without waiting, and reports whether it
// did. Whatever the connection does not take is left for the writer
// goroutine. It is called with mu held.
//
// This saves the hand-over to the writer goroutine when the connection has
// been quiet, as for a lone call. It never blocks (the socket is
// non-blocking, and the write is attempted once), so yamux's send loop
// never waits for a slow or stalled connection.
func (c *coalescer) tryWriteLocked() bool {
	buf := c.pending
	n, ok := c.tryOnce(buf)
	if n == len(buf) && ok {
		c.pending = buf[:0]
		return true
	}
	c.pending = append(buf[:0], buf[n:]...)
	return false
}

// tryOnce makes one non-blocking attempt to write buf and returns the bytes
// written; ok is false after an error, which is left for the writer
// goroutine to meet and report. It is called with mu held.
func (c *coalescer) tryOnce(buf []byte) (n int, ok bool) {
	n, err := c.direct.write(buf)
	if err != nil {
		return 0, false
	}
	c.idle = time.Now()
	return n, true
}

// writeDirectLocked writes a large frame body p, and what is buffered before
// it, without copying p into the buffer, as far as the connection takes them
// without waiting; the rest is buffered for the writer goroutine. It is
// called with mu held and no write in progress.
func (c *coalescer) writeDirectLocked(p []byte) {
	if len(c.pending) == 0 || c.tryWriteLocked() {
		if n, ok := c.tryOnce(p); ok {
			p = p[n:]
		}
	}
	c.pending = append(c.pending, p...)
}

// writeLocked writes what is buffered, in one write. It is called with mu
// held, and releases it during the write, so that frames can gather for the
// next one.
func (c *coalescer) writeLocked() {
	buf := c.pending
	c.pending = c.spare[:0]
	timeout := c.writeTimeout
	if c.closed {
		timeout = min(timeout, closeTimeout)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	c.writing = true
	c.mu.Unlock()

	_, err := c.Conn.Write(buf)

	c.mu.Lock()
	c.writing = false
	c.idle = time.Now()
	c.spare = buf[:0]
	if err != nil && c.err == nil {
		c.err = err
		c.Conn.Close() // so that yamux's reader stops too
	}
	c.space.Broadcast()
}

// Close writes what is buffered, so that an answer queued just before a
// session closes is not lost, for at most closeTimeout; then it closes the
// connection and stops the writer goroutine.
func (c *coalescer) Close() error {
	c.mu.Lock()
	first := !c.closed
	if first {
		c.closed = true
		close(c.wake) // the writer drains the buffer, then returns
		c.Conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	}
	c.space.Broadcast()
	c.mu.Unlock()
	<-c.done
	err := c.Conn.Close()
	if !first {
		return nil
	}
	return err
}
