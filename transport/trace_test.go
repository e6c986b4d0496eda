package transport

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// testSpan is the span a testPropagator keeps in a context: a trace, the
// span's ID and its parent's.
type testSpan struct {
	trace        [16]byte
	id, parent   [8]byte
	flags        byte
	state        string
	extractedVia string // the server that extracted it
}

type spanKey struct{}

func spanOf(ctx context.Context) (testSpan, bool) {
	s, ok := ctx.Value(spanKey{}).(testSpan)
	return s, ok
}

// testPropagator carries testSpans. A server's Extract starts a child span
// of the caller's, with an ID of its own.
type testPropagator struct {
	name string
	mu   sync.Mutex
	next byte
}

func (p *testPropagator) Inject(ctx context.Context) (TraceContext, bool) {
	s, ok := spanOf(ctx)
	if !ok {
		return TraceContext{}, false
	}
	return TraceContext{TraceID: s.trace, SpanID: s.id, Flags: s.flags, State: s.state}, true
}

func (p *testPropagator) Extract(ctx context.Context, tc TraceContext) context.Context {
	p.mu.Lock()
	p.next++
	id := [8]byte{0xee, p.next}
	p.mu.Unlock()
	return context.WithValue(ctx, spanKey{}, testSpan{trace: tc.TraceID, id: id, parent: tc.SpanID, flags: tc.Flags, state: tc.State, extractedVia: p.name})
}

// servedWork records a server observer's WorkServe events.
type servedWork struct {
	mu     sync.Mutex
	ended  []fanout.Work
	traced []bool // whether the context handed to End carried a span
}

func (o *servedWork) Start(ctx context.Context, w *fanout.Work) context.Context { return ctx }
func (o *servedWork) End(ctx context.Context, w *fanout.Work) {
	_, traced := spanOf(ctx)
	o.mu.Lock()
	o.ended = append(o.ended, *w)
	o.traced = append(o.traced, traced)
	o.mu.Unlock()
}

func (o *servedWork) events() ([]fanout.Work, []bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]fanout.Work(nil), o.ended...), append([]bool(nil), o.traced...)
}

// spanBackend squares its items and sends the span its context carried, if
// any, to spans.
func spanBackend(spans chan<- testSpan) fanout.Backend[int64, int64] {
	return fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if s, ok := spanOf(ctx); ok {
			spans <- s
		}
		out := make([]int64, len(in))
		for i, v := range in {
			out[i] = v * v
		}
		return out, nil
	})
}

// unhex decodes a PROTOCOL.md hex dump, spaces ignored.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

// TestTracedRequestAsPROTOCOLSays sends the traced request of PROTOCOL.md's
// example, byte for byte, and checks that the server's propagator gets the
// W3C example's trace context, the backend runs under what it extracted,
// the observer counts the call, and the answer is the plain response.
func TestTracedRequestAsPROTOCOLSays(t *testing.T) {
	spans := make(chan testSpan, 1)
	obs := new(servedWork)
	srv := NewServer(spanBackend(spans), Int64(), Int64(), WithPropagator(&testPropagator{name: "x"}), WithObserver(obs), WithLogger(slog.New(slog.DiscardHandler)))
	addr := serveOn(t, srv)

	st := rawStream(t, addr, 1<<20)
	defer st.Close()
	req := unhex(t, "06 2b 00 00 00  00 94 35 77 00 00 00 00"+
		"00  4b f9 2f 35 77 b3 4d a6 a3 ce 92 9d 0e 0e 47 36  00 f0 67 aa 0b a9 02 b7  01  00"+
		"fd ff ff ff ff ff ff ff")
	require.Len(t, req, wire.HeaderSize+0x2b, "the example's N")
	_, err := st.Write(req)
	require.NoError(t, err)
	k, payload := readAnswer(t, st)
	require.Equal(t, wire.KindResponse, k)
	require.Equal(t, unhex(t, "09 00 00 00 00 00 00 00"), payload)

	s := <-spans
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", hex.EncodeToString(s.trace[:]))
	assert.Equal(t, "00f067aa0ba902b7", hex.EncodeToString(s.parent[:]), "the caller's span is the parent")
	assert.Equal(t, byte(1), s.flags)
	assert.Empty(t, s.state)

	require.NoError(t, srv.Close())
	ended, traced := obs.events()
	require.Len(t, ended, 1)
	assert.Equal(t, fanout.WorkServe, ended[0].Kind)
	assert.Equal(t, 1, ended[0].Items)
	assert.Equal(t, 0x2b, ended[0].Bytes)
	assert.NoError(t, ended[0].Err)
	assert.Equal(t, "ok", ended[0].Outcome())
	assert.Positive(t, ended[0].Duration)
	assert.Equal(t, []bool{true}, traced, "End sees the context the call ran under")
}

