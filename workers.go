package fanout

import (
	"sync"
	"time"
)

// workers runs functions on goroutines it keeps between calls.
//
// A router calls its routes concurrently. A new goroutine for each route
// would start with a small stack, and a route's call through a transport
// client goes deep enough to grow it twice, each time copying it (see
// PERFORMANCE.md, section 5). A worker that has run one route's call keeps
// its grown stack for the next.
//
// A worker whose function returns waits for another one, most recently idle
// first, for at most two idle periods: a sweep every idle period ends the
// workers that were already idle at the previous one. So a router that is
// no longer called has no goroutines left a fraction of a second later, and
// at most maxIdleWorkers wait at any time. The zero value is ready to use.
type workers struct {
	mu      sync.Mutex
	idle    []*worker   // the most recently idle last
	tick    uint64      // sweeps so far
	sweeper *time.Timer // armed while a worker is idle
	armed   bool
	period  time.Duration // the idle period; workerIdle if zero
	started int           // goroutines started, for tests
	turned  int           // workers that ended at once, not parked: enough were idle; for tests
}

type worker struct {
	work   chan func() // buffered: run never waits; nil tells the worker to end
	idleAt uint64      // the tick at which it last became idle
}

// workerIdle is how long, at least, an idle worker waits for another
// function before it ends.
const workerIdle = 100 * time.Millisecond

// maxIdleWorkers bounds the workers that wait for a function.
const maxIdleWorkers = 256

// run calls f on an idle worker, or on a new one.
func (ws *workers) run(f func()) {
	ws.mu.Lock()
	if n := len(ws.idle); n > 0 {
		w := ws.idle[n-1]
		ws.idle[n-1] = nil
		ws.idle = ws.idle[:n-1]
		ws.mu.Unlock()
		w.work <- f
		return
	}
	ws.started++
	ws.mu.Unlock()
	w := &worker{work: make(chan func(), 1)}
	go ws.loop(w, f)
}

func (ws *workers) loop(w *worker, f func()) {
	for f != nil {
		f()
		f = nil // what f refers to is not kept while the worker waits
		if !ws.park(w) {
			return
		}
		f = <-w.work
	}
}

// park puts w on the idle list and reports whether it should wait for
// work, which it should not when enough workers wait already.
func (ws *workers) park(w *worker) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if len(ws.idle) >= maxIdleWorkers {
		ws.turned++
		return false
	}
	w.idleAt = ws.tick
	ws.idle = append(ws.idle, w)
	if !ws.armed {
		ws.armed = true
		if ws.sweeper == nil {
			ws.sweeper = time.AfterFunc(ws.idlePeriod(), ws.sweep)
		} else {
			ws.sweeper.Reset(ws.idlePeriod())
		}
	}
	return true
}

// sweep ends the workers that have been idle since before the previous
// sweep, and comes again while any worker is idle.
func (ws *workers) sweep() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	// Workers become idle in tick order, so the ones to end come first.
	n := 0
	for n < len(ws.idle) && ws.idle[n].idleAt < ws.tick {
		ws.idle[n].work <- nil
		n++
	}
	ws.idle = append(ws.idle[:0], ws.idle[n:]...)
	clear(ws.idle[len(ws.idle) : len(ws.idle)+n])
	ws.tick++
	ws.armed = len(ws.idle) > 0
	if ws.armed {
		ws.sweeper.Reset(ws.idlePeriod())
	}
}

func (ws *workers) idlePeriod() time.Duration {
	if ws.period > 0 {
		return ws.period
	}
	return workerIdle
}
