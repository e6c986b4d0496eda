package transport

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// Client calls a remote [Server]. It is a [fanout.Backend], so it can be a
// route of a [fanout.Router] or used on its own.
//
// A Client holds at most one connection, with one yamux session on it; every
// call in flight has a stream of its own, so any number of goroutines can
// call at once and share the connection. A stream whose call ended with an
// answer (results, or a [RemoteError] with [CodeBackend], [CodeDeadline] or
// [CodeInternal]) and nothing after it is kept for a later call (up to 256
// idle streams); any other stream is closed. The connection is made on
// first use. When the
// session dies (the server went away, a keepalive failed), the next call
// dials again; after a failed dial, further attempts wait with capped
// exponential backoff (see [WithRedialBackoff]) and calls in between fail at
// once with the dial error.
//
// Errors name the server's address. An error the server reported is a
// [*RemoteError]; anything else is a local or transport failure.
type Client[In, Out any] struct {
	addr string
	in   Codec[In]
	out  Codec[Out]
	cfg  config

	inFlight atomic.Int64 // calls in flight, bounded by cfg.maxCalls
	askUntil atomic.Int64 // Unix nanoseconds: until then, large requests ask first (askFor)
	large    atomic.Int64 // payload bytes of the large requests in flight, whole or asking first

	ctx    context.Context // ends with Close; bounds dials
	cancel context.CancelFunc
	dials  sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sess     *yamux.Session
	draining map[*yamux.Session]struct{} // told to go away, finishing their calls
	peerMax  int                         // the server's maximum message size
	dialing  chan struct{}               // closed when the dial in progress ends
	idle     []idleStream                // streams of sess between calls, the latest last
	warmIdle int                         // of idle, those that keep a large receive buffer
	dialErr  error                       // the last dial's failure
	lost     bool                        // a session died, and no new one is up yet
	retryAt  time.Time                   // no dial before this after a failure
	backoff  time.Duration               // the last wait after a failure
}

var _ fanout.Backend[int64, int64] = (*Client[int64, int64])(nil)

// NewClient returns a client for the server at addr that sends items with in
// and reads results with out. It does not connect: the first call does.
// NewClient panics if a codec's name is longer than 255 bytes.
func NewClient[In, Out any](addr string, in Codec[In], out Codec[Out], opts ...ClientOption) *Client[In, Out] {
	checkCodecName(in.Name())
	checkCodecName(out.Name())
	cfg := newClientConfig(opts)
	if cfg.tlsConfig != nil && cfg.tlsConfig.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.tlsConfig.ServerName = host
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client[In, Out]{
		addr:   addr,
		in:     in,
		out:    out,
		cfg:    cfg,
		ctx:    ctx,
		cancel: cancel,
	}
}

