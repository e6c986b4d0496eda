package transport

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/semaphore"

	"github.com/seed-c94cd834/fanout"
)

// Recycler is implemented by a backend that wants the results it returns
// back once a [Server] has encoded them, to reuse their memory: a large
// batch's results cost more to zero and fault in afresh than to fill. The
// server calls Recycle once with every successful answer its backend
// returned (a nil error and one result per item), once it
// is done with it (encoded, or discarded because the client gave up), and
// before it writes the encoded answer; it holds no reference to it after.
// A panic in Recycle is logged, and the answer is sent all the same.
type Recycler[Out any] interface {
	Recycle(out []Out)
}

// Server serves a [fanout.Backend] to [Client]s over yamux sessions.
//
// Each accepted connection first completes the handshake, then carries one
// yamux session. Each stream on it carries calls one after another, run on
// the stream's own goroutine. A Server is safe for concurrent use; Serve may be called on
// several listeners at once.
//
// The server reuses the memory of a request's items for later requests once
// the backend's Process has returned, so a backend must keep no reference to
// them, as [fanout.Backend] requires.
type Server[In, Out any] struct {
	backend fanout.Backend[In, Out]
	recycle func([]Out) // the backend's Recycle, if it is a Recycler
	in      Codec[In]
	out     Codec[Out]
	cfg     config
	hello   hello

	ctx    context.Context // cancelled by Close: every backend call sees it
	cancel context.CancelFunc

	pending *semaphore.Weighted // bytes of requests held; nil for no bound
	items   sync.Pool           // of *[]In: decoded requests, reused once their call is over

	// The calls' watcher (see sweep).
	epoch    time.Time // calls' start times count from it
	watchMu  sync.Mutex
	watched  map[*streamCall]struct{} // the calls of every stream being served
	sweeping atomic.Bool              // a sweeper runs; set only under watchMu
	sweeps   sync.WaitGroup           // the sweeper goroutine

	mu        sync.Mutex
	shutdown  bool // no new listeners, sessions or calls
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]*yamux.Session // session is nil during the handshake
	refusing  int                         // of conns, those being refused (see admit)
	calls     sync.WaitGroup              // calls in flight; Add only under mu while !shutdown
	streams   sync.WaitGroup              // stream goroutines; Add only under mu while !shutdown
	conn      sync.WaitGroup              // connection goroutines
}

// NewServer returns a server that answers calls with backend, decoding
// requests with in and encoding results with out.
//
// NewServer panics if a codec's name is longer than 255 bytes.
func NewServer[In, Out any](backend fanout.Backend[In, Out], in Codec[In], out Codec[Out], opts ...Option) *Server[In, Out] {
	checkCodecName(in.Name())
	checkCodecName(out.Name())
	cfg := newConfig(opts)
	ctx, cancel := context.WithCancel(context.Background())
	var pending *semaphore.Weighted
	if cfg.maxPending > 0 {
		pending = semaphore.NewWeighted(cfg.maxPending)
	}
	var recycle func([]Out)
	if r, ok := backend.(Recycler[Out]); ok {
		recycle = r.Recycle
	}
	return &Server[In, Out]{
		recycle:   recycle,
		pending:   pending,
		backend:   backend,
		in:        in,
		out:       out,
		cfg:       cfg,
		hello:     hello{version: protocolVersion, reqCodec: in.Name(), respCodec: out.Name(), maxMessage: uint32(cfg.maxMessage)},
		ctx:       ctx,
		cancel:    cancel,
		epoch:     time.Now(),
		watched:   make(map[*streamCall]struct{}),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]*yamux.Session),
	}
}

// Serve accepts connections on l and serves them until Shutdown or Close,
// then returns [ErrServerClosed]. It closes l when it returns. Any other
// error is one from l.Accept that is not temporary.
func (s *Server[In, Out]) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()

	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.closing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.cfg.logger.Warn("transport: accept failed; retrying", "addr", l.Addr().String(), "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		switch s.admit(conn) {
		case admitClosed:
			conn.Close()
			return ErrServerClosed
		case admitDrop:
			// Debug: the refusals under way log the limit at Warn, and
			// a flood must not flood the log too.
			s.cfg.logger.Debug("transport: connection closed unanswered: at the connection limit, with as many refusals under way as allowed",
				"remote", conn.RemoteAddr().String(), "limit", s.cfg.maxConns, "refusing", maxRefusing)
			conn.Close()
		case admitRefuse:
			go s.serveConn(conn, true)
		default:
			go s.serveConn(conn, false)
		}
	}
}

