package transport

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
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
// What a coalescer holds is bounded twice. Per connection, at most maxBuf
// bytes wait or are being written: past that, Write waits until the writer
// goroutine has written some, so a peer that stops reading stalls its own
// connection's send loop only, until the write timeout cuts it off (the
// write in progress fails, and every later Write with it). A frame larger
// than maxBuf is written by the caller itself, once what is buffered before
// it has been written. Server-wide, the memory of every coalescer's buffers
// (their capacity: a coalescer has at most two, the one being written and
// the one gathering the next write) is taken from a pool; when the pool has
// no room for a buffer to grow, the coalescer stops buffering and the
// caller (yamux's send loop) writes the frame itself, on its own goroutine,
// after what is buffered. An empty buffer can always make progress that
// way, so the pool never makes a connection wait for another: a connection
// that drains goes on being written to, one frame per write, only without
// the batching.
//
// A wait in Write holds up every stream of the connection (yamux has one
// send loop per session, and its queue's waits ignore the callers'
// contexts), which is why maxBuf is meant to be a few stream windows (256
// KiB each), enough for an honest connection's writes never to wait long,
// and why the write timeout, which ends every wait, matters.
//
// A coalescer that goes quiet with buffers larger than keepIdle gives them
// back (to the garbage collector and to the pool); on a write error, and
// when it is closed, it gives back all of them.
type coalescer struct {
	net.Conn
	writeTimeout time.Duration
	maxBuf       int        // bytes buffered and being written, at most
	pool         *writePool // of the buffers' memory, shared by a server's connections; nil for none

	mu      sync.Mutex
	space   sync.Cond     // signalled when the buffer drains
	pending []byte        // bytes to write next
	spare   []byte        // a buffer to gather into once pending is being written; nil while it is
	held    int64         // taken from pool: the capacity of pending, spare and the buffer being written
	inWrite int           // bytes in the write in progress
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

// clientMaxBuf is a client's bound on what a coalescer holds per
// connection: large, because on a client a wait in Write would hold up
// yamux's send loop, and with it every call's stream write, in waits that
// ignore the calls' contexts: a call on a stalled connection could not end
// at its deadline (TestProxyDeadlineWhileSendPathStalled). What it buffers
// is the client's own requests, which its callers bound.
const clientMaxBuf = 64 << 20

// keepIdle is the largest buffer a coalescer keeps once it has nothing to
// write: a larger one, grown under load, is given back rather than held
// while the connection is idle.
const keepIdle = 64 << 10

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

// newCoalescer returns a coalescer of conn that holds at most maxBuf bytes
// to write (at least 1), taking its buffers' memory from pool (nil for no
// server-wide bound).
func newCoalescer(conn net.Conn, writeTimeout time.Duration, maxBuf int, pool *writePool) *coalescer {
	c := &coalescer{
		Conn:         conn,
		writeTimeout: writeTimeout,
		maxBuf:       max(maxBuf, 1),
		pool:         pool,
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
// It waits while the connection has maxBuf bytes to write, and writes p
// itself, after what is buffered, when p does not fit in maxBuf or the
// server-wide pool has no room for it.
func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && c.queued() > 0 && c.queued()+len(p) > c.maxBuf {
		// Make sure the writer runs: what is buffered may be a lone
		// header, which does not wake it.
		select {
		case c.wake <- struct{}{}:
		default:
		}
		c.space.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, net.ErrClosed
	}
	var rest []byte
	switch {
	case isDataHeader(p):
		// Its body is yamux's very next write. A header is buffered
		// even past the bounds: it is 12 bytes, and the body's write
		// takes it along.
		c.appendLocked(p, true)
		return len(p), nil
	case c.direct != nil && !c.writing && len(p) >= directBody:
		// A large body gains nothing from waiting for company, and
		// copying it costs: write it from yamux's buffer if the socket
		// takes it.
		rest = c.writeDirectLocked(p)
		if len(rest) == 0 {
			return len(p), nil
		}
		if !c.appendLocked(rest, false) {
			return len(p), c.writeSyncLocked(rest)
		}
	default:
		if !c.appendLocked(p, false) {
			return len(p), c.writeSyncLocked(p)
		}
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

// queued returns the bytes buffered and being written. It is called with mu
// held.
func (c *coalescer) queued() int { return len(c.pending) + c.inWrite }

// appendLocked appends p to the buffer, growing it with memory from the
// pool, and reports whether it did. It refuses (unless force) when the
// buffer would hold more than maxBuf bytes, or the pool has no room for it
// to grow. It is called with mu held.
func (c *coalescer) appendLocked(p []byte, force bool) bool {
	n := len(c.pending) + len(p)
	if n <= cap(c.pending) {
		c.pending = append(c.pending, p...)
		return true
	}
	if n > c.maxBuf && !force {
		return false
	}
	// Grow by doubling, but never past maxBuf, so that a buffer's
	// capacity stays within the connection's bound.
	size := max(n, min(2*cap(c.pending), c.maxBuf))
	grow := int64(size - cap(c.pending))
	if !c.pool.take(grow, false) {
		// Out of room: only a forced append (a frame header) goes past
		// the pool, and then by no more than it needs.
		if !force {
			return false
		}
		size, grow = n, int64(n-cap(c.pending))
		c.pool.take(grow, true)
	}
	c.held += grow
	buf := make([]byte, n, size)
	copy(buf, c.pending)
	copy(buf[len(c.pending):], p)
	c.pending = buf
	return true
}

// writeSyncLocked writes what is buffered and then p, on the calling
// goroutine (yamux's send loop), once no other write is in progress. It is
// how a frame is written that the buffer cannot take: too large for
// maxBuf, or the pool is out of room. It is called with mu held, and
// releases it during the write.
func (c *coalescer) writeSyncLocked(p []byte) error {
	for c.err == nil && !c.closed && c.writing {
		c.space.Wait()
	}
	switch {
	case c.err != nil:
		return c.err
	case c.closed:
		return net.ErrClosed
	}
	bufs := net.Buffers{p}
	if len(c.pending) > 0 {
		bufs = net.Buffers{c.pending, p}
	}
	c.inWrite = len(c.pending) + len(p)
	c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	c.writing = true
	c.mu.Unlock()

	_, err := bufs.WriteTo(c.Conn)

	c.mu.Lock()
	c.pending = c.pending[:0]
	c.wroteLocked(err)
	return c.err
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
		if c.writing { // the caller writes a frame itself (writeSyncLocked)
			c.space.Wait()
			continue
		}
		c.writeLocked()
	}
	c.shrinkLocked()
	return c.err == nil
}

// shrinkLocked gives back the buffers larger than keepIdle once there is
// nothing to write. It is called with mu held.
func (c *coalescer) shrinkLocked() {
	if c.writing || len(c.pending) > 0 {
		return
	}
	if cap(c.pending) > keepIdle {
		c.pool.give(int64(cap(c.pending)))
		c.held -= int64(cap(c.pending))
		c.pending = nil
	}
	if cap(c.spare) > keepIdle {
		c.pool.give(int64(cap(c.spare)))
		c.held -= int64(cap(c.spare))
		c.spare = nil
	}
}

// releaseLocked gives back every buffer, after a write error or once
// closed: nothing more is written. It is called with mu held and no write
// in progress.
func (c *coalescer) releaseLocked() {
	c.pool.give(c.held)
	c.held = 0
	c.pending, c.spare = nil, nil
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
		c.shrinkLocked()
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
// without waiting, and returns what is left of p to buffer. It is called
// with mu held and no write in progress.
func (c *coalescer) writeDirectLocked(p []byte) []byte {
	if len(c.pending) == 0 || c.tryWriteLocked() {
		if n, ok := c.tryOnce(p); ok {
			p = p[n:]
		}
	}
	return p
}

// writeLocked writes what is buffered, in one write. It is called with mu
// held, and releases it during the write, so that frames can gather for the
// next one.
func (c *coalescer) writeLocked() {
	buf := c.pending
	c.pending, c.spare = c.spare[:0], nil
	c.inWrite = len(buf)
	timeout := c.writeTimeout
	if c.closed {
		timeout = min(timeout, closeTimeout)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	c.writing = true
	c.mu.Unlock()

	_, err := c.Conn.Write(buf)

	c.mu.Lock()
	c.spare = buf[:0]
	c.wroteLocked(err)
}

// wroteLocked records the end of a write, with its error. It is called with
// mu held.
func (c *coalescer) wroteLocked(err error) {
	c.writing = false
	c.inWrite = 0
	c.idle = time.Now()
	if err != nil && c.err == nil {
		c.err = err
		c.Conn.Close() // so that yamux's reader stops too
	}
	if c.err != nil {
		c.releaseLocked()
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
	c.mu.Lock()
	for c.writing { // the caller's own write (writeSyncLocked) ends by closeTimeout
		c.space.Wait()
	}
	c.releaseLocked()
	c.mu.Unlock()
	err := c.Conn.Close()
	if !first {
		return nil
	}
	return err
}

// writePool bounds the memory of the buffers of every coalescer of a
// server, in bytes of capacity. A nil *writePool is no bound.
type writePool struct {
	limit int64
	used  atomic.Int64
	peak  atomic.Int64 // the most used at once, for tests
}

// newWritePool returns a pool of limit bytes, or nil for no bound if limit
// is below 1.
func newWritePool(limit int64) *writePool {
	if limit < 1 {
		return nil
	}
	return &writePool{limit: limit}
}

// take takes n bytes from the pool if it has room for them, or whether it
// has or not if force, and reports whether it took them.
func (p *writePool) take(n int64, force bool) bool {
	if p == nil {
		return true
	}
	for {
		used := p.used.Load()
		if used+n > p.limit && !force {
			return false
		}
		if p.used.CompareAndSwap(used, used+n) {
			if peak := p.peak.Load(); used+n > peak {
				p.peak.CompareAndSwap(peak, used+n) // a lost race only underestimates a test's figure
			}
			return true
		}
	}
}

// give returns n bytes to the pool.
func (p *writePool) give(n int64) {
	if p != nil && n != 0 {
		p.used.Add(-n)
	}
}