// Dial is [NewClient] followed by a connection attempt: it returns an error,
// and no client, if the server cannot be reached within ctx or refuses the
// handshake.
func Dial[In, Out any](ctx context.Context, addr string, in Codec[In], out Codec[Out], opts ...ClientOption) (*Client[In, Out], error) {
	c := NewClient(addr, in, out, opts...)
	if _, _, err := c.session(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	return c, nil
}

// Addr returns the server's address.
func (c *Client[In, Out]) Addr() string { return c.addr }

// Close closes the connection, failing the calls in flight, and makes
// further calls fail with [ErrClosed]. It is idempotent and returns nil.
func (c *Client[In, Out]) Close() error {
	c.mu.Lock()
	c.closed = true
	c.idle, c.warmIdle = nil, 0 // closed with their session
	sessions := []*yamux.Session{c.sess}
	for sess := range c.draining {
		sessions = append(sessions, sess)
	}
	c.sess, c.draining = nil, nil
	c.mu.Unlock()
	c.cancel()
	for _, sess := range sessions {
		if sess != nil {
			sess.Close()
		}
	}
	c.dials.Wait()
	return nil
}

// Process sends items to the server and returns its results, one per item in
// the same order. The caller's deadline travels with the request and bounds
// the server's work; cancelling ctx abandons the call and cancels it on the
// server. An empty batch is a round trip too, which makes it a cheap probe
// of the server (see [fanout.WithProbe]).
//
// An error that does not come from the server wraps [fanout.ErrUnavailable]
// if the request was not sent (the server could not be reached or refused
// the connection, the client is waiting to redial, or the stream or
// connection failed while a large request waited for the server's room,
// before its payload was sent), [fanout.ErrInterrupted] if the connection
// failed once the request may have been sent, or [fanout.ErrOverloaded] if
// the client already had the maximum calls in flight.
//
// A call of more items than [WithChunks] allows is sent as several calls of
// at most that many items each, some of them in flight at once on streams of
// their own, so that the server works on the first while the others are on
// the way, and the results are decoded into one slice. The server's backend
// sees each chunk as a call of its own. If a chunk fails, the call fails with
// its error and the chunks still in flight are cancelled; if the chunk that
// failed was not delivered ([fanout.ErrUnavailable], [fanout.ErrOverloaded])
// but others may have been, the call's error wraps [fanout.ErrInterrupted]
// instead, since sending the call again would process those twice.
func (c *Client[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	out, err := c.process(ctx, items)
	if partialOf(err) != nil {
		return out, err // the server's backend answered some items
	}
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, fmt.Errorf("transport: call %s: %w", c.addr, err)
	}
	return out, nil
}

func (c *Client[In, Out]) process(ctx context.Context, items []In) ([]Out, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !c.takeSlot() {
		return nil, fmt.Errorf("%w: %d calls already in flight on this client", fanout.ErrOverloaded, c.cfg.maxCalls)
	}
	defer c.inFlight.Add(-1)
	if size := c.chunkSize(ctx, items); size > 0 && len(items) > size {
		return c.callChunks(ctx, items, size)
	}
	return c.call(ctx, items, make([]Out, 0, len(items)), nil)
}

// chunkSize returns the most items of a request of the call of items
// ([WithChunks]), 0 for no chunks: the configured size, or fewer where the
// codecs tell ([MinSizer]) that the request would exceed the server's
// maximum message size or the answer the client's.
func (c *Client[In, Out]) chunkSize(ctx context.Context, items []In) int {
	size := c.cfg.chunkItems
	if size <= 0 {
		return 0
	}
	if per := minSize(c.out, 1); per > 0 {
		size = min(size, max(c.cfg.maxMessage/per, 1))
	}
	if per := minSize(c.in, 1); per > 0 && minSize(c.in, len(items)) > wire.ContinueAbove {
		// Large enough that the server's maximum may matter: learn it.
		if _, peerMax, err := c.session(ctx); err == nil {
			prefix := wire.RequestPrefixSize
			if c.cfg.propagator != nil {
				prefix += wire.MaxTraceSize // room for a trace context
			}
			size = min(size, max((peerMax-prefix)/per, 1))
		}
	}
	return size
}

// traceOf returns the trace context the call of ctx carries, if the
// client has a propagator and ctx is traced.
func (c *Client[In, Out]) traceOf(ctx context.Context) (TraceContext, bool) {
	if c.cfg.propagator == nil {
		return TraceContext{}, false
	}
	return c.cfg.propagator.Inject(ctx)
}

// call sends one request with items and decodes the answer into dst's
// spare capacity (a codec may decode elsewhere), which holds len(items)
// results. If sent is not nil, it is set once the request, or a large
// request's payload, is being written: until then the server cannot have
// processed it. A request that crossed the server closing its idle stream
// ([CodeStreamIdle]) was not read, and is sent once more on another.
func (c *Client[In, Out]) call(ctx context.Context, items []In, dst []Out, sent *bool) ([]Out, error) {
	out, err := c.callOnce(ctx, items, dst, sent)
	if re, ok := err.(*RemoteError); ok && re.Code == CodeStreamIdle && ctx.Err() == nil {
		if sent != nil {
			*sent = false
		}
		out, err = c.callOnce(ctx, items, dst, sent)
	}
	if re, ok := err.(*RemoteError); ok && re.Code == CodeCanceled {
		// The server answered that the call was cancelled because this
		// client told it so: the cause is the caller's context, whose
		// error says why (its deadline, say), as when no answer came.
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
	}
	return out, err
}

func (c *Client[In, Out]) callOnce(ctx context.Context, items []In, dst []Out, sent *bool) ([]Out, error) {
	if least := minSize(c.out, len(items)); least > c.cfg.maxMessage {
		return nil, fmt.Errorf("%w: the answer to %d items takes at least %d bytes, this client accepts at most %d (not sent)", ErrMessageTooLarge, len(items), least, c.cfg.maxMessage)
	}
	bufp := getBuf()
	owned := true // until roundTrip takes the buffer
	defer func() {
		if owned {
			putBuf(bufp)
		}
	}()
	var buf []byte
	if tc, ok := c.traceOf(ctx); ok {
		buf = wire.AppendHeader((*bufp)[:0], wire.KindTraced)
		buf = append(buf, make([]byte, wire.RequestPrefixSize)...)
		buf = wire.AppendTrace(buf, (*wire.Trace)(&tc))
	} else {
		buf = wire.AppendHeader((*bufp)[:0], wire.KindRequest)
		buf = append(buf, make([]byte, wire.RequestPrefixSize)...)
	}
	buf, err := c.in.Append(buf, items)
	*bufp = buf
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}

	// A stream that could not be opened carried nothing, so a call whose
	// session turned out to be dead is safe to try once more on a new one.
	for attempt := 0; ; attempt++ {
		sess, peerMax, err := c.session(ctx)
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", fanout.ErrUnavailable, err)
		}
		if err := wire.FinishFrame(buf, 0, peerMax); err != nil {
			return nil, err
		}
		st, err := c.stream(sess)
		if err != nil {
			// The session is closed, told to go away or out of stream IDs:
			// let the calls on it finish, and use a new one.
			c.retire(sess)
			if attempt == 0 {
				continue
			}
			return nil, fmt.Errorf("%w: open stream: %w", fanout.ErrUnavailable, err)
		}
		owned = false
		return c.roundTrip(ctx, st, bufp, dst, len(items), sent, peerMax)
	}
}

