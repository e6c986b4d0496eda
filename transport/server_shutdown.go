package transport

import (
	"context"

	"github.com/hashicorp/yamux"
)

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
		for _, cs := range s.conns {
			if cs.sess != nil {
				sessions = append(sessions, cs.sess)
			}
		}
		s.stopAllReads() // the streams wait for requests only
		s.mu.Unlock()
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
	for _, cs := range s.conns {
		if cs.sess != nil {
			cs.sess.Close()
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
