package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// reserve takes size bytes, a request's payload, from the connection's
// share of the server's budget and then from the budget itself (see
// [WithMaxPendingBytes]), waiting for room if need be, and returns the
// bytes taken. A connection holds at most its share at once, so that one
// client, however many streams it opens, leaves the rest of the budget to
// the others; the server accepts no request larger than the share
// (maxRequest). The wait does not count against the request timeout: the
// client is not the one who is slow. With watch, for a request whose client
// sends nothing more until the continue frame (asking first, or dropped),
// the end of its stream during the wait means it gave up, and ends the
// wait. waited reports whether the request had to wait.
func (s *Server[In, Out]) reserve(st *yamux.Stream, cs *serverConn, size int, watch bool) (held int64, waited bool, err error) {
	if held, ok := s.tryReserve(cs, size); ok { // always, with no budget
		return held, false, nil
	}
	n := int64(size)
	// The stream's receive buffer from its last request is not needed
	// while it waits.
	st.Shrink()
	st.SetReadDeadline(time.Time{})
	ctx, stop := s.ctx, func() error { return nil }
	if watch {
		ctx, stop = watchWait(s.ctx, st)
	}
	s.reached(hookWaitingForRoom)
	err = cs.share.Acquire(ctx, n)
	if err == nil {
		if err = s.pending.Acquire(ctx, n); err != nil {
			cs.share.Release(n)
		}
	}
	if gone := stop(); gone != nil {
		if err == nil {
			s.pending.Release(n)
			cs.share.Release(n)
		}
		return 0, true, gone
	}
	if err != nil {
		return 0, true, fmt.Errorf("waiting for memory for a request of %d bytes: %w", n, err)
	}
	return n, true, nil
}

// tryReserve takes size bytes as reserve does if the connection's share
// and the budget have room for them now, without waiting. ok reports
// whether it did (always, with no budget).
func (s *Server[In, Out]) tryReserve(cs *serverConn, size int) (held int64, ok bool) {
	if s.pending == nil {
		return 0, true
	}
	n := int64(size)
	if cs.share.TryAcquire(n) {
		if s.pending.TryAcquire(n) {
			return n, true
		}
		cs.share.Release(n)
	}
	return 0, false
}

// watchWait watches st while its request waits for room, until stop
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

// release gives n bytes of cs's requests back to the server's budget and
// to cs's share.
func (s *Server[In, Out]) release(cs *serverConn, n int64) {
	if n > 0 {
		s.pending.Release(n)
		cs.share.Release(n)
	}
}

// stallReader reads a request's payload from its stream: each read must
// bring bytes within stall, and all of them must arrive by end (the
// request timeout). A client that has been given room for its payload and
// sends nothing more loses the room after stall, well before the request
// timeout.
type stallReader struct {
	st    *yamux.Stream
	stall time.Duration
	end   time.Time
	got   int64 // bytes read
}

func (r *stallReader) Read(p []byte) (int, error) {
	now := time.Now()
	dl := r.end
	if t := now.Add(r.stall); r.stall > 0 && t.Before(dl) {
		dl = t
	}
	r.st.SetReadDeadline(dl)
	n, err := r.st.Read(p)
	r.got += int64(n)
	if n == 0 && errors.Is(err, yamux.ErrTimeout) && time.Now().Before(r.end) {
		err = fmt.Errorf("%w: no byte of the request's payload for %v", errStalled, r.stall)
	}
	return n, err
}

// errStalled ends a request whose client stopped sending it.
var errStalled = errors.New("request stalled")
