package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/semaphore"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

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
	if !s.reaping && s.cfg.idleTimeout > 0 {
		s.reaping = true
		s.sweeps.Add(1)
		go s.reap()
	}
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
		a, cs := s.admit(conn)
		switch a {
		case admitClosed:
			conn.Close()
			return ErrServerClosed
		case admitDrop:
			// Debug: the refusals under way log at Debug too, and a flood
			// must not flood the log.
			s.cfg.logger.Debug("transport: connection closed unanswered: handshake slots full, with as many refusals under way as allowed",
				"remote", conn.RemoteAddr().String(), "handshakes", s.cfg.maxHandshakes, "per_host", s.cfg.hostHandshakes, "refusing", maxRefusing)
			conn.Close()
		default:
			go s.serveConn(conn, cs)
		}
	}
}

// An admission is what a server does with a connection it accepted.
type admission int

const (
	admitServe  admission = iota // handshake in a slot of its own, then serve
	admitRefuse                  // read the hello briefly and refuse it: the handshake slots are full
	admitDrop                    // close at once: the slots are full, and refusing as many as allowed
	admitClosed                  // the server is shutting down
)

// maxRefusing is how many connections a server refuses at once, past its
// handshake slots (each waits up to the refusal timeout for its client's
// hello). Beyond that, it closes them unanswered, so that a flood of
// connections costs no more than this many goroutines.
const maxRefusing = 64

// defaultRefuseTimeout bounds how long a refusal waits for its client's
// hello (TLS handshake included), or the handshake timeout if that is
// shorter. An honest client sends its hello as soon as it has connected,
// so a refusal costs it little time, and a hello that never comes holds a
// refusal slot only briefly.
const defaultRefuseTimeout = time.Second

// connSlots counts a server's connections by the state of their handshake,
// under its mu. A connection holds one slot at a time, as its
// serverConn.slot says: a handshake slot (bounded in total and per host,
// [WithHandshakeLimits]) or a refusal slot (maxRefusing) until its
// handshake ends, then a served one ([WithMaxConnections]) if it was
// accepted.
type connSlots struct {
	handshaking int            // connections in their handshake, in a slot
	perHost     map[string]int // of those, by remote host; no entry for 0
	refusing    int            // connections being refused
	served      int            // connections past their handshake
}

// A slotKind is the slot a connection holds (see connSlots).
type slotKind uint8

const (
	slotHandshake slotKind = iota
	slotRefusal
	slotServed
)

