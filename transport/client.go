package transport

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
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
	if size := c.cfg.chunkItems; size > 0 && len(items) > size {
		return c.callChunks(ctx, items, size)
	}
	return c.call(ctx, items, make([]Out, 0, len(items)), nil)
}

// takeSlot counts a call in flight, unless the client has the maximum
// already; the caller gives the slot back with c.inFlight.Add(-1).
func (c *Client[In, Out]) takeSlot() bool {
	if c.inFlight.Add(1) > int64(c.cfg.maxCalls) {
		c.inFlight.Add(-1)
		return false
	}
	return true
}

// callChunks sends items in chunks of size items (see [Client.Process]).
// The caller's goroutine sends chunks one after another, and so do up to
// [WithChunks]' inFlight-1 goroutines more, each while it can take a slot
// of [WithMaxConcurrentCalls]: a chunked call never fails for want of a
// slot, it only has fewer chunks in flight. The slots its chunks hold are
// taken from other calls, which can find the limit reached meanwhile.
func (c *Client[In, Out]) callChunks(ctx context.Context, items []In, size int) ([]Out, error) {
	out := make([]Out, len(items))
	chunks := (len(items) + size - 1) / size
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next      atomic.Int64 // the next chunk to send
		delivered atomic.Bool  // a chunk's request may have reached the server
		failed    sync.Once
		err       error // the first failure, set by failed
		wg        sync.WaitGroup
	)
	send := func() {
		for ctx.Err() == nil {
			i := int(next.Add(1) - 1)
			if i >= chunks {
				return
			}
			lo, hi := i*size, min((i+1)*size, len(items))
			sent := false
			res, cerr := c.call(ctx, items[lo:hi], out[lo:lo:hi], &sent)
			if cerr == nil || sent && !undelivered(cerr) {
				delivered.Store(true)
			}
			if cerr != nil {
				failed.Do(func() { err = cerr; cancel() })
				return
			}
			if len(res) > 0 && &res[0] != &out[lo] {
				copy(out[lo:hi], res) // the codec decoded elsewhere
			}
		}
	}
	for range min(c.cfg.chunkCalls, chunks) - 1 {
		if !c.takeSlot() {
			break
		}
		wg.Go(func() {
			defer c.inFlight.Add(-1)
			send()
		})
	}
	send()
	wg.Wait()
	if err != nil && delivered.Load() && undelivered(err) {
		// The chunk that failed was not delivered, but others may have
		// been: the call as a whole is not safe to send again.
		return nil, fmt.Errorf("%w: a chunk of the call failed after others were sent: %v", fanout.ErrInterrupted, err)
	}
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the caller's context ended between two chunks
	}
	return out, nil
}

// undelivered reports whether err says that a request did not reach the
// server's backend, so that sending it again is safe.
func undelivered(err error) bool {
	return errors.Is(err, fanout.ErrUnavailable) || errors.Is(err, fanout.ErrOverloaded)
}

// call sends one request with items and decodes the answer into dst's
// spare capacity (a codec may decode elsewhere), which holds len(items)
// results. If sent is not nil, it is set once the request, or a large
// request's payload, is being written: until then the server cannot have
// processed it.
func (c *Client[In, Out]) call(ctx context.Context, items []In, dst []Out, sent *bool) ([]Out, error) {
	bufp := getBuf()
	owned := true // until roundTrip takes the buffer
	defer func() {
		if owned {
			putBuf(bufp)
		}
	}()
	buf := wire.AppendHeader((*bufp)[:0], wire.KindRequest)
	buf = append(buf, make([]byte, wire.RequestPrefixSize)...)
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
		return c.roundTrip(ctx, st, bufp, dst, len(items), sent)
	}
}

// maxIdleStreams bounds the streams a client keeps open between calls.
const maxIdleStreams = 256

// stream returns a stream of sess for a call: one left idle by an earlier
// call, or a new one. A session found closed gives no stream, idle or new,
// so that the call goes to a new session rather than fail on a stream of a
// dead one as if its request might have been sent.
func (c *Client[In, Out]) stream(sess *yamux.Session) (*yamux.Stream, error) {
	if sess.IsClosed() {
		return nil, yamux.ErrSessionShutdown
	}
	c.mu.Lock()
	if n := len(c.idle); n > 0 && c.sess == sess {
		is := c.idle[n-1]
		c.idle[n-1] = idleStream{}
		c.idle = c.idle[:n-1]
		if is.warm {
			c.warmIdle--
		}
		c.mu.Unlock()
		return is.st, nil
	}
	c.mu.Unlock()
	return sess.OpenStream()
}

