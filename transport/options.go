package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// A ServerOption configures a [Server], and a ClientOption a [Client].
// Each option's comment states its default. An option that concerns both
// sides is an [Option], which is both; one that concerns one side only is
// of that side's type alone, so that handing it to the other side does not
// compile.
type (
	ServerOption interface{ applyServer(*config) }
	ClientOption interface{ applyClient(*config) }
)

// Option configures either side: it is both a [ServerOption] and a
// [ClientOption].
type Option interface {
	ServerOption
	ClientOption
}

type (
	bothOption   func(*config)
	serverOption func(*config)
	clientOption func(*config)
)

func (o bothOption) applyServer(c *config)   { o(c) }
func (o bothOption) applyClient(c *config)   { o(c) }
func (o serverOption) applyServer(c *config) { o(c) }
func (o clientOption) applyClient(c *config) { o(c) }

type config struct {
	logger           *slog.Logger
	maxMessage       int
	handshakeTimeout time.Duration
	requestTimeout   time.Duration
	writeTimeout     time.Duration
	keepAlive        time.Duration
	dialTimeout      time.Duration
	backoffMin       time.Duration
	backoffMax       time.Duration
	maxCalls         int
	maxConns         int
	maxHandshakes    int
	hostHandshakes   int
	refuseTimeout    time.Duration // not an option: tests set it
	maxPending       int64
	chunkItems       int
	chunkCalls       int
	tlsConfig        *tls.Config
	dial             func(ctx context.Context, addr string) (net.Conn, error)
}

// Defaults of the options.
const (
	DefaultMaxMessageSize   = 16 << 20
	DefaultHandshakeTimeout = 3 * time.Second
	DefaultRequestTimeout   = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultKeepAlive        = 15 * time.Second
	DefaultDialTimeout      = 5 * time.Second
	DefaultBackoffMin       = 50 * time.Millisecond
	DefaultBackoffMax       = time.Second
	DefaultMaxCalls         = 1024
	DefaultMaxConnections   = 1024
	DefaultMaxHandshakes    = 128
	DefaultMaxPendingBytes  = 16 << 20
	DefaultChunkItems       = 131072
	DefaultChunksInFlight   = 4

	DefaultMaxHandshakesPerHost = 8
	// DefaultClientHandshakeTimeout is a client's default for
	// [WithHandshakeTimeout], which bounds there only how long a new stream
	// waits for the server's acknowledgement.
	DefaultClientHandshakeTimeout = 10 * time.Second
)

// maxMessageLimit is the largest size a frame's 4-byte length can state, or
// the largest int on 32-bit platforms.
const maxMessageLimit = min(math.MaxUint32, math.MaxInt)

func newServerConfig(opts []ServerOption) config {
	c := defaultConfig()
	for _, opt := range opts {
		opt.applyServer(&c)
	}
	return c
}