// An admission is what a server does with a connection it accepted.
type admission int

const (
	admitServe  admission = iota // handshake and serve
	admitRefuse                  // handshake and refuse: the server is at its connection limit
	admitDrop                    // close at once: at the limit, and refusing as many as allowed
	admitClosed                  // the server is shutting down
)

// maxRefusing is how many connections over its limit a server answers at
// once with a refusal (each waits up to the handshake timeout for its
// client's hello). Beyond that, it closes them unanswered, so that a flood
// of connections costs no more than this many goroutines.
const maxRefusing = 64

// admit decides what to do with a new conn, and records it unless it is
// to be closed at once, counting its goroutine.
func (s *Server[In, Out]) admit(conn net.Conn) admission {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := admitServe
	switch {
	case s.shutdown:
		return admitClosed
	case len(s.conns)-s.refusing < s.cfg.maxConns:
	case s.refusing >= maxRefusing:
		return admitDrop
	default:
		a = admitRefuse
		s.refusing++
	}
	s.conn.Add(1)
	s.conns[conn] = nil
	return a
}

func (s *Server[In, Out]) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// track records the session of conn, admitted earlier. It reports false if
// the server is shutting down, in which case the caller closes conn.
func (s *Server[In, Out]) track(conn net.Conn, sess *yamux.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.conns[conn] = sess
	return true
}

// serveConn serves a connection that admit recorded; busy says to refuse
// it in the handshake, the server being at its connection limit.
func (s *Server[In, Out]) serveConn(raw net.Conn, busy bool) {
	defer s.conn.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, raw)
		if busy {
			s.refusing--
		}
		s.mu.Unlock()
		raw.Close()
	}()
	remote := raw.RemoteAddr().String()
	log := s.cfg.logger.With("remote", remote)

	conn := raw
	if s.cfg.tlsConfig != nil {
		tc := tls.Server(raw, s.cfg.tlsConfig)
		raw.SetDeadline(time.Now().Add(s.cfg.handshakeTimeout))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			log.Warn("transport: TLS handshake failed", "err", err)
			return
		}
		conn = tc
	}
	peer, err := s.handshake(conn, busy)
	if err != nil {
		log.Warn("transport: handshake failed", "err", err)
		return
	}
	// Once the connection fails, its streams' reads are ended before yamux
	// shuts the session down (see connStreams.stop).
	cs := &connStreams{calls: make(map[*streamCall]struct{})}
	co := newCoalescer(conn, s.cfg.writeTimeout)
	co.readFailed = cs.stop
	sess, err := yamux.Server(co, s.cfg.yamuxConfig())
	if err != nil {
		log.Error("transport: starting session", "err", err)
		return
	}
	defer sess.Close()
	if !s.track(raw, sess) {
		return
	}
	log.Debug("transport: session open")
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			log.Debug("transport: session closed", "err", err)
			cs.stop() // if the connection did not fail first
			return
		}
		s.mu.Lock()
		if s.shutdown {
			s.mu.Unlock()
			s.refuse(st, CodeUnavailable, ErrServerClosed.Error(), peer.max)
			continue
		}
		sc := &streamCall{st: st, done: make(chan struct{}, 1)}
		if !cs.add(sc, s.cfg.maxCalls) {
			s.mu.Unlock()
			log.Debug("transport: call refused: overloaded", "limit", s.cfg.maxCalls)
			s.refuse(st, CodeOverloaded, fmt.Sprintf("server overloaded: stream limit of %d reached on this connection", s.cfg.maxCalls), peer.max)
			continue
		}
		s.streams.Add(1)
		s.mu.Unlock()
		go s.serveStream(sc, peer, cs)
	}
}

// peer is what a server knows of a connection's client.
type peer struct {
	max int // the largest message payload the client accepts
}