// maxWarmIdle bounds the idle streams that keep the large receive buffer of
// their last answer. yamux keeps a stream's receive buffer, up to about two
// stream windows, until Shrink gives it back; a stream given back its buffer
// grows it afresh, zeroed, for its next large answer. The chunks of a large
// call follow one another on the streams released last, so keeping a few
// warm saves that for every chunk, and costs at most maxWarmIdle times two
// windows (4 MiB at yamux's default window) per client.
const maxWarmIdle = 2 * DefaultChunksInFlight

// An idleStream is a stream between calls.
type idleStream struct {
	st   *yamux.Stream
	warm bool // it has not given back the large receive buffer of its last answer
}

// release keeps st, whose call is over, for another call, unless its
// session was replaced or enough streams are idle already. warm says that
// its last answer was large, so that its receive buffer is: it is kept if
// fewer than maxWarmIdle warm streams are idle, and given back otherwise.
func (c *Client[In, Out]) release(st *yamux.Stream, warm bool) {
	c.mu.Lock()
	if !c.closed && c.sess == st.Session() && len(c.idle) < min(maxIdleStreams, c.cfg.maxCalls) {
		if warm && c.warmIdle >= maxWarmIdle {
			st.Shrink()
			warm = false
		}
		if warm {
			c.warmIdle++
		}
		c.idle = append(c.idle, idleStream{st: st, warm: warm})
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	st.Close()
}

// dropIdle closes the idle streams, once their session is no longer the
// current one. c.mu must be held.
func (c *Client[In, Out]) dropIdle() {
	idle := c.idle
	c.idle, c.warmIdle = nil, 0
	if len(idle) > 0 {
		// Closing queues a frame each, which can wait on a stalled
		// connection: never make a caller wait for it.
		go func() {
			for _, is := range idle {
				is.st.Close()
			}
		}()
	}
}

// roundTrip sends the request in *reqp on st and reads the answer. It owns
// reqp and returns it to the pool once the request is written. It sets
// *sent, if sent is not nil, once it starts to write what the server could
// process: a request written whole, or a large request's payload.
//
// A request of up to continueAbove bytes of payload is written whole. A
// larger one is written in two steps: its header, and its payload once the
// server has answered with a continue frame, which it sends once its budget
// has room for the payload (PROTOCOL.md). A request the server may leave
// unread (refused from its header) is small enough to fit the stream's
// window, and a large payload goes only once the server reads it, so the
// write does not wait for a peer that will not read; if the caller gives
// up meanwhile, a write waiting for the stream's window ends at once.
func (c *Client[In, Out]) roundTrip(ctx context.Context, st *yamux.Stream, reqp *[]byte, dst []Out, n int, sent *bool) ([]Out, error) {
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
	req := *reqp
	if len(req)-wire.HeaderSize > wire.ContinueAbove {
		// The payload waits for the server's go-ahead: its answer is a
		// continue frame, or a refusal.
		st.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
		_, err := st.Write(req[:wire.HeaderSize])
		if err != nil {
			putBuf(reqp)
			return nil, c.unsentErr(ctx, st, err)
		}
		k, payload, err := wire.ReadFrame(st, c.cfg.maxMessage, (*respp)[:0])
		*respp = payload
		if err != nil || k != wire.KindContinue {
			putBuf(reqp)
			if err != nil {
				return nil, c.unsentErr(ctx, st, err)
			}
			if k == wire.KindResponse {
				return nil, fmt.Errorf("%w: a response before the request was sent", ErrProtocol)
			}
			// A refusal: the server, which has not read the payload, does
			// not keep the stream.
			var out []Out
			out, ok, _, err = c.answer(st, k, payload, dst, n)
			return out, err
		}
		if len(payload) != 0 {
			putBuf(reqp)
			return nil, fmt.Errorf("%w: a continue frame of %d bytes", ErrProtocol, len(payload))
		}
		req = req[wire.HeaderSize:]
	}
	// The timeout is what is left of the caller's deadline when the
	// payload goes.
	var timeout uint64
	if d, ok := ctx.Deadline(); ok {
		timeout = uint64(max(time.Until(d), 1))
	}
	binary.LittleEndian.PutUint64((*reqp)[wire.HeaderSize:], timeout)
	if sent != nil {
		*sent = true
	}
	st.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
	_, err := st.Write(req)
	putBuf(reqp)
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

// retire forgets sess, which takes no new calls, but lets the calls already
// on it finish. Retired sessions are closed once they carry no calls, or by
// Close.
func (c *Client[In, Out]) retire(sess *yamux.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == sess {
		c.sess = nil
		c.dropIdle()
	}
	if c.closed || sess.IsClosed() {
		sess.Close()
		return
	}
	if c.draining == nil {
		c.draining = make(map[*yamux.Session]struct{})
	}
	c.draining[sess] = struct{}{}
	for old := range c.draining {
		if old.IsClosed() || old.NumStreams() == 0 {
			old.Close()
			delete(c.draining, old)
		}
	}
}

// session returns a live session, dialling if there is none.
func (c *Client[In, Out]) session(ctx context.Context) (*yamux.Session, int, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, 0, ErrClosed
		case c.sess != nil && !c.sess.IsClosed():
			sess, peerMax := c.sess, c.peerMax
			c.mu.Unlock()
			return sess, peerMax, nil
		case c.dialing != nil:
			ch := c.dialing
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
		case time.Now().Before(c.retryAt):
			err, wait := c.dialErr, time.Until(c.retryAt)
			c.mu.Unlock()
			return nil, 0, fmt.Errorf("%w (next attempt in %v)", err, wait.Round(time.Millisecond))
		}
		c.sess = nil
		c.dropIdle()
		ch := make(chan struct{})
		c.dialing = ch
		c.dials.Add(1)
		c.mu.Unlock()
		go c.connect(ch)
	}
}