// serveOn serves srv on a loopback listener until the test ends.
func serveOn(t *testing.T, srv *Server[int64, int64]) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		require.ErrorIs(t, <-served, ErrServerClosed)
	})
	return l.Addr().String()
}

// TestTraceCrossesTwoHops: a traced call from a client to a server whose
// backend calls another server carries one trace across both hops, each
// hop's span the child of the one before.
func TestTraceCrossesTwoHops(t *testing.T) {
	spans := make(chan testSpan, 1)
	back := NewServer(spanBackend(spans), Int64(), Int64(), WithPropagator(&testPropagator{name: "back"}), WithLogger(slog.New(slog.DiscardHandler)))
	backAddr := serveOn(t, back)
	toBack := NewClient(backAddr, Int64(), Int64(), WithPropagator(&testPropagator{}))
	defer toBack.Close()

	middleSpans := make(chan testSpan, 1)
	middle := NewServer(fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		s, _ := spanOf(ctx)
		middleSpans <- s
		return toBack.Process(ctx, in)
	}), Int64(), Int64(), WithPropagator(&testPropagator{name: "middle"}), WithLogger(slog.New(slog.DiscardHandler)))
	middleAddr := serveOn(t, middle)
	c := NewClient(middleAddr, Int64(), Int64(), WithPropagator(&testPropagator{}))
	defer c.Close()

	root := testSpan{trace: [16]byte{1, 2, 3}, id: [8]byte{9, 9}, flags: 1, state: "vendor=abc"}
	ctx := context.WithValue(context.Background(), spanKey{}, root)
	out, err := c.Process(ctx, []int64{3, -4})
	require.NoError(t, err)
	assert.Equal(t, []int64{9, 16}, out)

	m := <-middleSpans
	b := <-spans
	assert.Equal(t, "middle", m.extractedVia)
	assert.Equal(t, root.trace, m.trace)
	assert.Equal(t, root.id, m.parent, "the middle's span is the client's child")
	assert.Equal(t, "vendor=abc", m.state, "tracestate crosses as it is")
	assert.Equal(t, "back", b.extractedVia)
	assert.Equal(t, root.trace, b.trace, "one trace across both hops")
	assert.Equal(t, m.id, b.parent, "the back end's span is the middle's child")

	// A call whose context is not traced sends no trace context.
	_, err = c.Process(context.Background(), []int64{2})
	require.NoError(t, err)
	m = <-middleSpans
	assert.Equal(t, testSpan{}, m)
}