// handshake checks the client's hello and answers it, in the client's
// version if the server serves it and in its own otherwise. If busy, a
// hello the server would accept is refused with statusBusy.
func (s *Server[In, Out]) handshake(conn net.Conn, busy bool) (peer, error) {
	conn.SetDeadline(time.Now().Add(s.cfg.handshakeTimeout))
	h, err := readHello(conn)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return peer{}, fmt.Errorf("%w: connection closed during handshake", ErrProtocol)
		}
		return peer{}, err
	}
	reason := checkHello(s.hello, h)
	status := uint8(statusOK)
	switch {
	case reason != "":
		status = statusRefused
	case busy:
		status = statusBusy
		reason = fmt.Sprintf("server at its limit of %d connections", s.cfg.maxConns)
	}
	if _, err := conn.Write(appendReply(nil, s.hello, status, reason)); err != nil {
		return peer{}, err
	}
	switch {
	case status == statusBusy:
		return peer{}, fmt.Errorf("connection refused: %s", reason)
	case reason != "":
		return peer{}, fmt.Errorf("%w: %s", ErrHandshake, reason)
	}
	return peer{max: int(min(h.maxMessage, maxMessageLimit))}, conn.SetDeadline(time.Time{})
}

// refuse answers a stream with an error, cut to the client's limit, and
// closes it.
func (s *Server[In, Out]) refuse(st *yamux.Stream, code Code, msg string, peerMax int) {
	st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
	st.Write(appendErrorFrame(nil, code, msg, peerMax))
	st.Close()
}

// serveStream answers the calls of one stream, one after another, until the
// client closes it. An answer larger than peer.max is replaced by an
// error, and a large request is asked for with a continue frame if the
// client waits for one (peer.continues). streams counts the connection's
// streams.
//
// Each call runs on this goroutine. A call that lasts longer than
// watchAfter gets a watcher (see sweep), which waits for the stream's next
// byte: the end of the stream means the client gave up, and cancels the
// call; any data is the start of the client's next request, read once the
// current call has answered. A short call thus costs no goroutine and no
// timer.
func (s *Server[In, Out]) serveStream(sc *streamCall, peer peer, cs *connStreams) {
	defer s.streams.Done()
	defer cs.remove(sc)
	st := sc.st
	defer st.Close()
	log := s.cfg.logger // attributes are built only where something is logged

	s.watchMu.Lock()
	s.watched[sc] = struct{}{}
	s.watchMu.Unlock()
	defer func() {
		s.watchMu.Lock()
		delete(s.watched, sc)
		s.watchMu.Unlock()
	}()
	for first := true; ; first = false {
		if first {
			st.SetReadDeadline(time.Now().Add(s.cfg.requestTimeout))
		}
		// The header is read into a small buffer of the stream's own: a
		// request may wait for room in the server's budget after it, and
		// must hold no more than that meanwhile.
		hdr := sc.hdr[:]
		if !sc.early {
			if err := sc.awaitRequest(); err != nil {
				if first {
					log.Debug("transport: stream ended before its request", "remote", st.RemoteAddr(), "err", err)
				}
				return
			}
		}
		sc.early = false
		// A call counts from its first byte on, so that Shutdown waits for
		// a request still arriving or waiting for room in the budget; once
		// shutting down, a request is refused before it is read.
		s.mu.Lock()
		if s.shutdown {
			s.mu.Unlock()
			s.refuse(st, CodeUnavailable, ErrServerClosed.Error(), peer.max)
			return
		}
		s.calls.Add(1)
		s.mu.Unlock()
		if !first {
			st.SetReadDeadline(time.Now().Add(s.cfg.requestTimeout))
		}
		items, timeout, held, err := s.readRequest(st, hdr)
		if err != nil {
			s.release(held)
			s.calls.Done()
			var refusal *RemoteError
			if errors.As(err, &refusal) {
				log.Warn("transport: request refused", "remote", st.RemoteAddr(), "err", refusal.Message)
				s.refuse(st, refusal.Code, refusal.Message, peer.max)
			} else {
				log.Debug("transport: stream ended inside a request", "remote", st.RemoteAddr(), "err", err)
			}
			return
		}

		var ctx context.Context
		if timeout > 0 {
			ctx, sc.cancel = context.WithTimeout(s.ctx, timeout)
		} else {
			ctx, sc.cancel = context.WithCancel(s.ctx)
		}
		code := s.runCall(ctx, items, held, peer.max, sc)
		s.putItems(items)
		if sc.gone.Load() || !keepsStream(code) {
			return // the client ended its side, or the answer ends the stream
		}
	}
}

