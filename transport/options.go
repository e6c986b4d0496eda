package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
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
	controlFrames    int           // not an option: tests set it; 0 for controlFrameLimit(maxCalls)
	maxPending       int64
	connPending      int64 // 0: maxPending / 4
	stallTimeout     time.Duration
	idleTimeout      time.Duration
	maxStreams       int
	maxWriteBuffer   int
	maxWriteBuffers  int64
	writePool        *writePool // made by newServerConfig from maxWriteBuffers; nil on a client
	chunkItems       int
	chunkCalls       int
	pingRate         float64
	pingBurst        int
	service          string
	tlsConfig        *tls.Config
	dial             func(ctx context.Context, addr string) (net.Conn, error)
	observer         fanout.Observer
	propagator       Propagator
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
	DefaultStallTimeout     = 2 * time.Second
	DefaultIdleTimeout      = time.Minute
	DefaultMaxStreams       = 1024
	DefaultMaxWriteBuffer   = 1 << 20
	DefaultMaxWriteBuffers  = 32 << 20
	DefaultChunkItems       = 131072
	DefaultChunksInFlight   = 4
	DefaultMaxPingRate      = 10 // a second
	DefaultPingBurst        = 100

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
	c.writePool = newWritePool(c.maxWriteBuffers)
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
		logger:           slog.New(slog.DiscardHandler), // nothing is logged unless the user asks
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
		stallTimeout:     DefaultStallTimeout,
		idleTimeout:      DefaultIdleTimeout,
		maxStreams:       DefaultMaxStreams,
		maxWriteBuffer:   DefaultMaxWriteBuffer,
		maxWriteBuffers:  DefaultMaxWriteBuffers,
		chunkItems:       DefaultChunkItems,
		chunkCalls:       DefaultChunksInFlight,
		pingRate:         DefaultMaxPingRate,
		pingBurst:        DefaultPingBurst,
	}
}

// WithObserver has a [Server] tell o about every call it serves, and every
// request it refuses after reading its header ([fanout.WorkServe]): the
// items and bytes of the request, how long the call took from when its
// request was read to when its answer was written, and how it ended (a
// refusal ends with a [*RemoteError] that matches what its code stands
// for: [fanout.ErrOverloaded], say). The context Start returns is the one
// the backend runs under: after a [Propagator]'s, so that an observer's
// span of the call is a child of the caller's. See [fanout.Observer].
//
// Default: none, and then nothing is measured.
func WithObserver(o fanout.Observer) ServerOption {
	return serverOption(func(c *config) { c.observer = o })
}

// TraceContext is the W3C trace context (https://www.w3.org/TR/trace-context/)
// of a call: the fields of the traceparent header, and the tracestate header
// as it is. A call carries it to its server when the client has a
// [Propagator] and the call's context is traced (PROTOCOL.md, the traced
// request).
type TraceContext struct {
	TraceID [16]byte // all zeros is invalid
	SpanID  [8]byte  // the caller's span, the server's parent; all zeros is invalid
	Flags   byte     // trace-flags: bit 0 is "sampled"
	State   string   // tracestate, "" for none; one over 512 bytes is dropped
}

// A Propagator carries a trace across a call. A client asks it for the
// trace context of each call's context, and sends it with the request; a
// server hands it the trace context a request brought, and runs the call
// on the context it returns. The otel module of this repository has one
// for OpenTelemetry; any tracing library can be plugged in the same way.
type Propagator interface {
	// Inject returns the trace context of a call whose context is ctx, and
	// false when the call is not traced (nothing is sent then).
	Inject(ctx context.Context) (TraceContext, bool)
	// Extract returns the context a served call runs under, given ctx and
	// the valid trace context that came with its request.
	Extract(ctx context.Context, tc TraceContext) context.Context
}

// WithPropagator sets the [Propagator] that carries traces across calls:
// a client sends the trace context of each traced call, a server extracts
// the trace context of each traced request. A server without one serves a
// traced request as any other, its trace context unused; so does one with
// a propagator when the trace context's IDs are all zeros (W3C says to
// ignore such a context, so it is no error).
//
// Default: none. Traced requests cost a client nothing without it.
func WithPropagator(p Propagator) Option {
	return bothOption(func(c *config) { c.propagator = p })
}

