package transport

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

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
	hdr   [wire.HeaderSize]byte // the header of the request being read
	early bool                  // the watcher read hdr[0], the start of the next request
	peek  [1]byte
	state atomic.Int32  // callIdle, callRunning or callWatched
	since atomic.Int64  // when the call started, from the server's epoch
	done  chan struct{} // receives once watchStream has returned
	gone  atomic.Bool   // the client gave up on the call
	// stopped: the connection failed, and a read deadline in the past
	// ends the stream's reads (see serverConn.stop).
	stopped atomic.Bool
	// waiting: when the stream started to wait for its next request, from
	// the server's epoch, or 0 when it is not waiting; idled: the reaper
	// ended that wait, the stream having been idle for the idle timeout.
	waiting atomic.Int64
	idled   atomic.Bool
	body    stallReader // reads the payload of the request being read
	cancel  context.CancelFunc
	trace   wire.Trace // the trace context of the request read, if traced
	traced  bool
	size    int // the request's payload size, for the observer
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
	s.mu.Lock()
	if !s.sweeping.Load() && s.ctx.Err() == nil {
		s.sweeping.Store(true)
		s.sweeps.Add(1)
		go s.sweep()
	}
	s.mu.Unlock()
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
	s.reached(hookSweepStarted)
	defer s.reached(hookSweepEnded)
	tick := time.NewTicker(watchAfter)
	defer tick.Stop()
	for idle := 0; ; {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		if s.watchCalls() {
			idle = 0
		} else if idle++; idle >= sweepIdle {
			s.sweeping.Store(false)
			// A call that started before the store above may have seen
			// the sweeper running: look once more.
			if !s.watchCalls() {
				s.mu.Unlock()
				return
			}
			s.sweeping.Store(true)
			idle = 0
		}
		s.mu.Unlock()
	}
}

// watchCalls starts a watcher for each call that has run for watchAfter,
// and reports whether any call is running. s.mu must be held.
func (s *Server[In, Out]) watchCalls() (running bool) {
	now := int64(time.Since(s.epoch))
	for _, cs := range s.conns {
		if cs.watchCalls(now, s.hook) {
			running = true
		}
	}
	return running
}

// watchCalls is [Server.watchCalls] for the streams of one connection, now
// counted from the server's epoch; hook is the server's.
func (cs *serverConn) watchCalls(now int64, hook func(hookEvent)) (running bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for sc := range cs.streams {
		if sc.state.Load() == callIdle {
			continue
		}
		running = true
		if now-sc.since.Load() >= int64(watchAfter) && sc.state.CompareAndSwap(callRunning, callWatched) {
			if hook != nil {
				hook(hookWatching)
			}
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

// reap closes the streams idle for the idle timeout ([WithIdleTimeout]):
// every quarter of it, it ends the wait of each stream that has waited
// for its next request that long, which then answers [CodeStreamIdle] and
// closes. It returns once the server is closed.
func (s *Server[In, Out]) reap() {
	defer s.sweeps.Done()
	every := min(max(s.cfg.idleTimeout/4, time.Millisecond), 10*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		idle := int64(s.cfg.idleTimeout)
		now := int64(time.Since(s.epoch))
		s.mu.Lock()
		for _, cs := range s.conns {
			cs.mu.Lock()
			for sc := range cs.streams {
				if since := sc.waiting.Load(); since != 0 && now-since >= idle && !sc.idled.Load() {
					sc.idled.Store(true)
					sc.st.SetReadDeadline(time.Unix(1, 0))
				}
			}
			cs.mu.Unlock()
		}
		s.mu.Unlock()
	}
}
