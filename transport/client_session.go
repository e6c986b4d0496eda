package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

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
		if c.stale(c.idle[n-1], time.Now()) {
			// The latest is the youngest: all are stale.
			c.dropIdle()
			c.mu.Unlock()
			return sess.OpenStream()
		}
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

// stale reports whether is has been idle for half the idle timeout
// ([WithIdleTimeout]) at now: the client closes it rather than send a
// request that might cross the server closing it.
func (c *Client[In, Out]) stale(is idleStream, now time.Time) bool {
	return c.cfg.idleTimeout > 0 && now.Sub(is.since) >= c.cfg.idleTimeout/2
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
	st    *yamux.Stream
	warm  bool      // it has not given back the large receive buffer of its last answer
	since time.Time // when its last call ended
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
		now := time.Now()
		c.idle = append(c.idle, idleStream{st: st, warm: warm, since: now})
		// The oldest first: close those idle too long.
		stale := 0
		for stale < len(c.idle) && c.stale(c.idle[stale], now) {
			if c.idle[stale].warm {
				c.warmIdle--
			}
			go c.idle[stale].st.Close() // a frame queued: never make the caller wait
			stale++
		}
		if stale > 0 {
			n := copy(c.idle, c.idle[stale:])
			clear(c.idle[n:])
			c.idle = c.idle[:n]
		}
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
		if c.sess != nil {
			// The session died (the connection was lost, or the server
			// closed it): say so once, not on every call that redials.
			c.cfg.logger.Warn("transport: connection lost", "addr", c.addr)
			c.lost = true
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
	if c.lost {
		c.lost = false
		c.cfg.logger.Info("transport: connection restored", "addr", c.addr)
	}
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
				return nil, 0, fmt.Errorf("TLS handshake: server closed the connection unanswered (busy, or does not speak TLS): %w", err)
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
	mine := wire.Hello{Version: wire.Version, ReqCodec: c.in.Name(), RespCodec: c.out.Name(), MaxMessage: uint32(c.cfg.maxMessage), Service: c.cfg.service}
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
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			if c.cfg.tlsConfig == nil {
				// What a server that requires TLS does to a plaintext
				// hello, and one refusing as many connections as it
				// will to any hello.
				return nil, 0, fmt.Errorf("handshake: server closed the connection unanswered (busy, or requires TLS): %w", err)
			}
			return nil, 0, fmt.Errorf("handshake: server closed the connection unanswered (busy?): %w", err)
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
	sess, err := yamux.Client(newCoalescer(conn, c.cfg.writeTimeout, clientMaxBuf, nil), c.cfg.yamuxConfig())
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return sess, int(theirs.MaxMessage), nil
}
