package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Direction selects which way bytes flow through the proxy. Directions are
// bits: Both is Upstream|Downstream.
type Direction uint8

const (
	// Upstream is the direction from the client that dialled the proxy to
	// the target.
	Upstream Direction = 1 << iota
	// Downstream is the direction from the target back to the client.
	Downstream
	// Both is Upstream and Downstream.
	Both = Upstream | Downstream
)

func (d Direction) String() string {
	switch d {
	case Upstream:
		return "upstream"
	case Downstream:
		return "downstream"
	case Both:
		return "both"
	}
	return "none"
}

// indexes returns the indexes (0 upstream, 1 downstream) that d selects.
func (d Direction) indexes() []int {
	var idx []int
	if d&Upstream != 0 {
		idx = append(idx, up)
	}
	if d&Downstream != 0 {
		idx = append(idx, down)
	}
	return idx
}

const (
	up   = 0
	down = 1
)

const (
	chunkSize   = 32 << 10        // the most one read takes from a socket
	queueLen    = 64              // chunks read but not yet written, per direction
	dialTimeout = 5 * time.Second // to the target
)

// Proxy forwards TCP connections from its own loopback address to a target,
// injecting the faults it is told to. Create one with [New] and stop it with
// [Proxy.Close]. All methods are safe for concurrent use, and take effect at
// once on the connections already open as well as on later ones, except
// where a method says otherwise.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close: ends dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the proxy

	mu        sync.Mutex
	closed    bool
	latency   [2]time.Duration // by direction index
	blackHole bool
	changed   chan struct{} // closed and replaced when latency or blackHole change
	conns     map[*conn]struct{}
	accepted  int
	// connsChanged is closed and replaced when a connection is accepted
	// or forgotten, for tests to wait on (export_test.go).
	connsChanged chan struct{}
}

// New starts a proxy on a free port of 127.0.0.1 that forwards every
// connection it accepts to target (a "host:port" address dialled over TCP
// for each accepted connection). It starts with no fault: bytes flow as fast
// as they come.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target:  target,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		changed: make(chan struct{}),
		conns:   make(map[*conn]struct{}),
	}
	p.connsChanged = make(chan struct{})
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address that clients dial to reach the target through
// the proxy.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted returns how many connections the proxy has accepted since it
// started: a test can tell from it that a client redialled.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// SetLatency delays every chunk of bytes travelling in dir by d: a chunk
// read at time t is written on at t+d, or later if the direction is
// black-holed. Bytes keep their order, and chunks are delayed in a pipeline
// (a slow link, not a slow peer), so throughput stays high. Chunks already
// waiting take the new latency at once. A d of zero or less removes the
// latency.
func (p *Proxy) SetLatency(dir Direction, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range dir.indexes() {
		p.latency[i] = max(d, 0)
	}
	p.notifyLocked()
}

// SetBlackHole stops (on) or resumes (off) the forwarding of bytes in both
// directions, on every connection, like a network partition: connections
// stay open and nothing is lost, but nothing arrives either, not even the
// end of a stream. Connections accepted meanwhile are connected to the
// target but carry nothing. The proxy goes on reading only until its small
// buffers are full, after which the peers' own TCP buffers fill and their
// writes block. Once the black hole is lifted, the held bytes are delivered
// in order, as TCP would after a partition heals, to whichever peer is still
// connected.
func (p *Proxy) SetBlackHole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackHole = on
	p.notifyLocked()
}

// notifyLocked wakes the writers waiting for the latency or black hole to
// change. p.mu must be held.
func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// connsNoteLocked wakes those waiting for the connections to change. p.mu
// must be held.
func (p *Proxy) connsNoteLocked() {
	close(p.connsChanged)
	p.connsChanged = make(chan struct{})
}

// Reset aborts every connection open now: both of its sockets, the one to
// the client and the one to the target, are closed with a TCP RST (linger
// 0), so each peer sees "connection reset" rather than an orderly end of
// stream. Bytes the proxy still held are dropped. Later connections are not
// affected. Reset returns the number of connections it aborted.
func (p *Proxy) Reset() int {
	n := 0
	for _, c := range p.snapshot() {
		if c.kill(true) {
			n++
		}
	}
	return n
}

// CutAfter arms a cut on every connection open now: once a connection has
// forwarded n more bytes in dir (in each direction that dir selects,
// counted separately), it forwards those n bytes and then closes both of
// its sockets, so that a message in flight arrives only partially.
// Connections opened later are not affected, and each cut fires at most
// once. A negative n disarms the cuts pending in dir. CutAfter returns the
// number of connections it armed.
func (p *Proxy) CutAfter(dir Direction, n int64) int {
	armed := 0
	for _, c := range p.snapshot() {
		c.mu.Lock()
		if !c.killed {
			for _, i := range dir.indexes() {
				c.cut[i] = max(n, -1)
			}
			armed++
		}
		c.mu.Unlock()
	}
	return armed
}

// snapshot returns the connections open now. Some may be ending: kill
// tells.
func (p *Proxy) snapshot() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

