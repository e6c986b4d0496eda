package transport

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// What the tests of package transport_test reach inside the package: the
// server's hook events (hooks.go), which tests of both packages wait for
// rather than sleep until a state has probably been reached.

// Event is a point of a server's work that tests wait for.
type Event = hookEvent

// The events a server reports; see hooks.go.
const (
	EventWaitingForRoom = hookWaitingForRoom
	EventWatching       = hookWatching
	EventAnswered       = hookAnswered
	EventStreamEnded    = hookStreamEnded
	EventConnEnded      = hookConnEnded
	EventSweepStarted   = hookSweepStarted
	EventSweepEnded     = hookSweepEnded
	EventUnwritten      = hookUnwritten
	EventStalled        = hookStalled
	EventIdleClosed     = hookIdleClosed
	EventDropping       = hookDropping
)

func (ev hookEvent) String() string {
	names := [numHookEvents]string{"waiting for room", "watching", "answered", "stream ended", "connection ended", "sweep started", "sweep ended", "answer unwritten", "request stalled", "idle stream closed", "dropping a payload"}
	if ev < numHookEvents {
		return names[ev]
	}
	return fmt.Sprintf("event %d", uint8(ev))
}

// eventGuard bounds a wait for an event: a hang guard, not a speed check.
const eventGuard = 30 * time.Second

// Events counts the events of a server, for a test to wait for them. It
// never makes the server wait.
type Events struct {
	mu      sync.Mutex
	counts  [numHookEvents]int
	changed chan struct{} // closed and replaced at every event
}

// WatchEvents makes s report its events to the Events it returns. Call it
// before s serves.
func WatchEvents[In, Out any](s *Server[In, Out]) *Events {
	e := &Events{changed: make(chan struct{})}
	s.hook = e.record
	return e
}

func (e *Events) record(ev hookEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[ev]++
	close(e.changed)
	e.changed = make(chan struct{})
}

// Count returns how many times ev has happened so far.
func (e *Events) Count(ev Event) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[ev]
}

// Await waits until ev has happened n times in all. It fails t if that
// takes longer than a generous hang guard. Call it from the test's
// goroutine.
func (e *Events) Await(t testing.TB, ev Event, n int) {
	t.Helper()
	guard := time.NewTimer(eventGuard)
	defer guard.Stop()
	for {
		e.mu.Lock()
		got, changed := e.counts[ev], e.changed
		e.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("the server reached %q %d times, not %d, in %v", ev, got, n, eventGuard)
		}
	}
}

// SessionDone returns a channel closed once the session c has now shuts
// down; closed already if c has none.
func SessionDone[In, Out any](c *Client[In, Out]) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		done := make(chan struct{})
		close(done)
		return done
	}
	return c.sess.CloseChan()
}

// WithRefuseTimeout sets how long a server refusing a connection past its
// handshake slots waits for the hello, so that a test can hold refusals.
func WithRefuseTimeout(d time.Duration) ServerOption {
	return serverOption(func(c *config) { c.refuseTimeout = d })
}

// WithControlFrameLimit sets a server's bound on the frames without a body
// other than pings, a second and at once, in place of the one it derives
// from its stream limit.
func WithControlFrameLimit(n int) ServerOption {
	return serverOption(func(c *config) { c.controlFrames = n })
}