func newClientConfig(opts []ClientOption) config {
	c := defaultConfig()
	c.handshakeTimeout = DefaultClientHandshakeTimeout
	for _, opt := range opts {
		opt.applyClient(&c)
	}
	if c.dial == nil {
		d := net.Dialer{KeepAlive: c.keepAlive}
		c.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return c
}

func defaultConfig() config {
	return config{
		logger:           slog.Default(),
		maxMessage:       DefaultMaxMessageSize,
		handshakeTimeout: DefaultHandshakeTimeout,
		requestTimeout:   DefaultRequestTimeout,
		writeTimeout:     DefaultWriteTimeout,
		keepAlive:        DefaultKeepAlive,
		dialTimeout:      DefaultDialTimeout,
		backoffMin:       DefaultBackoffMin,
		backoffMax:       DefaultBackoffMax,
		maxCalls:         DefaultMaxCalls,
		maxConns:         DefaultMaxConnections,
		maxHandshakes:    DefaultMaxHandshakes,
		hostHandshakes:   DefaultMaxHandshakesPerHost,
		refuseTimeout:    defaultRefuseTimeout,
		maxPending:       DefaultMaxPendingBytes,
		chunkItems:       DefaultChunkItems,
		chunkCalls:       DefaultChunksInFlight,
	}
}

// WithLogger sets the logger for the transport and for the yamux sessions
// under it (yamux's own messages are logged at Warn or Error level).
// Both sides. Default: [slog.Default]. A nil logger discards everything.
func WithLogger(l *slog.Logger) Option {
	return bothOption(func(c *config) {
		if l == nil {
			l = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		c.logger = l
	})
}

// WithMaxMessageSize sets the largest message payload this side accepts, in
// bytes; larger messages are refused before they are read, failing only
// their own call. Each side tells the other its limit in the handshake, so a
// client refuses locally to send a request the server would refuse.
// Both sides. Default: [DefaultMaxMessageSize] (16 MiB, about two million
// int64 items). Values below 64 or above 4 GiB - 1 are clamped.
func WithMaxMessageSize(n int) Option {
	return bothOption(func(c *config) { c.maxMessage = min(max(n, 64), maxMessageLimit) })
}

// WithHandshakeTimeout bounds, on a server, a connection's whole
// handshake: its TLS handshake, if any, and its hello, from when the server
// accepts it. A connection that has not completed it in time is closed,
// and its handshake slot ([WithHandshakeLimits]) is free again. A peer on a
// slow link needs about two round trips for TLS 1.3 and the hello (three
// for TLS 1.2), so the default suits round trips of up to several hundred
// milliseconds while a silent connection holds its slot only briefly.
// On a client, whose handshake is bounded by [WithDialTimeout], it bounds
// only how long a new stream may wait for the server's acknowledgement
// before the session is declared dead (yamux's stream open timeout): that
// wait can include a busy connection's queued writes, so a client's default
// is longer. Both sides. Default: [DefaultHandshakeTimeout] on a server,
// [DefaultClientHandshakeTimeout] on a client.
func WithHandshakeTimeout(d time.Duration) Option {
	return bothOption(func(c *config) { c.handshakeTimeout = d })
}

// WithRequestTimeout bounds how long a server waits for the request on a new
// stream, and for the rest of any request once its first byte has arrived
// (not counting a wait for room in [WithMaxPendingBytes]); a stream kept
// idle between calls waits for its next request without limit. It is also
// how long either side waits for its peer to close a stream it has closed
// before resetting it (yamux's stream close timeout). Both sides. Default:
// [DefaultRequestTimeout].
func WithRequestTimeout(d time.Duration) Option {
	return bothOption(func(c *config) { c.requestTimeout = d })
}

// WithWriteTimeout bounds every write of a message, so a peer that stops
// reading cannot block a call forever; it is also yamux's connection write
// timeout. Both sides. Default: [DefaultWriteTimeout].
func WithWriteTimeout(d time.Duration) Option {
	return bothOption(func(c *config) { c.writeTimeout = d })
}

// WithKeepAlive sets the interval of yamux keepalive pings (and of TCP
// keepalive on dialled connections); a peer that stops answering them is
// declared dead and its session closed, failing its calls.
// Both sides. Default: [DefaultKeepAlive].
func WithKeepAlive(d time.Duration) Option {
	return bothOption(func(c *config) { c.keepAlive = d })
}

// WithDialTimeout bounds connecting to the server, handshake included.
// Client. Default: [DefaultDialTimeout].
func WithDialTimeout(d time.Duration) ClientOption {
	return clientOption(func(c *config) { c.dialTimeout = d })
}

// WithRedialBackoff sets the delays between connection attempts after a
// failed one: the first wait is lo, each further failure doubles it (with
// jitter) up to hi. While waiting, calls fail at once with the last dial
// error; a success resets the wait. Client. Default: [DefaultBackoffMin] to
// [DefaultBackoffMax].
func WithRedialBackoff(lo, hi time.Duration) ClientOption {
	return clientOption(func(c *config) { c.backoffMin, c.backoffMax = lo, max(lo, hi) })
}

// WithMaxConcurrentCalls bounds the calls in flight on one connection. Past
// it, a call fails at once rather than waiting: a server answers each extra
// stream with [CodeOverloaded] without reading its request, and a client
// refuses an extra call before sending it. Either way the error matches
// [fanout.ErrOverloaded], and nothing was processed. A server counts the
// streams open on the connection, the idle streams a client keeps for later
// calls included; a Client never has more streams than it had calls in
// flight at once, each chunk in flight of a call it splits ([WithChunks])
// counted as a call. Both sides (on a server, per connection). Default:
// [DefaultMaxCalls]. Values below 1 mean 1.
func WithMaxConcurrentCalls(n int) Option {
	return bothOption(func(c *config) { c.maxCalls = max(n, 1) })
}

// WithMaxConnections bounds the connections a server serves at once, over
// all its listeners: those that completed their handshake (connections
// still in it are bounded by [WithHandshakeLimits] instead). A connection
// that completes its handshake past the bound is refused there
// (PROTOCOL.md, status 2): the client's call fails with an error that wraps
// [fanout.ErrUnavailable] and names the limit, and the client waits out its
// redial backoff ([WithRedialBackoff]) before it tries again. Connections
// served go on as before. Together with [WithMaxConcurrentCalls] this
// bounds the streams, and so the yamux buffers, a server keeps. Server.
// Default: [DefaultMaxConnections]. Values below 1 mean 1.
func WithMaxConnections(n int) ServerOption {
	return serverOption(func(c *config) { c.maxConns = max(n, 1) })
}

// WithHandshakeLimits bounds the connections a server keeps in their
// handshake (TLS included) at once: total over all its listeners, and
// perHost from any one remote host (an IPv4 address, or an IPv6 /64
// prefix), so that one host's connections that never complete their
// handshake cannot keep other hosts' clients out. A new connection past
// either bound is refused at once, apart from those slots: the server
// answers its hello, if the hello arrives within a second (or the handshake
// timeout, if shorter), with the busy status (PROTOCOL.md, status 2) and a
// message naming the limit, then closes it; the client's call fails with
// an error that wraps [fanout.ErrUnavailable], and it tries again after its
// redial backoff. The server refuses up to 64 connections at a time this
// way and closes any more unanswered, so that a flood of connections costs
// it a bounded number of goroutines and buffers. Server. Default:
// [DefaultMaxHandshakes] in total, [DefaultMaxHandshakesPerHost] per host. Values
// below 1 mean 1; perHost above total means total.
func WithHandshakeLimits(total, perHost int) ServerOption {
	return serverOption(func(c *config) {
		c.maxHandshakes = max(total, 1)
		c.hostHandshakes = min(max(perHost, 1), c.maxHandshakes)
	})
}

// WithMaxPendingBytes bounds the memory a server spends on requests: the
// request payloads it holds at once, from reading them until their answers
// are written, counted over all its connections. A request that does not
// fit waits until earlier calls have answered. A request with more than 64
// KiB of payload waits before its client sends the payload (the client
// sends the header alone and the payload once the server has room, see
// PROTOCOL.md), and its stream gives back the receive buffer of its earlier
// requests meanwhile; a smaller one waits with its payload. So the server's
// memory depends on this bound and not on how many clients send large
// requests at once. A request larger than the bound waits until it is
// alone. The decoded items, the backend's work and the answer are not
// counted, but are usually proportional to the payload: the example middle
// layer peaks at about 40-120 MiB plus ten times this bound
// (PERFORMANCE.md). Server.
// Default: [DefaultMaxPendingBytes]. Values below 1 mean no bound.
func WithMaxPendingBytes(n int64) ServerOption {
	return serverOption(func(c *config) { c.maxPending = n })
}

// WithChunks sets how a client sends a call with more than items items:
// as calls of at most items items each, up to inFlight of them at once (see
// [Client.Process]). Pipelining a large call this way lets the server, and
// the backends behind it, work on its first chunks while the rest are
// still being sent, and lets the client decode answers while the server
// works on the rest. Each chunk counts against
// [WithMaxConcurrentCalls] like a call, but only while a slot is free:
// when none is, the call sends its chunks one after another instead of
// failing. The slots its chunks hold count for other calls too, which can
// find the limit reached while a large call is in flight. Items below 1
// sends every call whole; inFlight below 1 means 1. Client. Default:
// [DefaultChunkItems] items, [DefaultChunksInFlight] in flight.
func WithChunks(items, inFlight int) ClientOption {
	return clientOption(func(c *config) { c.chunkItems, c.chunkCalls = items, max(inFlight, 1) })
}

// WithTLSConfig makes the connection speak TLS under the handshake and the
// session. On a server, cfg must hold its certificate; for mutual TLS set
// ClientAuth to [tls.RequireAndVerifyClientCert] and ClientCAs to the CA
// that signs the clients' certificates. A server with TLS refuses a
// plaintext peer, and one whose certificate does not verify, and logs why.
// On a client, cfg holds the CA to verify the server (RootCAs) and, for
// mutual TLS, the client's certificate; ServerName defaults to the host of
// the address dialled. The TLS handshake counts against the handshake
// timeout (server) or the dial timeout (client). cfg is cloned and must not
// be nil. Both sides. Default: no TLS.
func WithTLSConfig(cfg *tls.Config) Option {
	return bothOption(func(c *config) { c.tlsConfig = cfg.Clone() })
}

// WithDialer replaces how a client opens its TCP connection, for example to
// route it through a proxy; TLS from [WithTLSConfig], if any, runs on the
// connection it returns. Client. Default: TCP with [net.Dialer].
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) ClientOption {
	return clientOption(func(c *config) { c.dial = dial })
}

func (c *config) yamuxConfig() *yamux.Config {
	yc := yamux.DefaultConfig()
	yc.KeepAliveInterval = c.keepAlive
	yc.ConnectionWriteTimeout = c.writeTimeout
	yc.StreamOpenTimeout = c.handshakeTimeout
	yc.StreamCloseTimeout = c.requestTimeout
	// A client opens at most maxCalls streams at once; with as many
	// unacknowledged streams allowed, OpenStream (which takes no context)
	// never blocks.
	yc.AcceptBacklog = max(c.maxCalls, yc.AcceptBacklog)
	yc.LogOutput = nil
	yc.Logger = yamuxLogger{c.logger}
	return yc
}

// yamuxLogger hands yamux's messages, which start with "[ERR]" or "[WARN]",
// to slog.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any)                 { y.log(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.log(fmt.Sprintf(format, v...)) }
func (y yamuxLogger) Println(v ...any)               { y.log(fmt.Sprintln(v...)) }

func (y yamuxLogger) log(msg string) {
	msg = strings.TrimSpace(msg)
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "[ERR]") {
		level = slog.LevelError
	}
	y.l.Log(context.Background(), level, "yamux: "+msg)
}