// admit decides what to do with a new conn and gives it its slot, and
// records it unless it is to be closed at once, counting its goroutine.
func (s *Server[In, Out]) admit(conn net.Conn) (admission, *serverConn) {
	host := hostOf(conn.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots
	a, slot, busy := admitServe, slotHandshake, ""
	switch {
	case s.shutdown:
		return admitClosed, nil
	case sl.handshaking < s.cfg.maxHandshakes && sl.perHost[host] < s.cfg.hostHandshakes:
		if sl.perHost == nil {
			sl.perHost = make(map[string]int)
		}
		sl.handshaking++
		sl.perHost[host]++
	case sl.refusing >= maxRefusing:
		return admitDrop, nil
	default:
		a, slot = admitRefuse, slotRefusal
		sl.refusing++
		if sl.handshaking >= s.cfg.maxHandshakes {
			busy = fmt.Sprintf("server busy: at its limit of %d connections in their handshake", s.cfg.maxHandshakes)
		} else {
			busy = fmt.Sprintf("server busy: at its limit of %d connections in their handshake from one host", s.cfg.hostHandshakes)
		}
	}
	// Built only for a connection kept: a flood's connections closed at
	// once cost no record.
	cs := &serverConn{host: host, slot: slot, busy: busy, streams: make(map[*streamCall]struct{}), open: &s.nstreams}
	if s.pending != nil {
		cs.share = semaphore.NewWeighted(s.connShare)
	}
	s.conn.Add(1)
	s.conns[conn] = cs
	return a, cs
}

// promote moves cs, whose client's hello the server accepts, from its
// handshake slot to a served one, and reports why it cannot ("" if it
// can): the server serves as many connections as it may.
func (s *Server[In, Out]) promote(cs *serverConn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slots.served >= s.cfg.maxConns {
		return fmt.Sprintf("server at its limit of %d connections", s.cfg.maxConns)
	}
	s.freeSlot(cs)
	cs.slot = slotServed
	s.slots.served++
	return ""
}

// freeSlot gives back the slot cs holds. s.mu must be held.
func (s *Server[In, Out]) freeSlot(cs *serverConn) {
	sl := &s.slots
	switch cs.slot {
	case slotHandshake:
		sl.handshaking--
		if sl.perHost[cs.host]--; sl.perHost[cs.host] == 0 {
			delete(sl.perHost, cs.host)
		}
	case slotRefusal:
		sl.refusing--
	case slotServed:
		sl.served--
	}
}

// hostOf names the remote host of a connection, for the handshake slots
// per host: an IPv4 address, or the /64 prefix of an IPv6 address (what
// one site is usually given, so that one attacker counts as one host).
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip4 := ta.IP.To4(); ip4 != nil {
			return ip4.String()
		}
		return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func (s *Server[In, Out]) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// track records the session of cs, and reports false if the server is
// shutting down, in which case the caller closes the connection.
func (s *Server[In, Out]) track(cs *serverConn, sess *yamux.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	cs.sess = sess
	return true
}

// serveConn serves raw, which admit recorded as cs: it completes the
// handshake, or refuses it if cs holds a refusal slot, then serves the
// session.
func (s *Server[In, Out]) serveConn(raw net.Conn, cs *serverConn) {
	defer s.conn.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, raw)
		s.freeSlot(cs)
		s.mu.Unlock()
		raw.Close()
		s.reached(hookConnEnded)
	}()
	remote := raw.RemoteAddr().String()
	log := s.cfg.logger.With("remote", remote)

	// One deadline for the whole handshake, TLS included.
	timeout := s.cfg.handshakeTimeout
	if cs.busy != "" {
		timeout = min(timeout, s.cfg.refuseTimeout)
	}
	raw.SetDeadline(time.Now().Add(timeout))
	conn := raw
	if s.cfg.tlsConfig != nil {
		tc := tls.Server(raw, s.cfg.tlsConfig)
		if err := tc.HandshakeContext(s.ctx); err != nil {
			s.logHandshake(log, cs, "transport: TLS handshake failed", timeout, err)
			return
		}
		conn = tc
	}
	peer, err := s.handshake(conn, cs)
	if err != nil {
		s.logHandshake(log, cs, "transport: handshake failed", timeout, err)
		return
	}
	co := newCoalescer(conn, s.cfg.writeTimeout, s.cfg.maxWriteBuffer, s.cfg.writePool)
	// Once the connection fails, its streams' reads are ended before yamux
	// shuts the session down (see serverConn.stop).
	co.readFailed = cs.stop
	control := s.cfg.controlFrames
	if control == 0 {
		control = controlFrameLimit(s.cfg.maxCalls)
	}
	co.frames = newFrameLimiter(s.cfg.pingRate, s.cfg.pingBurst, control, time.Now)
	co.flooded = func(err error) {
		log.Warn("transport: closing the connection: too many frames that carry no call", "err", err)
	}
	sess, err := yamux.Server(co, s.cfg.yamuxConfig())
	if err != nil {
		log.Error("transport: starting session", "err", err)
		return
	}
	defer sess.Close()
	if !s.track(cs, sess) {
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
		if refusal := cs.add(sc, s.cfg.maxCalls, s.cfg.maxStreams); refusal != "" {
			s.mu.Unlock()
			msg := "server overloaded: " + refusal
			s.shed.note(log, refusal)
			s.observeRefusal(st, &RemoteError{Code: CodeOverloaded, Message: msg}, 0)
			s.refuse(st, CodeOverloaded, msg, peer.max)
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

// logHandshake logs a failed handshake, naming the timeout it ran out of,
// if it did: at Warn, or at Debug for one refused past the handshake slots,
// which an attack can make many of.
func (s *Server[In, Out]) logHandshake(log *slog.Logger, cs *serverConn, msg string, timeout time.Duration, err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = fmt.Errorf("not complete within %v: %w", timeout, err)
	}
	level := slog.LevelWarn
	if cs.slot == slotRefusal {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, msg, "err", err)
}

// handshake checks the client's hello and answers it, in the client's
// version if the server serves it and in its own otherwise. A hello the
// server would accept is refused with statusBusy if cs holds a refusal
// slot, or if the server serves as many connections as it may; otherwise
// cs is promoted to a served connection. The caller set the deadline.
func (s *Server[In, Out]) handshake(conn net.Conn, cs *serverConn) (peer, error) {
	h, err := wire.ReadHello(conn)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return peer{}, fmt.Errorf("%w: connection closed during handshake", ErrProtocol)
		}
		return peer{}, err
	}
	reason := wire.CheckHello(s.hello, h)
	status := uint8(wire.StatusOK)
	switch {
	case reason != "":
		status = wire.StatusRefused
	case cs.busy != "":
		status, reason = wire.StatusBusy, cs.busy
	default:
		if reason = s.promote(cs); reason != "" {
			status = wire.StatusBusy
		}
	}
	if _, err := conn.Write(wire.AppendReply(nil, s.hello, status, reason)); err != nil {
		return peer{}, err
	}
	switch {
	case status == wire.StatusBusy:
		return peer{}, fmt.Errorf("connection refused: %s", reason)
	case reason != "":
		return peer{}, fmt.Errorf("%w: %s", ErrHandshake, reason)
	}
	return peer{max: int(min(h.MaxMessage, maxMessageLimit))}, conn.SetDeadline(time.Time{})
}

