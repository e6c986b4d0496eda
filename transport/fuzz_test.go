package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// fuzzLimit is the frame size limit of the seeds; the fuzzer varies it.
const fuzzLimit = 1 << 10

// fuzzFrame builds a complete frame of kind k around payload with the
// encoder's own functions.
func fuzzFrame(tb testing.TB, k wire.Kind, payload []byte) []byte {
	buf := wire.AppendHeader(nil, k)
	buf = append(buf, payload...)
	require.NoError(tb, wire.FinishFrame(buf, 0, fuzzLimit))
	return buf
}

func fuzzHellos() []wire.Hello {
	return []wire.Hello{
		{Version: wire.Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: DefaultMaxMessageSize},
		{Version: wire.Version, ReqCodec: "json", RespCodec: "float64le", MaxMessage: 64},
		{Version: wire.Version, ReqCodec: "", RespCodec: "", MaxMessage: math.MaxUint32},
		{Version: wire.Version, ReqCodec: strings.Repeat("n", 255), RespCodec: "x", MaxMessage: 1},
	}
}

// fuzzRecord is a JSON item with the shapes a user type typically has. It
// has no omitempty fields: those turn an empty slice into a missing one, so a
// decoded batch would not survive a round trip for reasons outside the codec.
type fuzzRecord struct {
	ID    int64          `json:"id"`
	Score float64        `json:"score"`
	Name  string         `json:"name"`
	Tags  []string       `json:"tags"`
	Attrs map[string]int `json:"attrs"`
	Next  *fuzzRecord    `json:"next"`
}

