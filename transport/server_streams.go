package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// serveStream answers the calls of one stream, one after another, until the
// client closes it. An answer larger than peer.max is replaced by an
// error, and a request is asked for with a continue frame if its client
// asks first, or if it is large, sent whole and found no room, in which
// case its payload is dropped first (readRequest). streams counts the
// connection's streams.
//
// Each call runs on this goroutine. A call that lasts longer than
// watchAfter gets a watcher (see sweep), which waits for the stream's next
// byte: the end of the stream means the client gave up, and cancels the
// call; any data is the start of the client's next request, read once the
// current call has answered. A short call thus costs no goroutine and no
// timer.
func (s *Server[In, Out]) serveStream(sc *streamCall, peer peer, cs *serverConn) {
	defer s.streams.Done()
	defer s.reached(hookStreamEnded)
	defer cs.remove(sc)
	st := sc.st
	defer func() {
		// yamux v0.1.2 keeps a closed stream, and its receive buffer,
		// until its peer closes too or the close timeout passes: give the
		// buffer back now, so that streams a client leaves half-closed
		// cost little.
		st.Shrink()
		st.Close()
	}()
	log := s.cfg.logger // attributes are built only where something is logged

	for first := true; ; first = false {
		if first {
			st.SetReadDeadline(time.Now().Add(s.cfg.requestTimeout))
		}
		// The header is read into a small buffer of the stream's own
		// (sc.hdr): a request may wait for room in the server's budget
		// after it, and must hold no more than that meanwhile.
		if !sc.early {
			if err := sc.awaitRequest(s.epoch); err != nil {
				if errors.Is(err, errStreamIdle) {
					log.Debug("transport: idle stream closed", "remote", st.RemoteAddr(), "idle_timeout", s.cfg.idleTimeout)
					s.reached(hookIdleClosed)
					s.refuse(st, CodeStreamIdle, fmt.Sprintf("stream closed after %v without a request; a request crossing this answer was not read", s.cfg.idleTimeout), peer.max)
				} else if first {
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
		items, timeout, held, err := s.readRequest(sc, cs)
		if err != nil {
			s.release(cs, held)
			s.calls.Done()
			var refusal *RemoteError
			if errors.As(err, &refusal) {
				log.Warn("transport: request refused", "remote", st.RemoteAddr(), "err", refusal.Message)
				s.observeRefusal(st, refusal, sc.size)
				var stall *stallError
				if errors.As(err, &stall) {
					// The room is given back already; the rest of the
					// payload, if it comes, is read and dropped, so that a
					// client slow rather than hostile finishes its write
					// and reads why.
					s.refuseDraining(st, refusal.Code, refusal.Message, peer.max, stall.left, stall.end)
				} else {
					s.refuse(st, refusal.Code, refusal.Message, peer.max)
				}
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
		if sc.traced && s.cfg.propagator != nil && sc.trace.Valid() {
			ctx = s.cfg.propagator.Extract(ctx, TraceContext(sc.trace))
		}
		var code Code
		var wrote bool
		if o := s.cfg.observer; o != nil {
			w := newServeWork(len(items), sc.size)
			ctx = o.Start(ctx, w)
			code, wrote = s.runCall(ctx, items, held, peer.max, sc, cs, w)
			endServeWork(ctx, o, w)
		} else {
			code, wrote = s.runCall(ctx, items, held, peer.max, sc, cs, nil)
		}
		s.putItems(items)
		if sc.gone.Load() || !keepsStream(code) || !wrote {
			return // the client ended its side, the answer ends the stream, or it could not be written
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
// A stream whose reads were stopped (see [serverConn.stop]) waits for
// nothing. While it waits, the server's reaper may find it idle for the
// idle timeout and end the wait: it returns errStreamIdle then. epoch is
// the server's.
func (sc *streamCall) awaitRequest(epoch time.Time) error {
	st, hdr := sc.st, sc.hdr[:]
	if sc.stopped.Load() {
		return errReadsStopped
	}
	sc.idled.Store(false)
	sc.waiting.Store(int64(time.Since(epoch)))
	defer sc.waiting.Store(0)
	var err error
	if binary.LittleEndian.Uint32(hdr[1:]) <= shrinkAbove {
		_, err = io.ReadFull(st, hdr[:1])
	} else {
		st.SetReadDeadline(time.Now().Add(idleShrink))
		_, err = io.ReadFull(st, hdr[:1])
		if errors.Is(err, yamux.ErrTimeout) && !sc.stopped.Load() && !sc.idled.Load() {
			st.Shrink()
			st.SetReadDeadline(time.Time{})
			// The reaper sets idled before the deadline that ends the
			// wait: look again once the deadline is cleared.
			if !sc.idled.Load() {
				_, err = io.ReadFull(st, hdr[:1])
			}
		}
	}
	if err != nil && sc.idled.Load() && !sc.stopped.Load() {
		return errStreamIdle
	}
	return err
}

// errClientCancelled is the answer to a call whose client gave up on it.
var errClientCancelled = &clientCancelled{}

type clientCancelled struct{}

func (*clientCancelled) Error() string        { return "call cancelled by the client" }
func (*clientCancelled) Is(target error) bool { return target == context.Canceled }

// observeRefusal tells the server's observer, if it has one, of a request
// refused after its header was read: size is the payload it announced.
func (s *Server[In, Out]) observeRefusal(st *yamux.Stream, refusal *RemoteError, size int) {
	o := s.cfg.observer
	if o == nil {
		return
	}
	w := newServeWork(0, size)
	ctx := o.Start(context.Background(), w)
	w.Err = &RemoteError{Addr: st.RemoteAddr().String(), Code: refusal.Code, Message: refusal.Message}
	endServeWork(ctx, o, w)
}

// serveWorks recycles the Works of served calls: an observer keeps none
// past End.
var serveWorks = sync.Pool{New: func() any { return new(fanout.Work) }}

// newServeWork returns a WorkServe of a request of items and size bytes,
// started now.
func newServeWork(items, size int) *fanout.Work {
	w := serveWorks.Get().(*fanout.Work)
	*w = fanout.Work{Kind: fanout.WorkServe, Items: items, Bytes: size, Start: time.Now()}
	return w
}

// endServeWork tells o that w, whose Err is set, ended, and recycles w.
func endServeWork(ctx context.Context, o fanout.Observer, w *fanout.Work) {
	w.Duration = time.Since(w.Start)
	o.End(ctx, w)
	*w = fanout.Work{}
	serveWorks.Put(w)
}

// errStreamIdle ends a stream that carried no request for the idle timeout.
var errStreamIdle = errors.New("stream idle")

// runCall runs one call and writes its answer, then releases the held bytes
// of its request. It returns the answer's error code, 0 for results, and
// whether the answer was written: a stream whose client does not read its
// answer within the write timeout is closed.
//
// If w is not nil, runCall sets w.Err to how the call ended.
func (s *Server[In, Out]) runCall(ctx context.Context, items []In, held int64, peerMax int, sc *streamCall, cs *serverConn, w *fanout.Work) (code Code, wrote bool) {
	defer s.calls.Done()
	defer sc.cancel()
	defer s.release(cs, held)
	st := sc.st
	log := s.cfg.logger

	s.watch(sc) // gone is false: serveStream returns once it is set
	var out []Out
	var err error
	if least := minSize(s.out, len(items)); least > peerMax {
		// The answer cannot fit: refuse before the backend does the work.
		code, err = CodeTooLarge, fmt.Errorf("response refused before processing: %w: the answer to %d items takes at least %d bytes, the client accepts at most %d", ErrMessageTooLarge, len(items), least, peerMax)
	} else {
		out, code, err = s.process(ctx, items)
	}
	answer := out // handed back to a Recycler once encoded or discarded
	sc.unwatch()
	st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
	if sc.gone.Load() {
		out, code, err = nil, CodeCanceled, errClientCancelled
	}
	bufp := getBuf()
	defer putBuf(bufp)
	buf := (*bufp)[:0]
	if pe := partialOf(err); err == nil || pe != nil {
		kind := wire.KindResponse
		if pe != nil {
			kind = wire.KindPartial
		}
		buf = wire.AppendHeader(buf, kind)
		if pe != nil {
			buf, err = wire.AppendFailures(buf, failuresOf(pe), len(items), out != nil)
		}
		if err == nil && (pe == nil || out != nil) {
			buf, err = s.out.Append(buf, out)
		}
		if err != nil {
			log.Error("transport: encoding response", "remote", st.RemoteAddr(), "err", err)
			code, err = CodeInternal, fmt.Errorf("encode response: %w", err)
		} else if err = wire.FinishFrame(buf, 0, peerMax); err != nil {
			code, err = CodeTooLarge, fmt.Errorf("response refused: %w", err)
		}
	}
	if err != nil {
		buf = appendErrorFrame(buf[:0], code, err.Error(), peerMax)
	}
	*bufp = buf
	if w != nil {
		w.Err = err
	}
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
	_, err = st.Write(buf)
	if err != nil {
		log.Debug("transport: writing response", "remote", st.RemoteAddr(), "err", err)
		s.reached(hookUnwritten)
	}
	s.reached(hookAnswered)
	sc.unwatch()
	return code, err == nil
}

// readRequest reads the rest of a request whose first header byte is in
// hdr[0] and decodes it. A request whose client asks first (wire.FlagAsk)
// is asked for with a continue frame once the server's budget has room for
// it, and so is a large one sent whole that found no room, whose payload is
// dropped meanwhile. It returns the items, the time left before the
// caller's deadline (0 for none) and the bytes it took from the server's
// budget for the request, which the caller releases once the call is over,
// whatever the error. A request the server refuses is returned as a
// *RemoteError, the answer to send back; a stream that ended or timed out
// inside the request, as any other error.
func (s *Server[In, Out]) readRequest(sc *streamCall, cs *serverConn) (items []In, timeout time.Duration, held int64, err error) {
	st, hdr := sc.st, sc.hdr[:]
	defer st.SetReadDeadline(time.Time{})
	_, err = io.ReadFull(st, hdr[1:])
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	var k wire.Kind
	var n int
	if err == nil {
		k, n, err = wire.ParseHeader(hdr, maxMessageLimit)
	}
	sc.traced, sc.size = k == wire.KindTraced, n
	isRequest := k == wire.KindRequest || k == wire.KindTraced
	if err == nil && isRequest && n > s.maxRequest {
		err = fmt.Errorf("%w: %d bytes, the server accepts at most %d (its maximum message size, or a connection's share of its budget)", ErrMessageTooLarge, n, s.maxRequest)
	}
	// A frame that is not a request, or that is too short to be one, is
	// refused from its header: its payload is neither read nor held.
	if err == nil && (!isRequest || n < wire.RequestPrefixSize) {
		err = fmt.Errorf("%w: expected a request, got message kind %d of %d bytes", ErrProtocol, k, n)
	}
	var payload []byte
	sr := &sc.body
	asks := hdr[0]&wire.FlagAsk != 0 // the client waits for a continue frame
	end := time.Now().Add(s.cfg.requestTimeout)
	taken := false // room already taken for the request
	if err == nil && !asks && n > wire.ContinueAbove {
		// A large request sent whole is taken if there is room for it
		// now; otherwise its payload is dropped as it arrives, so that it
		// does not wait in the stream's buffers, and asked for again
		// once there is room (PROTOCOL.md).
		if held, taken = s.tryReserve(cs, n); !taken {
			s.reached(hookDropping)
			st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
			if _, err = st.Write(wire.WaitFrame); err == nil {
				*sr = stallReader{st: st, stall: s.cfg.stallTimeout, end: end}
				_, err = io.CopyN(io.Discard, sr, int64(n))
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				sr.st = nil
			}
			asks = true
		}
	}
	if err == nil && !taken {
		var waited bool
		held, waited, err = s.reserve(st, cs, n, asks)
		if waited {
			// The rest has the whole request timeout from now.
			end = time.Now().Add(s.cfg.requestTimeout)
		}
	}
	if err == nil && asks {
		// The client sends the payload only once told there is room for
		// it.
		st.SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
		_, err = st.Write(wire.ContinueFrame)
		// The payload has the whole request timeout from now.
		end = time.Now().Add(s.cfg.requestTimeout)
	}
	if err == nil {
		// The buffer is allocated as the payload arrives (a pooled one
		// may be large enough already): up to wire.ReadChunk first, and
		// the rest once those bytes have come, at once rather than step
		// by step. A client that announces a large request and sends
		// nothing costs nothing, and loses its room in the budget once it
		// has sent nothing for the stall timeout.
		*sr = stallReader{st: st, stall: s.cfg.stallTimeout, end: end}
		bufp := getBuf()
		defer putBuf(bufp)
		first := min(n, wire.ReadChunk)
		payload = slices.Grow((*bufp)[:0], first)[:first]
		_, err = io.ReadFull(sr, payload)
		if err == nil && n > first {
			payload = slices.Grow(payload, n-first)[:n]
			_, err = io.ReadFull(sr, payload[first:])
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		*bufp = payload
		sr.st = nil
	}
	switch {
	case errors.Is(err, errStalled):
		// A payload that stalled while it had room, or while it was
		// dropped for want of room.
		s.reached(hookStalled)
		msg := fmt.Sprintf("request refused, not processed: %v of %d bytes announced", err, n)
		if held > 0 {
			msg += "; its room in the budget is given to others"
		}
		return nil, 0, held, &stallError{
			RemoteError: RemoteError{Code: CodeOverloaded, Message: msg},
			left:        int64(n) - sr.got,
			end:         end,
		}
	case errors.Is(err, ErrMessageTooLarge):
		return nil, 0, held, &RemoteError{Code: CodeTooLarge, Message: "request refused: " + err.Error()}
	case errors.Is(err, ErrProtocol):
		return nil, 0, held, &RemoteError{Code: CodeBadRequest, Message: err.Error()}
	case err != nil:
		return nil, 0, held, err
	}
	body := payload[wire.RequestPrefixSize:]
	if sc.traced {
		if sc.trace, body, err = wire.ParseTrace(body); err != nil {
			return nil, 0, held, &RemoteError{Code: CodeBadRequest, Message: "request refused: " + err.Error()}
		}
	}
	items, err = s.in.Decode(s.getItems(), body)
	if err != nil {
		s.putItems(items)
		return nil, 0, held, &RemoteError{Code: CodeBadRequest, Message: "decode request: " + err.Error()}
	}
	return items, time.Duration(min(binary.LittleEndian.Uint64(payload), 1<<62)), held, nil
}

// stallError is the refusal of a request that stalled: the answer to send,
// and the bytes of its payload still to come, which the server reads and
// drops until end.
type stallError struct {
	RemoteError
	left int64
	end  time.Time
}

func (e *stallError) Unwrap() error { return &e.RemoteError }