// idleShrink is how long a stream waits for its next request, after one of
// more than shrinkAbove bytes, before it gives its yamux receive buffer
// back.
const idleShrink = 50 * time.Millisecond

// shrinkAbove is the size of a request after which a stream gives its
// receive buffer back once idle. After a smaller one the buffer is small,
// and the stream waits for its next request without a timer.
const shrinkAbove = 4 << 10

// awaitRequest reads the first byte of the stream's next request into
// hdr[0]. yamux keeps a stream's receive buffer, up to about twice what it
// held unread (at most two stream windows), for the next message. After a
// request of more than shrinkAbove bytes (hdr still holds its header), a
// stream that stays idle for idleShrink gives it back, so that the streams
// a client keeps between calls hold little. (Giving it back after every
// large request cost 3-14% of the bulk numbers/s: the chunks of a bulk call
// follow one another closer than that.)
//
// A stream whose reads were stopped (see [connStreams.stop]) waits for
// nothing.
func (sc *streamCall) awaitRequest() error {
	st, hdr := sc.st, sc.hdr[:]
	if sc.stopped.Load() {
		return errReadsStopped
	}
	if binary.LittleEndian.Uint32(hdr[1:]) <= shrinkAbove {
		_, err := io.ReadFull(st, hdr[:1])
		return err
	}
	st.SetReadDeadline(time.Now().Add(idleShrink))
	_, err := io.ReadFull(st, hdr[:1])
	if errors.Is(err, yamux.ErrTimeout) && !sc.stopped.Load() {
		st.Shrink()
		st.SetReadDeadline(time.Time{})
		_, err = io.ReadFull(st, hdr[:1])
	}
	return err
}

// errReadsStopped ends a stream whose connection failed.
var errReadsStopped = errors.New("connection failed")

// connStreams is the set of the streams a connection serves: it bounds
// their number ([WithMaxConcurrentCalls]) and ends all their reads at once
// when the connection fails.
type connStreams struct {
	mu      sync.Mutex
	calls   map[*streamCall]struct{}
	stopped bool // stop was called: streams added later stop at once
}

// add counts sc among the connection's streams, unless it serves max
// already.
func (cs *connStreams) add(sc *streamCall, max int) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.calls) >= max {
		return false
	}
	cs.calls[sc] = struct{}{}
	if cs.stopped {
		sc.stopReads()
	}
	return true
}

func (cs *connStreams) remove(sc *streamCall) {
	cs.mu.Lock()
	delete(cs.calls, sc)
	cs.mu.Unlock()
}

// stop ends the reads of the connection's streams, once the connection
// failed or its session shut down, and keeps them from waiting for another
// request. yamux v0.1.2's Stream.Read returns only once the session's
// Close has marked its stream closed; until then every reader woken by the
// shutdown spins, and with many streams (every idle stream a client keeps
// has a reader here) the spinners starve Close of the CPU it needs to get
// to them: BenchmarkServerCloseIdleStreams took from 16 ms to 2 s for 256
// idle streams, and over 20 s under -race (PERFORMANCE.md, section 3d).
// Called when the connection's read fails, before yamux starts its
// shutdown, the read deadline in the past ends each read before it can
// spin.
func (cs *connStreams) stop() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.stopped = true
	for sc := range cs.calls {
		sc.stopReads()
	}
}

// stopAllReads is [connStreams.stop] for every connection, for Close and
// Shutdown to call before they shut the sessions down.
func (s *Server[In, Out]) stopAllReads() {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for sc := range s.watched {
		sc.stopReads()
	}
}

// inlineWrite is the largest answer a server writes without watching for
// its client to give up meanwhile. A stream's peer acknowledges each half
// window (256 KiB) it reads, so a stream between calls has at least half
// its window free, and a message this small never waits for the peer.
const inlineWrite = 64 << 10