// roundTrip sends the request in *reqp on st and reads the answer. It owns
// reqp and returns it to the pool. It sets *sent, if sent is not nil,
// while what the server could process is written or has been: a request
// written whole, or a payload the server asked for.
//
// A request of up to continueAbove bytes of payload is written whole: it
// fits the stream's window, so the write never waits for a server that
// leaves it unread (a refusal from its header). A larger one is written
// whole too (sendWhole), while the answer is read, unless a server was
// short of room a moment ago (askFor) or the large requests in flight (this
// one included) would add up to more than the server's maximum (peerMax, at
// most its share of its budget for one connection, which it would not have
// room for): then it is written in two steps, its header, and its payload
// once the server has answered with a continue frame, which it sends once
// its budget has room for the payload (PROTOCOL.md). If the caller gives
// up, a write waiting for the stream's window ends at once.
func (c *Client[In, Out]) roundTrip(ctx context.Context, st *yamux.Stream, reqp *[]byte, dst []Out, n int, sent *bool, peerMax int) ([]Out, error) {
	// Cancelling ctx unblocks the read and the write and half-closes the
	// stream, which the server takes as the signal to cancel the call.
	stop := context.AfterFunc(ctx, func() {
		st.SetReadDeadline(time.Now())
		st.SetWriteDeadline(time.Now())
		st.Close()
	})
	// After a complete answer that leaves the stream usable, the stream is
	// kept for another call; otherwise it is closed.
	reuse, ok, warm := false, false, false
	defer func() {
		switch {
		case !stop():
			// The caller gave up: the AfterFunc closed st.
		case reuse:
			c.release(st, warm)
		case ok:
			st.Close()
		default:
			// Closing queues a frame, which can wait as long as the write
			// timeout on a stalled connection: never make the caller wait.
			go st.Close()
		}
	}()

	respp := getBuf()
	defer putBuf(respp)
	reqHeld := true // until a request written whole gives its buffer back
	defer func() {
		if reqHeld {
			putBuf(reqp)
		}
	}()
	req := *reqp
	size := int64(len(req) - wire.HeaderSize)
	large := size > wire.ContinueAbove
	asks := large && time.Now().UnixNano() < c.askUntil.Load()
	if large {
		// Sent whole only within what the server takes from one
		// connection at once (its maximum is its share of its budget):
		// past that, the payload would wait, and be dropped.
		if c.large.Add(size) > int64(peerMax) {
			asks = true
		}
		defer c.large.Add(-size)
	}
	if asks {
		// The server is likely short of room: ask first, so that the
		// payload goes once, when there is room for it.
		req[0] |= wire.FlagAsk
		st.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
		if _, err := st.Write(req[:wire.HeaderSize]); err != nil {
			return nil, c.unsentErr(ctx, st, err)
		}
		k, payload, err := wire.ReadFrame(st, c.cfg.maxMessage, (*respp)[:0])
		*respp = payload
		if err != nil {
			return nil, c.unsentErr(ctx, st, err)
		}
		if k != wire.KindContinue {
			return c.refused(st, k, payload, dst, n, &ok)
		}
		if len(payload) != 0 {
			return nil, fmt.Errorf("%w: a continue frame of %d bytes", ErrProtocol, len(payload))
		}
		req = req[wire.HeaderSize:]
	}
	c.stamp(ctx, *reqp, sent)
	st.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
	if large && !asks {
		k, cut, err := c.sendWhole(ctx, st, reqp, respp, sent)
		if err != nil {
			return nil, err
		}
		var out []Out
		out, ok, reuse, err = c.answer(st, k, *respp, dst, n)
		reuse = reuse && !cut
		warm = len(*respp) > wire.ReadChunk
		return out, err
	}
	_, err := st.Write(req)
	putBuf(reqp) // written: the server takes it from here
	reqHeld = false
	if err != nil {
		return nil, c.streamErr(ctx, st, err)
	}
	k, payload, err := wire.ReadFrame(st, c.cfg.maxMessage, (*respp)[:0])
	*respp = payload
	if err != nil {
		return nil, c.streamErr(ctx, st, err)
	}
	var out []Out
	out, ok, reuse, err = c.answer(st, k, payload, dst, n)
	warm = len(payload) > wire.ReadChunk
	return out, err
}