func FuzzJSONDecode(f *testing.F) {
	for _, s := range []string{
		``, `[]`, `null`, `[1,-2,9223372036854775807]`, `[1.5]`, `["a","\u00e9\ud83d\ude00"]`,
		`[{"id":1,"score":2.5,"name":"x","tags":["a"],"attrs":{"k":1},"next":{"id":2}}]`,
		`[{"id":"1"}]`, `[{"0000":"","tAgs":[]}]`, `{"id":1}`, `[1,`, "[\"\xff\"]", `[1e400]`, `[[[[[[[[[[]]]]]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzJSONRoundTrip[int64](t, data)
		fuzzJSONRoundTrip[float64](t, data)
		fuzzJSONRoundTrip[string](t, data)
		fuzzJSONRoundTrip[fuzzRecord](t, data)
	})
}

// fuzzJSONRoundTrip decodes data as a batch of T; if that succeeds, the
// items encode and decode back to themselves.
func fuzzJSONRoundTrip[T any](t *testing.T, data []byte) {
	c := JSON[T]()
	out, err := c.Decode(nil, data)
	if err != nil {
		return
	}
	b, err := c.Append(nil, out)
	require.NoError(t, err)
	again, err := c.Decode(nil, b)
	require.NoError(t, err)
	require.Equal(t, len(out), len(again))
	if len(out) > 0 {
		require.Equal(t, out, again)
	}
}

func FuzzErrorFrame(f *testing.F) {
	f.Add(uint8(CodeBackend), "backend failed", uint32(fuzzLimit))
	f.Add(uint8(CodeTooLarge), strings.Repeat("x", 2*fuzzLimit), uint32(fuzzLimit)) // cut to fit
	f.Add(uint8(CodeInternal), "aé€😀", uint32(4))                                   // cut inside a character
	f.Add(uint8(0), "", uint32(1))
	f.Add(uint8(255), "\xff\xfe", uint32(0))

	f.Fuzz(func(t *testing.T, code uint8, msg string, limit32 uint32) {
		limit := int(limit32%(1<<16)) + 1 // room for the code at least
		frame := appendErrorFrame(nil, Code(code), msg, limit)

		// The frame always fits the limit it was cut for, and reads back.
		k, payload, err := wire.ReadFrame(bytes.NewReader(frame), limit, nil)
		require.NoError(t, err)
		require.Equal(t, wire.KindError, k)
		require.Equal(t, frame[wire.HeaderSize:], payload)

		got, text, err := parseError(payload)
		require.NoError(t, err)
		require.Equal(t, Code(code), got)
		// The message is kept whole if it fits, else cut to fit; a valid
		// UTF-8 message is cut by less than a character, and never in the
		// middle of one.
		require.True(t, strings.HasPrefix(msg, text))
		if len(msg) < limit {
			require.Equal(t, msg, text)
		} else {
			require.LessOrEqual(t, len(text), limit-1)
			if utf8.ValidString(msg) {
				require.True(t, utf8.ValidString(text))
				require.Greater(t, len(text), limit-1-utf8.UTFMax)
			}
		}

		// Whatever the code, the client's error says what the server said
		// and is never taken for a connection failure.
		re := &RemoteError{Addr: "fuzz", Code: got, Message: text}
		require.Contains(t, re.Error(), text)
		require.NotEmpty(t, got.String())
		require.False(t, errors.Is(re, fanout.ErrInterrupted))
		if got == CodeBackend {
			for _, target := range []error{context.Canceled, context.DeadlineExceeded, ErrMessageTooLarge,
				ErrServerClosed, fanout.ErrUnavailable, fanout.ErrOverloaded} {
				require.False(t, errors.Is(re, target), "a backend's own error matches %v", target)
			}
		}
	})
}

// fuzzConn is an in-memory connection for the handshakes: it reads r and
// keeps what is written. Once r is exhausted, a blocking conn waits for
// Close before it reports the end of the stream, as an open connection
// would.
type fuzzConn struct {
	r        io.Reader
	blocking bool
	closed   chan struct{}
	once     sync.Once

	mu sync.Mutex
	w  bytes.Buffer
}

func newFuzzConn(data []byte, blocking bool) *fuzzConn {
	return &fuzzConn{r: bytes.NewReader(data), blocking: blocking, closed: make(chan struct{})}
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF && c.blocking {
		<-c.closed
	}
	return n, err
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

func (c *fuzzConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.w.Bytes())
}

func (c *fuzzConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fuzzConn) LocalAddr() net.Addr              { return fuzzAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return fuzzAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

type fuzzAddr struct{}

func (fuzzAddr) Network() string { return "fuzz" }
func (fuzzAddr) String() string  { return "fuzz" }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// fuzzHandshakeSeeds returns hellos and non-hellos a peer may open with.
func fuzzHandshakeSeeds() [][]byte {
	var seeds [][]byte
	for _, h := range fuzzHellos() {
		seeds = append(seeds, wire.AppendHello(nil, h))
	}
	good := wire.AppendHello(nil, fuzzHellos()[0])
	return append(seeds,
		good[:len(good)-1], // truncated
		append(wire.AppendHello(nil, wire.Hello{Version: wire.Version + 1}), 0xff, 0xff), // another version
		wire.AppendHello(nil, wire.Hello{Version: wire.Version - 1, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: 1 << 20}),
		append([]byte("fanouX"), good[len(wire.Magic):]...), // bad magic
		[]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00},    // a TLS ClientHello
		[]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28},    // a TLS alert
		nil,
	)
}

// readAnyReply reads a server's reply in any version the server serves, as
// readReply does for this client's version only.
func readAnyReply(r io.Reader) (h wire.Hello, status uint8, msg string, err error) {
	if h, err = wire.ReadHello(r); err != nil {
		return h, 0, "", err
	}
	status, msg, err = wire.ReadStatus(r)
	return h, status, msg, err
}

// forget gives back the slot of conn, admitted as cs, as serveConn does
// once the connection ends.
func (s *Server[In, Out]) forget(conn net.Conn, cs *serverConn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.freeSlot(cs)
	s.mu.Unlock()
	s.conn.Done()
}

func FuzzServerHandshake(f *testing.F) {
	srv := NewServer[int64, int64](nil, Int64(), Int64(), WithLogger(nil), WithMaxMessageSize(fuzzLimit))
	for _, s := range fuzzHandshakeSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, busy bool) {
		want, wantErr := wire.ReadHello(bytes.NewReader(data))
		conn := newFuzzConn(data, false)
		// A connection in a handshake slot, as Serve admits it, or one
		// refused past the slots.
		cs := &serverConn{slot: slotRefusal, busy: "server busy: at its limit of 1 connections in their handshake"}
		if !busy {
			_, cs = srv.admit(conn)
			defer srv.forget(conn, cs)
		}
		p, err := srv.handshake(conn, cs)
		out := conn.written()

		if wantErr != nil {
			// No hello (not this protocol, or cut short): no answer.
			require.Error(t, err)
			require.ErrorIs(t, err, ErrProtocol)
			require.Empty(t, out, "answered a peer that sent no hello")
			return
		}
		// A hello of any version is answered with the server's own hello
		// and a status, in the layout of version 1.
		h, status, msg, rerr := readAnyReply(bytes.NewReader(out))
		require.NoError(t, rerr)
		require.Equal(t, srv.hello, h)
		require.Equal(t, wire.AppendReply(nil, h, status, msg), out, "trailing bytes after the reply")
		if reason := wire.CheckHello(srv.hello, want); reason != "" {
			require.ErrorIs(t, err, ErrHandshake)
			require.EqualValues(t, wire.StatusRefused, status)
			require.Equal(t, reason, msg)
			return
		}
		if busy {
			// A hello the server would accept, refused for want of room.
			require.Error(t, err)
			require.NotErrorIs(t, err, ErrHandshake)
			require.EqualValues(t, wire.StatusBusy, status)
			require.Equal(t, cs.busy, msg)
			return
		}
		require.NoError(t, err)
		require.EqualValues(t, wire.StatusOK, status)
		require.Empty(t, msg)
		require.Equal(t, peer{max: int(min(want.MaxMessage, maxMessageLimit))}, p)
	})
}

func FuzzClientHandshake(f *testing.F) {
	server := wire.Hello{Version: wire.Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: fuzzLimit}
	mine := wire.Hello{Version: wire.Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: DefaultMaxMessageSize}
	f.Add(wire.AppendReply(nil, server, wire.StatusOK, ""))
	f.Add(wire.AppendReply(nil, server, wire.StatusRefused, wire.CheckHello(server, wire.Hello{Version: wire.Version})))
	f.Add(wire.AppendReply(nil, server, wire.StatusBusy, "server at its limit of 1 connections"))
	f.Add(wire.AppendReply(nil, wire.Hello{Version: wire.Version, ReqCodec: "json", RespCodec: "int64le"}, wire.StatusOK, ""))
	f.Add(append(wire.AppendReply(nil, server, wire.StatusOK, ""), 0, 0, 0, 0)) // yamux frames follow
	for _, s := range fuzzHandshakeSeeds() {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countingReader{r: bytes.NewReader(data)}
		theirs, status, msg, wantErr := wire.ReadReply(cr)
		if wantErr == nil {
			// The connection stays open after the reply, with nothing
			// more to read: yamux itself is not under test.
			data = data[:cr.n]
		}
		conn := newFuzzConn(data, wantErr == nil)
		var dialled bool
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			if dialled {
				return nil, errors.New("dialled twice")
			}
			dialled = true
			return conn, nil
		}
		c, err := Dial(context.Background(), "fuzz", Int64(), Int64(), WithLogger(nil), WithDialer(dial))
		if err == nil {
			require.NoError(t, c.Close())
		}
		conn.Close()
		// The client always speaks first, with its hello.
		hi := wire.AppendHello(nil, mine)
		require.Equal(t, hi, conn.written()[:len(hi)])

		switch {
		case wantErr != nil:
			require.Error(t, err)
			if errors.Is(wantErr, ErrProtocol) || errors.Is(wantErr, ErrHandshake) {
				require.True(t, errors.Is(err, ErrProtocol) || errors.Is(err, ErrHandshake), "%v", err)
			}
		case status == wire.StatusBusy:
			require.NotErrorIs(t, err, ErrHandshake, "a busy server is no protocol mismatch")
			require.Contains(t, err.Error(), msg)
		case status != wire.StatusOK:
			require.ErrorIs(t, err, ErrHandshake)
			require.Contains(t, err.Error(), msg)
		case wire.CheckHello(theirs, mine) != "":
			require.ErrorIs(t, err, ErrHandshake)
		default:
			require.NoError(t, err)
		}
	})
}

// fuzzGuard bounds the waits of the end-to-end fuzz targets: a hang guard.
const fuzzGuard = 10 * time.Second

// fuzzCall is what the backend of FuzzServerRequest was called with.
type fuzzCall struct {
	items       []int64
	at          time.Time
	deadline    time.Time
	hasDeadline bool
}

// FuzzServerRequest sends arbitrary bytes on a stream to a real server, over
// real yamux on loopback TCP, and checks its answer against what PROTOCOL.md
// says the bytes mean: a well-formed request is answered with its results
// and its timeout prefix becomes the backend's deadline; anything else is
// refused with the right code, or ends the stream without an answer if it
// is cut short.
func FuzzServerRequest(f *testing.F) {
	calls := make(chan fuzzCall, 1)
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		d, ok := ctx.Deadline()
		// A backend keeps no items once it returns: the server reuses them.
		calls <- fuzzCall{items: slices.Clone(in), at: time.Now(), deadline: d, hasDeadline: ok}
		out := make([]int64, len(in))
		for i, n := range in {
			out[i] = 2 * n
		}
		return out, nil
	})
	srv := NewServer[int64, int64](backend, Int64(), Int64(), WithLogger(nil), WithMaxMessageSize(fuzzLimit))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(f, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	sess := rawClientSession(f, l.Addr().String(), 1<<20)
	f.Cleanup(func() {
		sess.Close()
		srv.Close()
		<-served
	})

	items, err := Int64().Append(nil, []int64{1, -2, math.MaxInt64 / 2})
	require.NoError(f, err)
	for _, timeout := range []uint64{0, 1, uint64(time.Minute), 1 << 62, math.MaxUint64} {
		f.Add(fuzzFrame(f, wire.KindRequest, append(binary.LittleEndian.AppendUint64(nil, timeout), items...)))
	}
	request := fuzzFrame(f, wire.KindRequest, append(make([]byte, wire.RequestPrefixSize), items...))
	trace := wire.AppendTrace(nil, &wire.Trace{TraceID: [16]byte{1}, SpanID: [8]byte{2}, Flags: 1, State: "k=v"})
	f.Add(fuzzFrame(f, wire.KindTraced, append(append(make([]byte, wire.RequestPrefixSize), trace...), items...))) // traced
	f.Add(fuzzFrame(f, wire.KindTraced, append(make([]byte, wire.RequestPrefixSize), items...)))                   // a trace context of items
	f.Add([]byte("\x060000"))                                                                                      // a traced request over the limit
	f.Add(request[:len(request)-1])                                                                                // cut short
	f.Add(append([]byte{request[0] | wire.FlagAsk}, request[1:]...))                                               // asking first, the payload sent early
	f.Add(append([]byte{request[0] | wire.FlagAsk}, request[1:len(request)-1]...))                                 // asking first, cut short
	f.Add([]byte{byte(wire.KindResponse) | wire.FlagAsk, 0, 0, 0, 0})                                              // the ask flag on another kind
	f.Add(wire.WaitFrame)
	f.Add(append(append([]byte{}, request...), 0))                              // a byte after the request
	f.Add(append(append([]byte{}, request...), request...))                     // two requests
	f.Add(fuzzFrame(f, wire.KindRequest, make([]byte, wire.RequestPrefixSize))) // no items
	f.Add(fuzzFrame(f, wire.KindRequest, make([]byte, wire.RequestPrefixSize+3)))
	f.Add(fuzzFrame(f, wire.KindRequest, make([]byte, wire.RequestPrefixSize-1)))
	f.Add(fuzzFrame(f, wire.KindResponse, items))
	f.Add([]byte{byte(wire.KindRequest), 0x01, 0x04, 0x00, 0x00}) // limit + 1
	f.Add([]byte{9, 0, 0, 0, 0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		// Within one stream window, so the write never waits for a server
		// that stopped reading.
		data = data[:min(len(data), 64<<10)]

		// What the bytes mean.
		const (
			noAnswer = iota
			refused
			answered
		)
		outcome, code := answered, Code(0)
		var n int
		var items []byte   // the encoded items of a request answered
		var kind wire.Kind // the kind, without the ask flag
		if len(data) > 0 {
			kind = wire.Kind(data[0] &^ wire.FlagAsk)
		}
		isRequest := kind == wire.KindRequest || kind == wire.KindTraced
		// A request asking first is asked for with a continue frame once
		// its header has passed, before any answer.
		asks := isRequest && data[0]&wire.FlagAsk != 0
		switch {
		case len(data) < wire.HeaderSize:
			outcome = noAnswer
		case !isRequest:
			// Not a request, of any length: refused from the header.
			outcome, code = refused, CodeBadRequest
		case uint64(binary.LittleEndian.Uint32(data[1:])) > fuzzLimit:
			outcome, code = refused, CodeTooLarge
		case binary.LittleEndian.Uint32(data[1:]) < wire.RequestPrefixSize:
			// Refused from the header: the payload is never read.
			outcome, code = refused, CodeBadRequest
		case wire.HeaderSize+int(binary.LittleEndian.Uint32(data[1:])) > len(data):
			outcome = noAnswer
		default:
			n = int(binary.LittleEndian.Uint32(data[1:]))
			items = data[wire.HeaderSize+wire.RequestPrefixSize : wire.HeaderSize+n]
			if kind == wire.KindTraced {
				var err error
				if _, items, err = wire.ParseTrace(items); err != nil {
					outcome, code = refused, CodeBadRequest // a malformed trace context
					break
				}
			}
			if len(items)%8 != 0 {
				outcome, code = refused, CodeBadRequest
			}
		}

		st, err := sess.OpenStream()
		require.NoError(t, err)
		defer st.Close()
		st.SetDeadline(time.Now().Add(fuzzGuard))
		start := time.Now()
		_, err = st.Write(data)
		require.NoError(t, err)
		if outcome == noAnswer {
			st.Close() // the end of the stream cuts the request short
		}
		k, payload, err := wire.ReadFrame(st, 1<<20, nil)
		if asks && len(data) >= wire.HeaderSize && code != CodeTooLarge && !(outcome == refused && code == CodeBadRequest && binary.LittleEndian.Uint32(data[1:]) < wire.RequestPrefixSize) {
			// The server's budget has room (a fuzz input is small): the
			// continue comes at once, and the payload sent early is read.
			require.NoError(t, err)
			require.Equal(t, wire.KindContinue, k, "%q", payload)
			require.Empty(t, payload)
			k, payload, err = wire.ReadFrame(st, 1<<20, nil)
		}

		var call *fuzzCall
		select {
		case c := <-calls:
			call = &c
		default:
		}
		switch outcome {
		case noAnswer:
			require.ErrorIs(t, err, io.EOF, "an answer to a request cut short")
			require.Nil(t, call)
			return
		case refused:
			require.NoError(t, err)
			require.Equal(t, wire.KindError, k)
			got, msg, err := parseError(payload)
			require.NoError(t, err)
			require.Equal(t, code, got, msg)
			require.Nil(t, call, "the backend was called for a refused request")
		case answered:
			require.NoError(t, err)
			want, err := Int64().Decode(nil, items)
			require.NoError(t, err)
			if len(want) == 0 {
				// An empty batch is a probe the server answers itself.
				require.Nil(t, call, "the backend was called for an empty batch")
			} else {
				require.NotNil(t, call, "the backend was not called for a well-formed request")
				require.Equal(t, want, call.items)
				// The prefix is the time left before the caller's
				// deadline, 0 for none, counted from when the server read
				// the request.
				prefix := binary.LittleEndian.Uint64(data[wire.HeaderSize:])
				if prefix == 0 {
					require.False(t, call.hasDeadline)
				} else {
					d := time.Duration(min(prefix, 1<<62))
					require.True(t, call.hasDeadline)
					require.False(t, call.deadline.Before(start.Add(d)), "deadline %v before the request", call.deadline)
					require.False(t, call.deadline.After(call.at.Add(d)), "deadline %v after the call started plus %v", call.deadline, d)
				}
			}
			require.Equal(t, wire.KindResponse, k)
			out, err := Int64().Decode(nil, payload)
			require.NoError(t, err)
			require.Equal(t, len(want), len(out))
			for i := range want {
				require.Equal(t, 2*want[i], out[i])
			}
			// The stream stays open for the next request: bytes after the
			// request are its start. Once this side ends, the server
			// answers whatever they amount to, then ends its side.
			st.Close()
			for err == nil {
				_, _, err = wire.ReadFrame(st, 1<<20, nil)
			}
			require.ErrorIs(t, err, io.EOF)
			select {
			case <-calls: // the call of a second request in the bytes
			default:
			}
			return
		}
		// A refusal, then the end of the stream.
		_, _, err = wire.ReadFrame(st, 1<<20, nil)
		require.ErrorIs(t, err, io.EOF)
	})
}

// knownKind reports whether b is the kind byte of a frame of a known kind:
// 1 to 7, with the ask flag on a request only.
func knownKind(b byte) bool {
	k := wire.Kind(b &^ wire.FlagAsk)
	if b&wire.FlagAsk != 0 {
		return k == wire.KindRequest || k == wire.KindTraced
	}
	return k >= wire.KindRequest && k <= wire.KindWait
}

// FuzzClientResponse answers a real client's call, over real yamux on
// loopback TCP, with arbitrary bytes and checks that the client makes of
// them what PROTOCOL.md says: the results of a well-formed response with one
// result per item, the server's error from an error message, and an error,
// never a wrong or misaligned answer, for anything else.
func FuzzClientResponse(f *testing.F) {
	answers := make(chan []byte, 1)
	done := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(f, err)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		sessions []*yamux.Session
	)
	// A raw server: the handshake by hand on every connection (the client
	// dials again after an answer of code 6), then every request on every
	// stream answered with the next fuzz input.
	answer := func(st *yamux.Stream) {
		// As a server does, answer the stream's requests until the client
		// closes it.
		defer wg.Done()
		defer st.Close()
		for {
			if _, _, err := wire.ReadFrame(st, 1<<20, nil); err != nil {
				return
			}
			select {
			case data := <-answers:
				// A server keeps the stream after one whole answer;
				// after anything else it ends it.
				whole := len(data) >= wire.HeaderSize && len(data) == wire.HeaderSize+int(binary.LittleEndian.Uint32(data[1:]))
				st.Write(data)
				if !whole {
					return
				}
			case <-done:
				return
			}
		}
	}
	serveConn := func(conn net.Conn) {
		defer wg.Done()
		sess, err := rawServerSession(conn)
		if err != nil {
			conn.Close()
			return
		}
		mu.Lock()
		sessions = append(sessions, sess)
		mu.Unlock()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go answer(st)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go serveConn(conn)
		}
	}()
	const limit = 1024
	c := NewClient(l.Addr().String(), Int64(), Int64(), WithLogger(nil), WithMaxMessageSize(limit))
	f.Cleanup(func() {
		close(done)
		c.Close() // which ends the server's sessions too
		l.Close()
		mu.Lock()
		for _, sess := range sessions {
			sess.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	items := []int64{1, -2, 3}

	results, err := Int64().Append(nil, []int64{2, -4, 6})
	require.NoError(f, err)
	f.Add(fuzzFrame(f, wire.KindResponse, results))
	f.Add(fuzzFrame(f, wire.KindResponse, results[:16]))       // too few results
	f.Add(fuzzFrame(f, wire.KindResponse, append(results, 0))) // not whole items
	f.Add(fuzzFrame(f, wire.KindResponse, append(results, results[:8]...)))
	f.Add(appendErrorFrame(nil, CodeBackend, "backend failed", limit))
	f.Add(appendErrorFrame(nil, CodeOverloaded, "", limit))
	f.Add(appendErrorFrame(nil, CodeUnavailable, "shutting down", limit)) // the client dials again
	f.Add([]byte{byte(wire.KindError), 0, 0, 0, 0})
	f.Add(fuzzFrame(f, wire.KindRequest, results))
	f.Add(fuzzFrame(f, wire.KindContinue, nil))
	f.Add(fuzzFrame(f, wire.KindWait, nil))
	f.Add([]byte{byte(wire.KindResponse) | wire.FlagAsk, 0x18, 0, 0, 0}) // the ask flag on a response
	f.Add([]byte{byte(wire.KindResponse), 0x01, 0x04, 0x00, 0x00})       // limit + 1
	f.Add(fuzzFrame(f, wire.KindResponse, results)[:10])
	f.Add([]byte{})
	failures := []wire.Failure{
		{What: wire.FailedItem, Code: uint8(CodeBackend), Message: "odd", Indices: []int{0}},
		{What: wire.FailedRoute, Route: "m/y", Code: uint8(CodeUnavailable), Message: "down", Indices: []int{1, 2}},
	}
	partial, err := wire.AppendFailures(nil, failures, len(items), true)
	require.NoError(f, err)
	f.Add(fuzzFrame(f, wire.KindPartial, append(partial, results...)))
	f.Add(fuzzFrame(f, wire.KindPartial, append(partial, results[:8]...))) // too few results
	partial, err = wire.AppendFailures(nil, failures[1:], len(items), false)
	require.NoError(f, err)
	f.Add(fuzzFrame(f, wire.KindPartial, partial))
	f.Add(fuzzFrame(f, wire.KindPartial, append(partial, results...))) // results after none
	f.Add(fuzzFrame(f, wire.KindPartial, []byte{0, 1}))                // no failures
	f.Add(fuzzFrame(f, wire.KindPartial, []byte{1, 1, 0, 1, 1, 'e', 1, 5, 0}))

	f.Fuzz(func(t *testing.T, data []byte) {
		// Within one stream window. A copy: the fuzzing engine reuses
		// data's array once this function returns, while the server may
		// still be looking at it.
		data = bytes.Clone(data[:min(len(data), 64<<10)])
		answers <- data
		if len(data) > wire.HeaderSize && data[0] == byte(wire.KindError) && data[wire.HeaderSize] == byte(CodeStreamIdle) {
			if n := binary.LittleEndian.Uint32(data[1:]); n >= 1 && n <= limit && uint64(len(data)) >= wire.HeaderSize+uint64(n) {
				// Code 9 says the request was not read: the client sends
				// it once more, on another stream, which gets the same
				// answer.
				go func() { answers <- data }()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), fuzzGuard)
		defer cancel()
		out, err := c.Process(ctx, items)
		require.NoError(t, ctx.Err(), "the call did not end")

		var n uint64
		if len(data) >= wire.HeaderSize {
			n = uint64(binary.LittleEndian.Uint32(data[1:]))
		}
		var re *RemoteError
		switch {
		case len(data) < wire.HeaderSize:
			require.ErrorIs(t, err, fanout.ErrInterrupted)
		case !knownKind(data[0]):
			require.ErrorIs(t, err, ErrProtocol)
		case n > limit:
			require.ErrorIs(t, err, ErrMessageTooLarge)
			require.False(t, errors.As(err, &re))
		case wire.HeaderSize+n > uint64(len(data)):
			require.ErrorIs(t, err, fanout.ErrInterrupted)
		case data[0]&^wire.FlagAsk == byte(wire.KindRequest), data[0]&^wire.FlagAsk == byte(wire.KindTraced),
			data[0] == byte(wire.KindContinue), data[0] == byte(wire.KindWait):
			// A request is never an answer; continue and wait frames answer
			// only large requests, and this one was small.
			require.ErrorIs(t, err, ErrProtocol)
		case data[0] == byte(wire.KindError) && n == 0:
			require.ErrorIs(t, err, ErrProtocol)
		case data[0] == byte(wire.KindError):
			require.ErrorAs(t, err, &re)
			require.Equal(t, Code(data[wire.HeaderSize]), re.Code)
			require.Equal(t, string(data[wire.HeaderSize+1:wire.HeaderSize+n]), re.Message)
			require.Equal(t, c.Addr(), re.Addr)
		case data[0] == byte(wire.KindPartial):
			// What the failures part holds is wire's to check (its own
			// tests); here the client must make of it a partial answer
			// that lists exactly those failures, or a protocol error.
			fs, answered, rest, perr := wire.ParseFailures(data[wire.HeaderSize:wire.HeaderSize+n], len(items))
			if perr != nil || answered && len(rest) != 8*len(items) {
				require.ErrorIs(t, err, ErrProtocol)
				break
			}
			var pe *fanout.PartialError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, len(fs), len(pe.Failed)+len(pe.Items))
			if !answered {
				require.Nil(t, out)
				return
			}
			want, err := Int64().Decode(nil, rest)
			require.NoError(t, err)
			require.Equal(t, want, out)
			return
		case n != 8*uint64(len(items)):
			require.ErrorIs(t, err, ErrProtocol)
		default:
			require.NoError(t, err)
			want, err := Int64().Decode(nil, data[wire.HeaderSize:wire.HeaderSize+n])
			require.NoError(t, err)
			require.Equal(t, want, out)
			return
		}
		require.Nil(t, out)
	})
}