// refuse answers a stream with an error, cut to the client's limit, and
// closes it.
func (s *Server[In, Out]) refuse(st *yamux.Stream, code Code, msg string, peerMax int) {
	s.refuseDraining(st, code, msg, peerMax, 0, time.Time{})
}

// refuseDraining is refuse for a request of which left bytes may still
// come: it reads and drops them, until end at the latest, before it closes
// the stream.
func (s *Server[In, Out]) refuseDraining(st *yamux.Stream, code Code, msg string, peerMax int, left int64, end time.Time) {
	st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
	st.Write(appendErrorFrame(nil, code, msg, peerMax))
	if left > 0 {
		st.SetReadDeadline(end)
		io.CopyN(io.Discard, st, left)
	}
	st.Close()
}

// errReadsStopped ends a stream whose connection failed.
var errReadsStopped = errors.New("connection failed")

// serverConn is the record of a connection a server admitted: its session,
// once the handshake is done, and the streams it serves, each recorded here
// only. It bounds their number ([WithMaxConcurrentCalls]), ends all their
// reads at once when the connection fails, and is where the sweeper finds
// the calls to watch.
type serverConn struct {
	sess  *yamux.Session      // set by track under the server's mu; nil during the handshake
	share *semaphore.Weighted // the connection's share of the server's budget; nil for no budget
	open  *atomic.Int64       // the server's count of streams open
	host  string              // the remote host, whose handshake slots it counts in
	slot  slotKind            // the slot it holds; changed under the server's mu
	busy  string              // why it is refused, if it holds a refusal slot

	mu      sync.Mutex
	streams map[*streamCall]struct{}
	stopped bool // stop was called: streams added later stop at once
}

// add counts sc among the connection's streams, unless it serves perConn
// already, or the server serves total and this is not the connection's
// first stream; it returns why it refused, or "".
func (cs *serverConn) add(sc *streamCall, perConn, total int) string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch {
	case len(cs.streams) >= perConn:
		return fmt.Sprintf("stream limit of %d reached on this connection", perConn)
	case len(cs.streams) > 0 && cs.open.Load() >= int64(total):
		return fmt.Sprintf("server-wide stream limit of %d reached", total)
	}
	cs.streams[sc] = struct{}{}
	cs.open.Add(1)
	if cs.stopped {
		sc.stopReads()
	}
	return ""
}

func (cs *serverConn) remove(sc *streamCall) {
	cs.mu.Lock()
	delete(cs.streams, sc)
	cs.open.Add(-1)
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
func (cs *serverConn) stop() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.stopped = true
	for sc := range cs.streams {
		sc.stopReads()
		// A call that has not run long enough for the sweeper to watch it
		// is watched now: the sweeper no longer finds the streams of a
		// connection that has ended, and the call's client is gone. The
		// watcher's read returns at once, and cancels the call.
		if sc.state.CompareAndSwap(callRunning, callWatched) {
			go sc.watchStream()
		}
	}
}

// stopAllReads is [serverConn.stop] for every connection, for Close and
// Shutdown to call before they shut the sessions down. s.mu must be held.
func (s *Server[In, Out]) stopAllReads() {
	for _, cs := range s.conns {
		cs.stop()
	}
}

// shedLog logs calls refused as overloaded, a line at most once a second
// rather than one per call: "transport: overloaded, calls shed" at Warn,
// with how many were shed since the last line and why the last was.
type shedLog struct {
	mu   sync.Mutex
	last time.Time // when a line was last logged
	n    int       // shed since
}

func (l *shedLog) note(log *slog.Logger, why string) {
	l.mu.Lock()
	l.n++
	now := time.Now()
	if now.Sub(l.last) < time.Second {
		l.mu.Unlock()
		return
	}
	n := l.n
	l.last, l.n = now, 0
	l.mu.Unlock()
	log.Warn("transport: overloaded, calls shed", "shed", n, "why", why)
}