// Close stops the proxy: it stops accepting, closes every connection (an
// orderly close, not a reset), and returns once every goroutine of the proxy
// has ended. It is idempotent and returns nil. Addr stays valid, but nothing
// listens there any more.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cancel()
	for _, c := range p.snapshot() {
		c.kill(false)
	}
	p.wg.Wait()
	return nil
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if p.isClosed() {
				return
			}
			// A transient failure (out of file descriptors, an aborted
			// handshake): try again shortly.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		ctx, cancel := context.WithCancel(p.ctx)
		c := &conn{client: nc.(*net.TCPConn), ctx: ctx, cancel: cancel, cut: [2]int64{-1, -1}}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.kill(false)
			return
		}
		p.accepted++
		p.conns[c] = struct{}{}
		p.connsNoteLocked()
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve dials the target for c, forwards both directions until they end or
// c is killed, and then forgets c.
func (p *Proxy) serve(c *conn) {
	defer p.wg.Done()
	defer func() {
		c.kill(false)
		p.mu.Lock()
		delete(p.conns, c)
		p.connsNoteLocked()
		p.mu.Unlock()
	}()

	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(c.ctx, "tcp", p.target)
	if err != nil {
		// Refuse the client as an unreachable target would have.
		c.kill(true)
		return
	}
	if !c.attach(nc.(*net.TCPConn)) {
		return
	}

	var wg sync.WaitGroup
	for _, dir := range []int{up, down} {
		src, dst := c.client, c.server
		if dir == down {
			src, dst = dst, src
		}
		ch := make(chan chunk, queueLen)
		wg.Add(2)
		go func() {
			defer wg.Done()
			c.read(src, ch)
		}()
		go func() {
			defer wg.Done()
			p.write(c, dir, dst, ch)
		}()
	}
	wg.Wait()
}

// conn is one proxied connection: the client's socket and the target's.
type conn struct {
	client *net.TCPConn
	ctx    context.Context // cancelled when the connection is killed
	cancel context.CancelFunc

	mu     sync.Mutex
	server *net.TCPConn // nil until the target answers
	killed bool
	cut    [2]int64 // bytes each direction may still forward; -1 for no cut
}

// attach sets the socket to the target, or closes it if c was killed
// meanwhile.
func (c *conn) attach(server *net.TCPConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.killed {
		server.Close()
		return false
	}
	c.server = server
	return true
}

// kill closes both sockets, with a RST if rst is set, and ends c's
// goroutines. Only the first call does anything, and reports true.
func (c *conn) kill(rst bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.killed {
		return false
	}
	c.killed = true
	for _, s := range []*net.TCPConn{c.client, c.server} {
		if s == nil {
			continue
		}
		if rst {
			s.SetLinger(0)
		}
		s.Close()
	}
	c.cancel()
	return true
}

// take returns the part of data that direction dir may still forward, and
// whether the connection must be cut after it.
func (c *conn) take(dir int, data []byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	left := c.cut[dir]
	switch {
	case left < 0:
		return data, false
	case int64(len(data)) <= left:
		c.cut[dir] -= int64(len(data))
		return data, false
	}
	c.cut[dir] = -1
	return data[:left], true
}

// chunk is what one read from a socket returned.
type chunk struct {
	data []byte
	at   time.Time // when it was read
	err  error     // the read's error (io.EOF at the end of the stream); the last chunk
}

// read reads src into ch until src ends or c is killed.
func (c *conn) read(src *net.TCPConn, ch chan<- chunk) {
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n == 0 && err == nil {
			continue
		}
		ck := chunk{data: bytes.Clone(buf[:n]), at: time.Now(), err: err}
		select {
		case ch <- ck:
		case <-c.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// write forwards the chunks of ch to dst, in direction dir, applying the
// proxy's faults, until the stream ends or c is killed.
func (p *Proxy) write(c *conn, dir int, dst *net.TCPConn, ch <-chan chunk) {
	for {
		var ck chunk
		select {
		case ck = <-ch:
		case <-c.ctx.Done():
			return
		}
		if !p.hold(dir, ck.at, c.ctx.Done()) {
			return
		}
		data, cut := c.take(dir, ck.data)
		if len(data) > 0 {
			if _, err := dst.Write(data); err != nil {
				// The receiving peer is gone: abort the other one too.
				c.kill(true)
				return
			}
		}
		switch {
		case cut:
			c.kill(false)
			return
		case errors.Is(ck.err, io.EOF):
			// An orderly end of stream: pass it on and let the other
			// direction finish.
			dst.CloseWrite()
			return
		case ck.err != nil:
			// The sending peer reset the connection, or it was closed
			// under the reader: abort.
			c.kill(true)
			return
		}
	}
}

// hold waits until a chunk read at time at may be written in direction dir:
// until the direction is not black-holed and its latency has passed since
// at. It reports false if done is closed first.
func (p *Proxy) hold(dir int, at time.Time, done <-chan struct{}) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		hole, latency, changed := p.blackHole, p.latency[dir], p.changed
		p.mu.Unlock()
		var wake <-chan time.Time
		if !hole {
			wait := time.Until(at.Add(latency))
			if wait <= 0 {
				return true
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			wake = timer.C
		}
		select {
		case <-wake:
		case <-changed:
		case <-done:
			return false
		}
	}
}
