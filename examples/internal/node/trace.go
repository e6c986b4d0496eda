package node

import (
	"context"
	"io"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/otelfanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// Tracing is what -trace-stdout sets up for a program: an OpenTelemetry
// tracer provider that samples every span and writes each one, as it
// ends, as a JSON object a line to its writer (the OTel stdout exporter),
// with the program's name as service.name; an observer that makes the
// spans (see package otelfanout); and the propagator that carries the
// trace across the wire, so that client -> middle -> x is one trace.
type Tracing struct {
	Provider   *sdktrace.TracerProvider
	Observer   fanout.Observer
	Propagator transport.Propagator
}

// NewTracing returns the Tracing of the program called name, writing its
// spans to w.
func NewTracing(name string, w io.Writer) (*Tracing, error) {
	exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(semconv.ServiceName(name))
	// A span is written as it ends (no batching): a program's spans are
	// all out when it exits, and a test can read them as they come.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	return &Tracing{
		Provider:   tp,
		Observer:   otelfanout.NewObserver(otelfanout.WithTracerProvider(tp), otelfanout.WithAttributes(attribute.String("fanout.program", name))),
		Propagator: otelfanout.Propagator(),
	}, nil
}

// Root starts a span named name as the root of a program's own work (the
// client's call), to be ended by the caller.
func (t *Tracing) Root(ctx context.Context, name string) (context.Context, trace.Span) {
	return t.Provider.Tracer("github.com/seed-c94cd834/fanout/examples").Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
}

// Shutdown writes out what is left and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.Provider.Shutdown(ctx) }