// watchAfter is how long a call runs before a watcher starts to look for
// the client giving up on it: between one and two times this, since the
// sweeper looks at the calls once every watchAfter.
const watchAfter = 10 * time.Millisecond

// sweepIdle is how many looks in a row that find no call running end the
// sweeper; the next call starts another.
const sweepIdle = 100

// States of a streamCall.
const (
	callIdle    = iota // between calls
	callRunning        // a call runs, not watched
	callWatched        // a watcher runs: a call ran long, or a large answer is written
)

// streamCall is the state of a stream's calls, shared by the stream's
// goroutine and the watcher of its call in flight, and reused from one call
// to the next.
type streamCall struct {
	st    *yamux.Stream
	hdr   [frameHeaderSize]byte // the header of the request being read
	early bool                  // the watcher read hdr[0], the start of the next request
	peek  [1]byte
	state atomic.Int32  // callIdle, callRunning or callWatched
	since atomic.Int64  // when the call started, from the server's epoch
	done  chan struct{} // receives once watchStream has returned
	gone  atomic.Bool   // the client gave up on the call
	// stopped: the connection failed, and a read deadline in the past
	// ends the stream's reads (see connStreams.stop).
	stopped atomic.Bool
	cancel  context.CancelFunc
}

// stopReads ends the stream's reads at once, and for good.
func (sc *streamCall) stopReads() {
	sc.stopped.Store(true)
	sc.st.SetReadDeadline(time.Unix(1, 0))
}

// watch marks the start of a call on sc, for the sweeper to find, and
// makes sure a sweeper runs.
func (s *Server[In, Out]) watch(sc *streamCall) {
	sc.since.Store(int64(time.Since(s.epoch)))
	sc.state.Store(callRunning)
	if s.sweeping.Load() {
		return
	}
	s.watchMu.Lock()
	if !s.sweeping.Load() && s.ctx.Err() == nil {
		s.sweeping.Store(true)
		s.sweeps.Add(1)
		go s.sweep()
	}
	s.watchMu.Unlock()
}

// unwatch marks the end of the call on sc, or of the write of its answer:
// it stops the watcher, if one started, and waits for it. (Only the
// stream's goroutine moves sc out of callIdle.)
func (sc *streamCall) unwatch() {
	if sc.state.Load() == callIdle || sc.state.CompareAndSwap(callRunning, callIdle) {
		return
	}
	sc.st.SetReadDeadline(time.Now())
	<-sc.done
	sc.st.SetReadDeadline(time.Time{})
	sc.state.Store(callIdle)
}

// sweep starts a watcher for each call that has run for watchAfter. It
// looks at every stream's call once every watchAfter, and returns after
// sweepIdle looks that found no call running, or once the server is
// closed. One timer for the whole server costs less than one per call: on
// a quiet machine, arming a timer for each call woke the thread waiting in
// the network poller about once per call (PERFORMANCE.md).
func (s *Server[In, Out]) sweep() {
	defer s.sweeps.Done()
	tick := time.NewTicker(watchAfter)
	defer tick.Stop()
	for idle := 0; ; {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		s.watchMu.Lock()
		if s.watchCalls() {
			idle = 0
		} else if idle++; idle >= sweepIdle {
			s.sweeping.Store(false)
			// A call that started before the store above may have seen
			// the sweeper running: look once more.
			if !s.watchCalls() {
				s.watchMu.Unlock()
				return
			}
			s.sweeping.Store(true)
			idle = 0
		}
		s.watchMu.Unlock()
	}
}

// watchCalls starts a watcher for each call that has run for watchAfter,
// and reports whether any call is running. s.watchMu must be held.
func (s *Server[In, Out]) watchCalls() (running bool) {
	now := int64(time.Since(s.epoch))
	for sc := range s.watched {
		if sc.state.Load() == callIdle {
			continue
		}
		running = true
		if now-sc.since.Load() >= int64(watchAfter) && sc.state.CompareAndSwap(callRunning, callWatched) {
			go sc.watchStream()
		}
	}
	return running
}

