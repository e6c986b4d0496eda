// Package transport serves any [fanout.Backend] over the network and calls
// it back as one.
//
// A [Server] accepts TCP connections (or any [net.Listener]'s); a [Client]
// is a fanout.Backend whose Process sends the batch to a server and returns
// its answer. Between a client and a server there is one connection carrying
// one yamux session; every call in flight has a yamux stream to itself, so
// many concurrent calls share the connection without waiting for each
// other. A stream outlives its call: the client keeps it for the next one,
// which saves yamux's open, acknowledge and close frames on every call.
//
// The bytes on the wire are specified in PROTOCOL.md beside this package:
// a handshake (magic, protocol version, codec names, maximum message size,
// service name) and, on every stream, length-prefixed requests, each
// answered by one response, partial response or error before the next.
//
// # Services
//
// A server states the service it serves and a client the service it
// requires ([WithService]). A client that reached the wrong server (an
// address given for another service) is refused at the handshake, with an
// error naming both services on the client ([ErrHandshake], wrapping
// [fanout.ErrUnavailable]) and a log line on the server, rather than being
// answered by a backend that computes something else.
//
// # Partial answers
//
// A backend that answers some items and fails others (a [*fanout.PartialError],
// see [fanout.Backend]) is answered with a partial response: the results
// and each failure's route, indices, code and text. The client returns the
// results and a *fanout.PartialError whose errors are [*RemoteError]s, so a
// router served over the network keeps its answers and its failures, which
// survive any number of hops: a failure that came from another server keeps
// that server's code and text. A chunked call ([WithChunks]) merges the
// failures of its chunks.
//
// # Codecs
//
// Items and results are encoded by a [Codec] per type. [Int64] and [Float64]
// are compact little-endian binary codecs without reflection; [JSON] carries
// any type encoding/json can. The handshake compares codec names, so peers
// that would misread each other refuse to connect, with [ErrHandshake] on
// the client and a log line on the server.
//
// # Guarantees
//
// Ordering and count: a successful call returns exactly one result per item,
// in order. The server checks its backend's answer and the client checks the
// server's, so a wrong count is an error, never a misaligned answer.
//
// Limits: every message is bounded by a maximum size ([WithMaxMessageSize],
// 16 MiB by default). A larger or malformed message is refused before its
// payload is read or allocated, fails only its own call, and the server goes
// on serving. Each side learns the other's limit in the handshake: a client
// refuses locally to send a request larger than the server's, and a server
// answers with [CodeTooLarge] rather than send results larger than the
// client's, before its backend does the work when the response codec is a
// [MinSizer]. Calls in flight are bounded per connection
// ([WithMaxConcurrentCalls], 1024 by default; a server counts the streams
// open, the idle streams a client keeps included): past the bound a server
// answers at once with [CodeOverloaded] without reading the request, and a
// client refuses the call before sending it; streams are bounded per server
// too ([WithMaxStreams]). Connections are bounded per server
// ([WithMaxConnections], 1024 by default, over all listeners), and those
// still in their handshake apart, in all and per host
// ([WithHandshakeLimits]): past a bound a server still accepts each
// connection and refuses it in the handshake, naming the limit, and the
// client's calls fail as unavailable until a redial succeeds. What a
// server buffers for a connection that does not read is bounded
// ([WithMaxWriteBuffer]), and so are the frames that carry no call, pings
// first ([WithMaxPingRate]). Nothing queues without bound.
//
// Deadlines and cancellation: the caller's deadline travels with the request
// as time remaining and becomes the deadline of the backend's context on the
// server. Cancelling the caller's context abandons the call at once and
// half-closes its stream, which cancels the backend's context (the server
// looks for that once a call has run 10 to 20 ms, so a shorter call runs to
// its end). Handshakes, writes, a new stream's wait for its request and a
// request once it has started (a wait for room in the server's budget
// aside) are bounded by timeouts, and keepalive pings
// detect a dead peer, so no call hangs forever on a peer that died or went
// silent. A stream kept idle between calls waits for its next request up
// to the idle timeout ([WithIdleTimeout]); a request that stops arriving
// loses its room after the stall timeout ([WithStallTimeout]).
//
// Errors: an error the server reports (its backend failed or panicked, the
// request was refused) is a [*RemoteError] with a [Code]; anything else (a
// dial failure, a lost connection) is not, so [errors.As] tells them apart.
// RemoteErrors for cancellation, deadlines, oversized messages and shutdown
// also match context.Canceled, context.DeadlineExceeded,
// [ErrMessageTooLarge] and [ErrServerClosed] with [errors.Is]. Client errors
// name the server's address.
//
// Large calls: a client sends a call of more than 131,072 items as calls of
// that many items at most, four in flight at once on streams of their own
// ([WithChunks]), and decodes their answers into one slice. The server
// starts on the first chunk while the others are on the way and the client
// decodes answers while the server works on the rest; each chunk is a call
// of its own to the server's backend, so a backend must answer each item on
// its own, as the [fanout.Backend] contract's routers and batchers already
// assume. Ordering and count hold for the whole call; the first chunk that
// fails fails the call and cancels the others. A call some of whose chunks
// may have been delivered never fails with an error that calls it safe to
// send again (below): a chunk refused after others were sent makes it
// [fanout.ErrInterrupted].
//
// Whether a failed call may be sent again: a client's error wraps
// [fanout.ErrUnavailable] when the request was not delivered (the dial or
// the TLS or fanout handshake failed, the client is waiting to redial, the
// server was shutting down, the stream or connection failed before a large
// request's payload was sent), [fanout.ErrOverloaded] when a limit refused it,
// and [fanout.ErrInterrupted] when the connection failed, or the stream was
// reset, after the request may have been delivered. A [fanout.Balancer]
// retries the first two on another replica. An empty batch is a round trip
// that the server answers without calling its backend: a probe.
//
// Security: [WithTLSConfig] runs every connection over TLS, with mutual
// authentication when the server requires client certificates. A server
// with TLS refuses a plaintext peer and a peer whose certificate its CA did
// not sign, and logs why; the client's error says what failed.
//
// Reconnection: a client connects on its first call and redials after its
// session dies, waiting with capped exponential backoff between failed
// attempts. A call whose stream could not be opened on a dead session is
// retried once on a new one; a call that was sent is never retried.
//
// Shutdown: [Server.Shutdown] stops accepting, lets the calls in flight
// finish within the caller's grace period and then closes; [Server.Close]
// and [Client.Close] stop at once. Both are idempotent. When a connection
// fails or a server closes it, the server's goroutines for its streams,
// idle ones included, end at once (yamux's own reads would spin until its
// session had closed them all).
//
// Memory: a server holds at most [WithMaxPendingBytes] of requests at once
// (16 MiB by default), one connection at most its share of it
// ([WithMaxPendingBytesPerConnection]); a request that does not fit waits,
// and its buffer grows as its bytes arrive. A request of more than 64 KiB
// waits holding its header only: sent whole, it is taken at once if there
// is room, else its payload is dropped and asked for again once there is (a
// client that expects no room asks first: the header, then the payload once
// asked), so that requests waiting hold almost nothing. Buffers are pooled.
// A backend that also implements [Recycler] gets each answer back once the
// server has encoded it, to reuse its memory. PERFORMANCE.md at the
// repository's root gives the measurements behind these choices.
//
// Concurrency: Servers and Clients are safe for concurrent use.
//
// Options: [NewServer] takes [ServerOption]s and [NewClient] and [Dial]
// take [ClientOption]s; an option that concerns both sides, such as
// [WithLogger], is an [Option], which is both. An option of one side only,
// such as [WithMaxConnections] or [WithChunks], does not compile on the
// other. Each option's comment gives its default. The transport logs
// through log/slog, yamux's messages included.
package transport