// askFor is how long a client asks first ([wire.FlagAsk]) before sending
// large requests, after a server told it that it had no room for one sent
// whole: while a server is short of room, a payload sent whole would be
// sent twice.
const askFor = time.Second

// stamp sets the timeout of the request in req, the time left of the
// caller's deadline as the payload goes, and marks it sent: from now on,
// the server may process it.
func (c *Client[In, Out]) stamp(ctx context.Context, req []byte, sent *bool) {
	var timeout uint64
	if d, ok := ctx.Deadline(); ok {
		timeout = uint64(max(time.Until(d), 1))
	}
	binary.LittleEndian.PutUint64(req[wire.HeaderSize:], timeout)
	if sent != nil {
		*sent = true
	}
}

// refused makes the outcome of a frame of kind k that answered a request
// whose payload the server has not read: a refusal, or a protocol error.
// The server does not keep such a stream. complete is set as by answer.
func (c *Client[In, Out]) refused(st *yamux.Stream, k wire.Kind, payload []byte, dst []Out, n int, complete *bool) ([]Out, error) {
	if k != wire.KindError {
		return nil, fmt.Errorf("%w: a frame of kind %d before the request's payload was sent", ErrProtocol, k)
	}
	out, ok, _, err := c.answer(st, k, payload, dst, n)
	*complete = ok
	return out, err
}

// sendWhole writes the large request in *reqp whole on st, while it reads
// the server's first frame into *respp, and returns that frame's kind
// once the request is answered. The server either takes the payload (it
// has room) and answers, or refuses the request from its header and leaves
// the payload unread, which ends the write, or answers with a wait frame
// and drops the payload as it arrives: then sendWhole waits for the
// continue frame, sends the payload again and reads the answer. cut
// reports that the write was ended before all of it went, so that st is
// not fit for another call.
func (c *Client[In, Out]) sendWhole(ctx context.Context, st *yamux.Stream, reqp, respp *[]byte, sent *bool) (k wire.Kind, cut bool, err error) {
	done := make(chan error, 1)
	go func() {
		_, err := st.Write(*reqp)
		if err != nil {
			st.SetReadDeadline(time.Now()) // the read below waits for nothing more
		}
		done <- err
	}()
	k, payload, err := wire.ReadFrame(st, c.cfg.maxMessage, (*respp)[:0])
	*respp = payload
	if err != nil || k != wire.KindWait || len(payload) != 0 {
		// An answer, or a refusal from the request's header: what is not
		// written yet will not be read.
		st.SetWriteDeadline(time.Now())
		werr := <-done
		switch {
		case err != nil:
			return 0, true, c.streamErr(ctx, st, cmp.Or(werr, err))
		case k == wire.KindWait:
			return 0, true, fmt.Errorf("%w: a wait frame of %d bytes", ErrProtocol, len(payload))
		case werr != nil && k != wire.KindError:
			return 0, true, fmt.Errorf("%w: an answer of kind %d before the request was sent", ErrProtocol, k)
		}
		return k, werr != nil, nil
	}
	// No room: the server reads the payload and drops it, then asks for
	// it again. Until then it cannot have processed the request.
	werr := <-done
	if sent != nil {
		*sent = false
	}
	c.askUntil.Store(time.Now().Add(askFor).UnixNano())
	if werr != nil {
		return 0, true, c.unsentErr(ctx, st, werr)
	}
	k, payload, err = wire.ReadFrame(st, c.cfg.maxMessage, (*respp)[:0])
	*respp = payload
	switch {
	case err != nil:
		return 0, true, c.unsentErr(ctx, st, err)
	case k == wire.KindError:
		return k, false, nil // a refusal: the server does not keep the stream
	case k != wire.KindContinue:
		return 0, true, fmt.Errorf("%w: a frame of kind %d after a wait frame", ErrProtocol, k)
	case len(payload) != 0:
		return 0, true, fmt.Errorf("%w: a continue frame of %d bytes", ErrProtocol, len(payload))
	}
	c.stamp(ctx, *reqp, sent)
	st.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
	if _, err := st.Write((*reqp)[wire.HeaderSize:]); err != nil {
		return 0, true, c.streamErr(ctx, st, err)
	}
	k, payload, err = wire.ReadFrame(st, c.cfg.maxMessage, (*respp)[:0])
	*respp = payload
	if err != nil {
		return 0, true, c.streamErr(ctx, st, err)
	}
	return k, false, nil
}