// WithLogger sets the logger for the transport and for the yamux sessions
// under it (yamux's own messages are logged at Warn or Error level, but
// those a peer can cause once a frame and those about frames left unsent
// when a session closed at Debug).
// Both sides. Default: none, nothing is logged. A nil logger discards everything too.
func WithLogger(l *slog.Logger) Option {
	return bothOption(func(c *config) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
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
// idle between calls waits for its next request up to the idle timeout
// ([WithIdleTimeout]). It is also
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
// KiB of payload waits holding its header only (sent whole and found no
// room, its payload is dropped and asked for again once there is room; or
// its client asks first and sends it once asked, see PROTOCOL.md), and its
// stream gives back the receive buffer of its earlier requests meanwhile; a
// smaller one waits with its payload. So the server's memory depends on
// this bound and not on how many clients send large requests at once. One
// connection holds at most its share ([WithMaxPendingBytesPerConnection]),
// and no request may be larger than that share. A request's buffer grows as
// its bytes arrive, and a request that stops arriving loses its room
// ([WithStallTimeout]). The decoded items, the backend's work and the
// answer are not counted, but are usually proportional to the payload: the
// example middle layer peaks at about 40-120 MiB plus ten times this bound
// (PERFORMANCE.md). Server.
// Default: [DefaultMaxPendingBytes]. Values below 1 mean no bound.
func WithMaxPendingBytes(n int64) ServerOption {
	return serverOption(func(c *config) { c.maxPending = n })
}

// WithMaxPendingBytesPerConnection bounds the share of the server's budget
// ([WithMaxPendingBytes]) that the requests of one connection hold at once,
// so that one client, however many streams it opens and however slowly it
// sends, leaves the rest of the budget to the others. A request of one
// connection that does not fit its share waits for the connection's
// earlier requests to answer, without taking room from other connections.
// The server accepts no request larger than the share: it announces the
// smaller of the share and [WithMaxMessageSize] as its maximum message size
// in the handshake, so a [Client] cuts its calls into requests that fit
// (for a request codec that implements [MinSizer]) or refuses them before
// sending. Server. Default: a quarter of the budget; values above the
// budget mean the budget, and values below 1 the default.
func WithMaxPendingBytesPerConnection(n int64) ServerOption {
	return serverOption(func(c *config) { c.connPending = max(n, 0) })
}

// WithStallTimeout bounds how long a server waits for the next bytes of a
// request whose payload it has room for: a client that announced a request
// and then sends nothing of it for this long has its room in the budget
// given back and the request refused, unprocessed, with [CodeOverloaded]
// naming the stall, well before the request timeout ([WithRequestTimeout]).
// The server still reads and drops the rest of the payload until the
// request timeout, so that a client slow rather than silent finishes its
// write and reads the refusal, which matches [fanout.ErrOverloaded]: a
// [fanout.Balancer] retries it on another replica. Server. Default: [DefaultStallTimeout].
// Values below 1 leave only the request timeout.
func WithStallTimeout(d time.Duration) ServerOption {
	return serverOption(func(c *config) { c.stallTimeout = d })
}

// WithIdleTimeout bounds how long a stream stays open between calls. A
// server closes a stream that has carried no request for d, answering it
// with [CodeStreamIdle] (the client's request, if one crosses that answer,
// was not read, and the client sends it again on another stream); a client
// closes the streams it keeps idle for d/2, so that it usually closes them
// first. A server thus reclaims the streams a client opened and left.
// Both sides. Default: [DefaultIdleTimeout]. Values below 1 mean streams
// stay open between calls as long as their connection lives.
func WithIdleTimeout(d time.Duration) Option {
	return bothOption(func(c *config) { c.idleTimeout = d })
}

// WithMaxStreams bounds the streams a server keeps open over all its
// connections, idle ones included: past it, a new stream is answered with
// [CodeOverloaded] without its request being read, as past
// [WithMaxConcurrentCalls]. A connection's first stream is always
// accepted, so that the bound never keeps a client out altogether: the
// server holds at most this many streams plus one per connection. Each
// open stream costs the server about 12 KiB while idle, and up to a yamux
// stream window (256 KiB) more while its client sends ahead of the
// server's reading (README, failure semantics, gives the worst case of the
// defaults). Server. Default: [DefaultMaxStreams]. Values below 1 mean 1.
func WithMaxStreams(n int) ServerOption {
	return serverOption(func(c *config) { c.maxStreams = max(n, 1) })
}

// WithMaxWriteBuffer bounds the memory a server spends on bytes it has
// written to its connections but the connections have not yet taken: the
// answers, acknowledgements and other yamux frames waiting for a slow or
// stalled peer. Each connection has at most perConn bytes waiting or being
// written, in at most two buffers of up to perConn bytes each; past that,
// the connection's writes wait (its own writes only) until the peer takes
// some, and a peer that takes nothing within the write timeout
// ([WithWriteTimeout]) is cut off, its connection closed and its memory
// released. All connections together hold at most total bytes of such
// buffers; a connection whose buffer cannot grow within total writes each
// frame at once, one frame per write, after what it has buffered, so total
// never makes one connection wait for another. A frame larger than perConn
// (a yamux data frame is at most a stream window, 256 KiB, unless the peer
// grants a larger window) is written at once in the same way. A connection
// gives back a buffer larger than 64 KiB as soon as it has nothing to
// write, and all its buffers when it closes. (A client buffers up to 64 MiB
// per connection, so that its calls' deadlines hold while a connection is
// stalled.) Server. Default: [DefaultMaxWriteBuffer] per
// connection, [DefaultMaxWriteBuffers] in all. perConn below 1 means 1
// (every frame written at once); total below 1 means no bound in all.
func WithMaxWriteBuffer(perConn int, total int64) ServerOption {
	return serverOption(func(c *config) { c.maxWriteBuffer, c.maxWriteBuffers = max(perConn, 1), total })
}

// WithMaxPingRate bounds the yamux pings a server answers on one
// connection: burst at once, and rate a second on average (a token bucket,
// full when the connection starts). yamux answers every ping on a goroutine
// of its own, so without a bound a client flooding pings costs the server
// memory and CPU that no request budget counts. A connection that sends a
// ping past the limit is closed, its calls in flight failing, and the
// server logs one line at Warn level naming the client's address and the
// limit. A fanout client sends one ping per keepalive interval
// ([WithKeepAlive]), which stays within the default unless the interval
// is under a tenth of a second. Other frames that carry no call (window
// updates, empty data frames, go aways) are bounded too, per connection,
// far above what a client sends (PROTOCOL.md). Server. Default:
// [DefaultMaxPingRate] a second, [DefaultPingBurst] at once. A rate of 0 or
// less, or infinite, turns the limit off; a burst below 1 means 1.
func WithMaxPingRate(rate float64, burst int) ServerOption {
	return serverOption(func(c *config) {
		if !(rate > 0) || math.IsInf(rate, 1) {
			rate = 0
		}
		c.pingRate, c.pingBurst = rate, max(burst, 1)
	})
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

// WithService names the service: on a server, the service it serves, which
// it states in the handshake; on a client, the service it requires of its
// server. A client that requires a service refuses, at the handshake, a
// server that serves another one or none, and the server refuses that
// client too: both sides report an error naming both services, and the
// connection closes. A client that requires none (the default) accepts any
// server, so give every client the name of what it expects: a wrong
// address then fails at once rather than answering with another service's
// results.
// Both sides. Default: "" (a server serves no named service; a client
// accepts any). It panics if name is longer than 255 bytes.
func WithService(name string) Option {
	if len(name) > wire.MaxServiceName {
		panic(fmt.Sprintf("transport: WithService: a name of %d bytes, longer than %d", len(name), wire.MaxServiceName))
	}
	return bothOption(func(c *config) { c.service = name })
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
	switch {
	case strings.Contains(msg, "frame for missing stream"),
		strings.Contains(msg, "Discarding data for stream"):
		// One a frame, which a peer may send as many as it likes of (the
		// server bounds the frames without a body, see controlFrameLimit)
		// and a client sends now and then when a stream ends.
		level = slog.LevelDebug
	case strings.HasSuffix(msg, yamux.ErrSessionShutdown.Error()),
		strings.HasSuffix(msg, net.ErrClosed.Error()):
		// A frame (a ping's answer, a go away) was still to be sent when
		// the session closed, which the transport logs itself if it was
		// not asked to: the coalescer fails writes with net.ErrClosed only
		// once it is closed, and with the write's own error otherwise.
		level = slog.LevelDebug
	case strings.HasPrefix(msg, "[ERR]"):
		level = slog.LevelError
	}
	y.l.Log(context.Background(), level, "yamux: "+msg)
}