// connect dials and handshakes on its own goroutine, so that callers waiting
// for it can give up on their own contexts without failing the dial for the
// others.
func (c *Client[In, Out]) connect(done chan struct{}) {
	defer c.dials.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.dialTimeout)
	defer cancel()
	sess, peerMax, err := c.handshake(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(done)
	c.dialing = nil
	if err != nil {
		c.dialErr = err
		c.backoff = min(max(2*c.backoff, c.cfg.backoffMin), c.cfg.backoffMax)
		jitter := time.Duration(rand.Int64N(int64(c.backoff)/5 + 1))
		c.retryAt = time.Now().Add(c.backoff - jitter)
		c.cfg.logger.Debug("transport: dial failed", "addr", c.addr, "err", err, "retry_in", c.backoff-jitter)
		return
	}
	if c.closed {
		sess.Close()
		return
	}
	c.sess, c.peerMax = sess, peerMax
	c.dialErr, c.backoff, c.retryAt = nil, 0, time.Time{}
}

// handshake opens a connection, agrees on version and codecs, and starts the
// yamux session.
func (c *Client[In, Out]) handshake(ctx context.Context) (*yamux.Session, int, error) {
	conn, err := c.cfg.dial(ctx, c.addr)
	if err != nil {
		return nil, 0, err
	}
	if c.cfg.tlsConfig != nil {
		tc := tls.Client(conn, c.cfg.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return nil, 0, fmt.Errorf("TLS handshake: server closed the connection (does it speak TLS?): %w", err)
			}
			return nil, 0, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	// Bound the handshake by ctx, even if the server never answers.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	mine := wire.Hello{Version: wire.Version, ReqCodec: c.in.Name(), RespCodec: c.out.Name(), MaxMessage: uint32(c.cfg.maxMessage)}
	if _, err := conn.Write(wire.AppendHello(nil, mine)); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("handshake: %w", err)
	}
	theirs, status, msg, err := wire.ReadReply(conn)
	if err != nil {
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, 0, fmt.Errorf("handshake: no answer from server: %w", err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if c.cfg.tlsConfig == nil {
				// What a server that requires TLS does to a plaintext hello.
				return nil, 0, fmt.Errorf("handshake: server closed the connection (does it require TLS?): %w", err)
			}
			return nil, 0, fmt.Errorf("handshake: server closed the connection: %w", err)
		}
		return nil, 0, fmt.Errorf("handshake: %w", err)
	}
	switch status {
	case wire.StatusOK:
	case wire.StatusBusy:
		conn.Close()
		return nil, 0, fmt.Errorf("handshake: connection refused: %s", msg)
	default:
		conn.Close()
		return nil, 0, fmt.Errorf("%w by server: %s", ErrHandshake, msg)
	}
	if reason := wire.CheckHello(theirs, mine); reason != "" {
		conn.Close()
		return nil, 0, fmt.Errorf("%w: %s", ErrHandshake, reason)
	}
	if !stop() {
		conn.Close()
		return nil, 0, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	sess, err := yamux.Client(newCoalescer(conn, c.cfg.writeTimeout), c.cfg.yamuxConfig())
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return sess, int(theirs.MaxMessage), nil
}