// watchStream waits for the stream's next byte while a call runs, until the
// call ends and stops it with a read deadline.
func (sc *streamCall) watchStream() {
	defer func() { sc.done <- struct{}{} }()
	n, err := sc.st.Read(sc.peek[:])
	switch {
	case n == 1:
		// The client sent its next request before the answer: it is read
		// once the call has answered.
		sc.hdr[0], sc.early = sc.peek[0], true
	case errors.Is(err, yamux.ErrTimeout) && !sc.stopped.Load():
		// The call ended and stopped the watch.
	default:
		// The client gave up: nobody reads the answer, so a write blocked
		// on a full stream window ends at once rather than at the write
		// timeout.
		sc.gone.Store(true)
		sc.st.SetWriteDeadline(time.Now())
		sc.cancel()
	}
}

// runCall runs one call and writes its answer, then releases the held bytes
// of its request. It returns the answer's error code, 0 for results.
func (s *Server[In, Out]) runCall(ctx context.Context, items []In, held int64, peerMax int, sc *streamCall) Code {
	defer s.calls.Done()
	defer sc.cancel()
	defer s.release(held)
	st := sc.st
	log := s.cfg.logger

	s.watch(sc) // gone is false: serveStream returns once it is set
	out, code, err := s.process(ctx, items)
	answer := out // handed back to a Recycler once encoded or discarded
	sc.unwatch()
	st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
	if sc.gone.Load() {
		out, code, err = nil, CodeCanceled, errors.New("call cancelled by the client")
	}
	bufp := getBuf()
	defer putBuf(bufp)
	buf := (*bufp)[:0]
	if err == nil {
		buf = appendFrameHeader(buf, kindResponse)
		if buf, err = s.out.Append(buf, out); err != nil {
			log.Error("transport: encoding response", "remote", st.RemoteAddr(), "err", err)
			code, err = CodeInternal, fmt.Errorf("encode response: %w", err)
		} else if err = finishFrame(buf, 0, peerMax); err != nil {
			code, err = CodeTooLarge, fmt.Errorf("response refused: %w", err)
		}
	}
	if err != nil {
		buf = appendErrorFrame(buf[:0], code, err.Error(), peerMax)
	}
	*bufp = buf
	if s.recycle != nil && answer != nil {
		// The answer is in buf now, or discarded: its memory can be
		// reused while buf is written.
		s.giveBack(answer)
	}
	// An answer larger than inlineWrite can wait for the
	// client to read: watch while writing it, so that a client that gives
	// up ends the write at once rather than at the write timeout. A
	// smaller one always fits (the client acknowledges each half window it
	// reads), and the write cannot block.
	if len(buf) > inlineWrite && !sc.gone.Load() {
		sc.state.Store(callWatched)
		go sc.watchStream()
	}
	if _, err := st.Write(buf); err != nil {
		log.Debug("transport: writing response", "remote", st.RemoteAddr(), "err", err)
	}
	sc.unwatch()
	return code
}