// TestMalformedTraceContextIsRefused: a traced request whose trace context
// is malformed is refused with code 2, naming the trace context, and the
// server goes on serving the connection's other calls. Trace IDs of all
// zeros are not refused, only ignored.
func TestMalformedTraceContextIsRefused(t *testing.T) {
	spans := make(chan testSpan, 1)
	obs := new(servedWork)
	srv := NewServer(spanBackend(spans), Int64(), Int64(), WithPropagator(&testPropagator{name: "x"}), WithObserver(obs), WithLogger(slog.New(slog.DiscardHandler)))
	addr := serveOn(t, srv)
	sess := rawClientSession(t, addr, 1<<20)
	defer sess.Close()

	good := wire.Trace{TraceID: [16]byte{1}, SpanID: [8]byte{2}}
	item := binary.LittleEndian.AppendUint64(nil, 5)
	traced := func(trace []byte) []byte {
		buf := wire.AppendHeader(nil, wire.KindTraced)
		buf = append(buf, make([]byte, wire.RequestPrefixSize)...)
		buf = append(buf, trace...)
		buf = append(buf, item...)
		setFrameLength(buf, 0)
		return buf
	}
	valid := wire.AppendTrace(nil, &good)
	for _, tc := range []struct {
		name, want string
		trace      []byte
	}{
		{"version 1", "version 1, want 0", append([]byte{1}, valid[1:]...)},
		{"too short", "trace context: 13 bytes, want at least 27", valid[:5]},
		{"tracestate over 512", "bad tracestate length", append(valid[:26:26], binary.AppendUvarint(nil, 513)...)},
		{"tracestate past the end", "tracestate of 100 bytes, 8 left", append(valid[:26:26], 100)},
		{"tracestate not ASCII", "byte 0x7 is not printable", append(valid[:26:26], 1, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := sess.OpenStream()
			require.NoError(t, err)
			defer st.Close()
			_, err = st.Write(traced(tc.trace))
			require.NoError(t, err)
			requireErrorFrame(t, st, CodeBadRequest, tc.want)
		})
	}

	// All-zero IDs: served, untraced.
	st, err := sess.OpenStream()
	require.NoError(t, err)
	_, err = st.Write(traced(wire.AppendTrace(nil, &wire.Trace{})))
	require.NoError(t, err)
	k, payload := readAnswer(t, st)
	require.Equal(t, wire.KindResponse, k)
	assert.Equal(t, item5squared, payload)
	// And a valid one on the same stream, served with its trace.
	_, err = st.Write(traced(valid))
	require.NoError(t, err)
	k, payload = readAnswer(t, st)
	require.Equal(t, wire.KindResponse, k)
	assert.Equal(t, item5squared, payload)
	s := <-spans
	assert.Equal(t, good.TraceID, s.trace)
	st.Close()

	require.NoError(t, srv.Close())
	ended, _ := obs.events()
	var refused, ok int
	for _, w := range ended {
		var re *RemoteError
		switch {
		case w.Err == nil:
			ok++
		case errors.As(w.Err, &re) && re.Code == CodeBadRequest:
			refused++
			assert.Equal(t, "error", w.Outcome())
			assert.Zero(t, w.Items, "a refused request was not decoded")
		default:
			t.Errorf("unexpected outcome %v", w.Err)
		}
	}
	assert.Equal(t, 5, refused, "each malformed trace context is a refusal the observer sees")
	assert.Equal(t, 2, ok)
}

var item5squared = binary.LittleEndian.AppendUint64(nil, 25)

// TestTraceContextRoundTrip: what AppendTrace writes, ParseTrace reads, and
// a tracestate longer than W3C allows is dropped.
func TestTraceContextRoundTrip(t *testing.T) {
	in := wire.Trace{TraceID: [16]byte{0xab, 1}, SpanID: [8]byte{0xcd}, Flags: 1, State: "a=1,b=2"}
	buf := wire.AppendTrace(nil, &in)
	buf = append(buf, "rest"...)
	out, rest, err := wire.ParseTrace(buf)
	require.NoError(t, err)
	assert.Equal(t, in, out)
	assert.Equal(t, "rest", string(rest))

	in.State = strings.Repeat("k", wire.MaxTraceState+1)
	out, _, err = wire.ParseTrace(wire.AppendTrace(nil, &in))
	require.NoError(t, err)
	assert.Empty(t, out.State)
	assert.Equal(t, in.TraceID, out.TraceID)
}
