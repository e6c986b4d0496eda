package otelfanout

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout"
)

// ScopeName is the instrumentation scope of the observer's tracer and
// meter: this package's import path.
const ScopeName = "github.com/seed-c94cd834/fanout/otelfanout"

// Attribute keys; the package documentation says where each is set.
const (
	KeyRPCSystem = attribute.Key("rpc.system")     // always "fanout"
	KeyRoute     = attribute.Key("fanout.route")   // a route's name, or a balancer's
	KeyReplica   = attribute.Key("fanout.replica") // a balancer's replica
	KeyItems     = attribute.Key("fanout.items")   // the items of a piece of work
	KeyAttempt   = attribute.Key("fanout.attempt") // a call's attempt, from 1
	KeyHedge     = attribute.Key("fanout.hedge")   // whether an attempt is a hedge
	KeyMerged    = attribute.Key("fanout.merged")  // the callers of a merged call
	KeyOutcome   = attribute.Key("fanout.outcome") // fanout.Outcome of the work's error
)

// rpcSystem is the rpc.system attribute of every span and measurement.
var rpcSystem = KeyRPCSystem.String("fanout")

// durationBounds are the advisory bucket boundaries, in seconds, of the
// duration histograms: from 100µs, since a fanout call on a local network
// takes well under the 5ms of the RPC conventions' first bucket, to 10s.
var durationBounds = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// observer is the [fanout.Observer] of [NewObserver].
type observer struct {
	tracer trace.Tracer
	labels labelCache

	callDuration   metric.Float64Histogram // fanout.call.duration
	routeDuration  metric.Float64Histogram // fanout.route.duration
	routeItems     metric.Int64Counter     // fanout.route.items
	clientDuration metric.Float64Histogram // rpc.client.call.duration
	mergeDuration  metric.Float64Histogram // fanout.merge.duration
	mergeCallers   metric.Int64Histogram   // fanout.merge.callers
	serverDuration metric.Float64Histogram // rpc.server.call.duration
	serveItems     metric.Int64Counter     // fanout.serve.items
	serveSize      metric.Int64Histogram   // fanout.serve.request.size
}

var _ fanout.Observer = (*observer)(nil)

// NewObserver returns a [fanout.Observer] that turns the work it is told
// of into OpenTelemetry spans and metrics, as the package documentation
// lists them. Give it to a router ([fanout.WithObserver]), a balancer
// ([fanout.WithBalancerObserver]), a batcher ([fanout.WithBatcherObserver])
// or a transport server (transport.WithObserver); one observer may serve
// all of them at once. It is safe for concurrent use.
//
// An error the meter returns for an instrument is reported to
// [go.opentelemetry.io/otel.Handle]; the instrument it returned with the
// error is used, or one that records nothing if it returned none.
func NewObserver(opts ...Option) fanout.Observer {
	var cfg config
	for _, opt := range opts {
		opt(&cfg)
	}
	tp, mp := cfg.tracerProvider, cfg.meterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	o := &observer{
		tracer:         tp.Tracer(ScopeName),
		callDuration:   durationHistogram(m, "fanout.call.duration", "Duration of a fanout router's call."),
		routeDuration:  durationHistogram(m, "fanout.route.duration", "Duration of one route's part of a fanout router's call."),
		routeItems:     counter(m, "fanout.route.items", "Items a fanout router sent to a route."),
		clientDuration: durationHistogram(m, "rpc.client.call.duration", "Duration of a fanout balancer's call of one replica."),
		mergeDuration:  durationHistogram(m, "fanout.merge.duration", "Duration of a fanout batcher's merged call."),
		mergeCallers: histogram(m, "fanout.merge.callers", "{caller}", "Callers whose batches a fanout batcher merged into one call.",
			1, 2, 4, 8, 16, 32, 64, 128),
		serverDuration: durationHistogram(m, "rpc.server.call.duration", "Duration of a call a fanout transport server served."),
		serveItems:     counter(m, "fanout.serve.items", "Items of the calls a fanout transport server served."),
		serveSize: histogram(m, "fanout.serve.request.size", "By", "Size on the wire of a request a fanout transport server read.",
			64, 256, 1<<10, 4<<10, 16<<10, 64<<10, 256<<10, 1<<20, 4<<20, 16<<20),
	}
	o.labels.init(cfg.attrs)
	return o
}

// Start starts the span of w, a child of the span in ctx, and returns the
// context that carries it. The span's attributes are set once the span is
// known to record: a span the sampler drops costs no attribute.
func (o *observer) Start(ctx context.Context, w *fanout.Work) context.Context {
	l := o.labels.get(w)
	ctx, span := o.tracer.Start(ctx, l.name, l.start...)
	if span.IsRecording() {
		span.SetAttributes(l.attrs...)
		switch w.Kind {
		case fanout.WorkAttempt:
			span.SetAttributes(KeyItems.Int(w.Items), KeyAttempt.Int(w.Attempt))
		case fanout.WorkMerge:
			span.SetAttributes(KeyItems.Int(w.Items), KeyMerged.Int(w.Merged))
		default:
			span.SetAttributes(KeyItems.Int(w.Items))
		}
	}
	return ctx
}

// End ends the span that Start put in ctx and records w's measurements.
func (o *observer) End(ctx context.Context, w *fanout.Work) {
	l := o.labels.get(w)
	out := outcomeOf(w.Err)
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(out.attr)
		switch {
		case w.Err == nil:
		case out.index == partial:
			// An answer, if not a whole one: the parts that failed are
			// Error in spans of their own, when observed.
			span.RecordError(w.Err)
		default:
			span.SetStatus(codes.Error, w.Err.Error())
		}
	}
	span.End()

	record, add := l.options(out)
	seconds := w.Duration.Seconds()
	switch w.Kind {
	case fanout.WorkCall:
		o.callDuration.Record(ctx, seconds, record...)
	case fanout.WorkRoute:
		o.routeDuration.Record(ctx, seconds, record...)
		o.routeItems.Add(ctx, int64(w.Items), add...)
	case fanout.WorkAttempt:
		o.clientDuration.Record(ctx, seconds, record...)
	case fanout.WorkMerge:
		o.mergeDuration.Record(ctx, seconds, record...)
		o.mergeCallers.Record(ctx, int64(w.Merged), record...)
	case fanout.WorkServe:
		o.serverDuration.Record(ctx, seconds, record...)
		o.serveItems.Add(ctx, int64(w.Items), add...)
		o.serveSize.Record(ctx, int64(w.Bytes), record...)
	}
}

func durationHistogram(m metric.Meter, name, desc string) metric.Float64Histogram {
	h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	if err != nil {
		otel.Handle(err)
	}
	if h == nil {
		return noop.Float64Histogram{}
	}
	return h
}

func histogram(m metric.Meter, name, unit, desc string, bounds ...float64) metric.Int64Histogram {
	h, err := m.Int64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(bounds...))
	if err != nil {
		otel.Handle(err)
	}
	if h == nil {
		return noop.Int64Histogram{}
	}
	return h
}

func counter(m metric.Meter, name, desc string) metric.Int64Counter {
	c, err := m.Int64Counter(name, metric.WithUnit("{item}"), metric.WithDescription(desc))
	if err != nil {
		otel.Handle(err)
	}
	if c == nil {
		return noop.Int64Counter{}
	}
	return c
}