// readRequest reads the rest of a request whose first header byte is in
// hdr[0] and decodes it. A request too large for the client to send with
// its header (continueAbove) is asked for with a continue frame once the
// server's budget has room for it. It returns the items, the time left before the
// caller's deadline (0 for none) and the bytes it took from the server's
// budget for the request, which the caller releases once the call is over,
// whatever the error. A request the server refuses is returned as a
// *RemoteError, the answer to send back; a stream that ended or timed out
// inside the request, as any other error.
func (s *Server[In, Out]) readRequest(st *yamux.Stream, hdr []byte) (items []In, timeout time.Duration, held int64, err error) {
	defer st.SetReadDeadline(time.Time{})
	_, err = io.ReadFull(st, hdr[1:])
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	var k kind
	var n int
	if err == nil {
		k, n, err = parseHeader(hdr, s.cfg.maxMessage)
	}
	// A frame that is not a request, or that is too short to be one, is
	// refused from its header: its payload is neither read nor held.
	if err == nil && (k != kindRequest || n < requestPrefixSize) {
		err = fmt.Errorf("%w: expected a request, got message kind %d of %d bytes", ErrProtocol, k, n)
	}
	var payload []byte
	asks := n > continueAbove // the client waits for a continue frame
	if err == nil {
		held, err = s.reserve(st, n, asks)
	}
	if err == nil && asks {
		// The client sends a large payload only once told there is room
		// for it (PROTOCOL.md).
		st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
		_, err = st.Write(continueFrame)
		// The payload has the whole request timeout from now.
		st.SetReadDeadline(time.Now().Add(s.cfg.requestTimeout))
	}
	if err == nil {
		bufp := getBuf()
		defer putBuf(bufp)
		buf := append((*bufp)[:0], hdr...)
		// Room for the payload is reserved: no need to grow the buffer
		// only as the bytes arrive.
		buf = slices.Grow(buf, n)
		_, payload, err = readPayload(st, s.cfg.maxMessage, buf)
		*bufp = payload
	}
	switch {
	case errors.Is(err, ErrMessageTooLarge):
		return nil, 0, held, &RemoteError{Code: CodeTooLarge, Message: "request refused: " + err.Error()}
	case errors.Is(err, ErrProtocol):
		return nil, 0, held, &RemoteError{Code: CodeBadRequest, Message: err.Error()}
	case err != nil:
		return nil, 0, held, err
	}
	items, err = s.in.Decode(s.getItems(), payload[requestPrefixSize:])
	if err != nil {
		s.putItems(items)
		return nil, 0, held, &RemoteError{Code: CodeBadRequest, Message: "decode request: " + err.Error()}
	}
	return items, time.Duration(min(binary.LittleEndian.Uint64(payload), 1<<62)), held, nil
}

// reserve takes size bytes, a request's payload, from the server's budget
// (see [WithMaxPendingBytes]), waiting for room if need be, and returns the
// bytes taken. The wait does not count against the request timeout: the
// client is not the one who is slow. With watch, for a large request whose
// client sends nothing more until the continue frame, the end of its stream
// during the wait means it gave up, and ends the wait.
func (s *Server[In, Out]) reserve(st *yamux.Stream, size int, watch bool) (int64, error) {
	if s.pending == nil {
		return 0, nil
	}
	n := min(int64(size), s.cfg.maxPending)
	if s.pending.TryAcquire(n) {
		return n, nil
	}
	// The stream's receive buffer from its last request is not needed
	// while it waits.
	st.Shrink()
	st.SetReadDeadline(time.Time{})
	ctx, stop := s.ctx, func() error { return nil }
	if watch {
		ctx, stop = watchWait(s.ctx, st)
	}
	err := s.pending.Acquire(ctx, n)
	if gone := stop(); gone != nil {
		if err == nil {
			s.pending.Release(n)
		}
		return 0, gone
	}
	if err != nil {
		return 0, fmt.Errorf("waiting for memory for a request of %d bytes: %w", n, err)
	}
	st.SetReadDeadline(time.Now().Add(s.cfg.requestTimeout))
	return n, nil
}

// watchWait watches st while its large request waits for room, until stop
// is called: the client sends nothing before the continue frame, so a read
// that returns means it gave up (the end of its stream) or broke the
// protocol (a byte), and cancels ctx. stop ends the watch and returns why
// the read returned, or nil if stop ended it.
func watchWait(parent context.Context, st *yamux.Stream) (ctx context.Context, stop func() error) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan error, 1)
	var stopping atomic.Bool // stop's deadline, not streamCall.stopReads', ends the read
	go func() {
		var b [1]byte
		n, err := st.Read(b[:])
		switch {
		case n > 0:
			err = fmt.Errorf("%w: request payload sent before the continue frame", ErrProtocol)
		case errors.Is(err, yamux.ErrTimeout) && stopping.Load():
			err = nil // stopped
		case err == nil:
			err = io.ErrNoProgress
		default:
			err = fmt.Errorf("client gave up while its request waited for room: %w", err)
		}
		if err != nil {
			cancel()
		}
		done <- err
	}()
	return ctx, func() error {
		stopping.Store(true)
		st.SetReadDeadline(time.Now())
		err := <-done
		st.SetReadDeadline(time.Time{})
		cancel()
		return err
	}
}

// maxPooledItems is the largest decoded request, in items, kept for reuse.
const maxPooledItems = 1 << 21