// answer makes the outcome of a call of n items of the frame of kind k
// and payload that answered it on st, decoding results into dst. complete
// reports that the answer is well formed, and reuse that st is fit for
// another call.
func (c *Client[In, Out]) answer(st *yamux.Stream, k wire.Kind, payload []byte, dst []Out, n int) (out []Out, complete, reuse bool, err error) {
	switch k {
	case wire.KindResponse:
		out, err := c.out.Decode(dst, payload)
		if err != nil {
			return nil, false, false, fmt.Errorf("%w: decode response: %v", ErrProtocol, err)
		}
		if len(out) != n {
			return nil, false, false, fmt.Errorf("%w: %d results for %d items", ErrProtocol, len(out), n)
		}
		return out, true, quiet(st, payload[:1]), nil
	case wire.KindPartial:
		fs, answered, rest, err := wire.ParseFailures(payload, n)
		if err != nil {
			return nil, false, false, err
		}
		if answered {
			if out, err = c.out.Decode(dst, rest); err != nil {
				return nil, false, false, fmt.Errorf("%w: decode partial response: %v", ErrProtocol, err)
			}
			if len(out) != n {
				return nil, false, false, fmt.Errorf("%w: %d results for %d items in a partial response", ErrProtocol, len(out), n)
			}
		}
		return out, true, quiet(st, payload[:1]), partialError(c.addr, fs)
	case wire.KindError:
		code, msg, err := parseError(payload)
		if err != nil {
			return nil, false, false, err
		}
		if code == CodeUnavailable {
			// The server is shutting down: calls go to a new connection.
			c.retire(st.Session())
		}
		// A server that keeps the stream after this code has read the whole
		// request.
		complete = keepsStream(code)
		if complete {
			reuse = quiet(st, payload[:1])
		}
		return nil, complete, reuse, &RemoteError{Addr: c.addr, Code: code, Message: msg}
	}
	return nil, false, false, fmt.Errorf("%w: expected a response, got message kind %d", ErrProtocol, k)
}

// quiet reports whether st, whose answer has been read, is fit for another
// call: the server sent nothing after its answer and did not close the
// stream. (A server that breaks the protocol that way must not have its
// stray bytes taken for the answer to the next call.) scratch is a byte of
// buffer to read into.
func quiet(st *yamux.Stream, scratch []byte) bool {
	st.SetReadDeadline(time.Unix(1, 0)) // a read that does not wait
	n, err := st.Read(scratch)
	st.SetReadDeadline(time.Time{})
	return n == 0 && errors.Is(err, yamux.ErrTimeout)
}

// streamErr explains a failed read or write: the caller's context ended, the
// session died, or the stream failed. Once a stream is open, its request may
// have reached the server, so a failure is an interruption. (That includes
// a stream reset: yamux resets a stream it refuses, but also one whose
// answer was left unread for the whole request timeout.)
func (c *Client[In, Out]) streamErr(ctx context.Context, st *yamux.Stream, err error) error {
	return c.failure(ctx, st, err, fanout.ErrInterrupted)
}

// unsentErr explains a failure before the server asked for a large
// request's payload: the request cannot have been processed, so sending it
// again is safe.
func (c *Client[In, Out]) unsentErr(ctx context.Context, st *yamux.Stream, err error) error {
	return c.failure(ctx, st, fmt.Errorf("before the request's payload was sent: %w", err), fanout.ErrUnavailable)
}

// failure is streamErr and unsentErr, with kind the error that says
// whether the request may have been processed.
func (c *Client[In, Out]) failure(ctx context.Context, st *yamux.Stream, err, kind error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	switch {
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrMessageTooLarge):
		return err
	case st.Session().IsClosed():
		c.retire(st.Session())
		return fmt.Errorf("%w: connection lost: %w", kind, err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: server closed the stream without an answer: %w", kind, err)
	}
	return fmt.Errorf("%w: %w", kind, err)
}
