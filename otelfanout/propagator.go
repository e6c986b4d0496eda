package otelfanout

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout/transport"
)

// Propagator returns the [transport.Propagator] that carries OpenTelemetry
// span contexts across transport calls. Give it to both sides with
// transport.WithPropagator: a client sends the span context of each call's
// context, when it is valid; a server runs each traced request under the
// remote span context it brought, so that the span a server's
// [NewObserver] starts for the call is the child of the caller's span.
//
// Trace and span IDs, trace flags and tracestate cross as they are. A
// tracestate the server cannot parse (see [trace.ParseTraceState]) is
// dropped, and the call keeps its trace. It is safe for concurrent use.
func Propagator() transport.Propagator { return propagator{} }

type propagator struct{}

func (propagator) Inject(ctx context.Context) (transport.TraceContext, bool) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return transport.TraceContext{}, false
	}
	return transport.TraceContext{
		TraceID: sc.TraceID(),
		SpanID:  sc.SpanID(),
		Flags:   byte(sc.TraceFlags()),
		State:   sc.TraceState().String(),
	}, true
}

func (propagator) Extract(ctx context.Context, tc transport.TraceContext) context.Context {
	state, err := trace.ParseTraceState(tc.State)
	if err != nil {
		state = trace.TraceState{}
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tc.TraceID,
		SpanID:     tc.SpanID,
		TraceFlags: trace.TraceFlags(tc.Flags),
		TraceState: state,
		Remote:     true,
	})
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}