// getItems returns an empty slice to decode a request into: one a finished
// call left, whose memory is reused. A backend keeps no items after its
// Process returns ([fanout.Backend]), so a request's items are free once
// its call is over; reusing them saves allocating, zeroing and faulting in
// every large request afresh.
func (s *Server[In, Out]) getItems() []In {
	if p, ok := s.items.Get().(*[]In); ok {
		return (*p)[:0]
	}
	return nil
}

// putItems keeps items, whose call is over, for a later request.
func (s *Server[In, Out]) putItems(items []In) {
	if cap(items) == 0 || cap(items) > maxPooledItems {
		return
	}
	p := &items
	s.items.Put(p)
}

// release gives n bytes back to the server's budget.
func (s *Server[In, Out]) release(n int64) {
	if n > 0 {
		s.pending.Release(n)
	}
}

// giveBack hands an answer back to the backend's Recycler. A panic in
// Recycle is logged and goes no further: the answer is encoded already, and
// the server goes on serving.
func (s *Server[In, Out]) giveBack(answer []Out) {
	defer func() {
		if r := recover(); r != nil {
			s.cfg.logger.Error("transport: backend's Recycle panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	s.recycle(answer)
}

// process calls the backend, turning a panic or a broken contract into an
// error for this call only. An empty batch is answered without calling the
// backend (it is how clients probe a server), with no results: out is
// always what the backend returned, the only answers a Recycler is given.
func (s *Server[In, Out]) process(ctx context.Context, items []In) (out []Out, code Code, err error) {
	if len(items) == 0 {
		return nil, 0, nil
	}
	defer func() {
		if r := recover(); r != nil {
			s.cfg.logger.Error("transport: backend panicked", "panic", r, "stack", string(debug.Stack()))
			out, code, err = nil, CodeInternal, fmt.Errorf("backend panicked: %v", r)
		}
	}()
	out, err = s.backend.Process(ctx, items)
	switch {
	case err == nil && len(out) != len(items):
		return nil, CodeInternal, fmt.Errorf("%w: %d results for %d items", fanout.ErrResultCount, len(out), len(items))
	case err == nil:
		return out, 0, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return nil, CodeDeadline, err
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return nil, CodeCanceled, err
	}
	return nil, CodeBackend, err
}

// Shutdown stops the server gracefully: it closes the listeners, waits for
// the calls in flight to finish (a call is in flight from the first byte of
// its request, including while the request waits for room in
// [WithMaxPendingBytes]), then closes every connection. If ctx ends
// first, Shutdown closes everything at once, cancelling the calls still
// running, and returns ctx's error. Calls that arrive during the shutdown
// are refused with [CodeUnavailable], which tells their client that they
// were not processed and that it should use a new connection. (Shutdown
// does not send yamux's go-away: yamux resets the streams that race it,
// and a reset cannot tell the client whether its call was processed.)
// Shutdown and Close may be called more than once.
func (s *Server[In, Out]) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.calls.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
		// Close the sessions before their connections: closing one flushes
		// what its coalescer still holds, the answers of the last calls.
		s.mu.Lock()
		var sessions []*yamux.Session
		for _, sess := range s.conns {
			if sess != nil {
				sessions = append(sessions, sess)
			}
		}
		s.mu.Unlock()
		s.stopAllReads() // the streams wait for requests only
		for _, sess := range sessions {
			sess.Close()
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.Close()
	return err
}

// Close stops the server at once: it closes the listeners and every
// connection and cancels the context of every call in flight, then waits for
// the server's goroutines to return (which is prompt if the backend honours
// cancellation). It is idempotent and returns nil.
func (s *Server[In, Out]) Close() error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	// The connections first, so that nothing waits to write to them and no
	// answer leaves (a call whose read stopAllReads ends is taken for one
	// its client gave up, and cancelled); then the reads, before the
	// sessions shut down.
	for conn := range s.conns {
		conn.Close()
	}
	s.stopAllReads()
	for _, sess := range s.conns {
		if sess != nil {
			sess.Close()
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.conn.Wait()
	s.streams.Wait()
	s.calls.Wait()
	s.sweeps.Wait() // no stream is left to start another
	return nil
}
