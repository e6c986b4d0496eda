package otelfanout_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout/otelfanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// TestPropagator: Inject sends a valid span context's IDs, flags and
// tracestate, and nothing for a context without one; Extract makes the
// same span context the remote parent, drops a tracestate it cannot
// parse, and ignores an invalid trace context.
func TestPropagator(t *testing.T) {
	p := otelfanout.Propagator()
	state, err := trace.ParseTraceState("vendor=abc,other=1")
	require.NoError(t, err)
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67},
		TraceFlags: trace.FlagsSampled,
		TraceState: state,
	})
	tc, ok := p.Inject(trace.ContextWithSpanContext(context.Background(), sc))
	require.True(t, ok)
	assert.Equal(t, transport.TraceContext{
		TraceID: [16]byte{0x4b, 0xf9, 0x2f, 0x35}, SpanID: [8]byte{0x00, 0xf0, 0x67}, Flags: 1, State: "vendor=abc,other=1",
	}, tc)

	got := trace.SpanContextFromContext(p.Extract(context.Background(), tc))
	assert.True(t, got.IsRemote())
	assert.True(t, got.Equal(sc.WithRemote(true)), "%v", got)

	_, ok = p.Inject(context.Background())
	assert.False(t, ok, "a context without a span is not traced")

	tc.State = "not a tracestate"
	got = trace.SpanContextFromContext(p.Extract(context.Background(), tc))
	assert.Equal(t, sc.TraceID(), got.TraceID(), "the trace is kept")
	assert.Equal(t, 0, got.TraceState().Len(), "the tracestate is dropped")

	ctx := context.Background()
	assert.Equal(t, ctx, p.Extract(ctx, transport.TraceContext{}), "an invalid trace context is ignored")
}
