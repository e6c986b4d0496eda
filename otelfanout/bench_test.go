package otelfanout_test

import (
	"context"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/otelfanout"
)

// discard is a span processor that drops every span it is handed, so that
// a benchmark counts what the SDK does to end a span, not an exporter.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// empty is an observer that does nothing: the cost of the library's hook.
type empty struct{}

func (empty) Start(ctx context.Context, _ *fanout.Work) context.Context { return ctx }
func (empty) End(context.Context, *fanout.Work)                         {}

// BenchmarkRouterCall measures a router call of 16 items over two routes,
// x a balancer of two replicas, so four pieces of work (a call, two routes,
// an attempt) per call: without an observer, with one that does nothing
// (the cost of the hook itself), and with NewObserver over the
// no-op providers, over the SDK's providers sampling nothing, and over
// them sampling everything. The SDK's meter provider has a reader that is
// never collected; its tracer provider hands its spans to a processor that
// drops them.
func BenchmarkRouterCall(b *testing.B) {
	sdkMeter := func(b *testing.B) *sdkmetric.MeterProvider {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { mp.Shutdown(context.Background()) })
		return mp
	}
	sdkTracer := func(b *testing.B, s sdktrace.Sampler) *sdktrace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(discard{}))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp
	}
	for _, bc := range []struct {
		name     string
		observer func(b *testing.B) fanout.Observer
	}{
		{"observer=none", func(*testing.B) fanout.Observer { return nil }},
		{"observer=empty", func(*testing.B) fanout.Observer { return empty{} }},
		{"observer=noop", func(*testing.B) fanout.Observer {
			return otelfanout.NewObserver(otelfanout.WithTracerProvider(tracenoop.NewTracerProvider()),
				otelfanout.WithMeterProvider(metricnoop.NewMeterProvider()))
		}},
		{"observer=sdk/sampled=none", func(b *testing.B) fanout.Observer {
			return otelfanout.NewObserver(otelfanout.WithTracerProvider(sdkTracer(b, sdktrace.NeverSample())),
				otelfanout.WithMeterProvider(sdkMeter(b)))
		}},
		{"observer=sdk/sampled=all", func(b *testing.B) fanout.Observer {
			return otelfanout.NewObserver(otelfanout.WithTracerProvider(sdkTracer(b, sdktrace.AlwaysSample())),
				otelfanout.WithMeterProvider(sdkMeter(b)))
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			obs := bc.observer(b)
			var balOpts []fanout.BalancerOption
			var routerOpts []fanout.RouterOption
			if obs != nil {
				balOpts = append(balOpts, fanout.WithBalancerName("x"), fanout.WithBalancerObserver(obs))
				routerOpts = append(routerOpts, fanout.WithObserver(obs))
			}
			bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{square, square}, balOpts...)
			if err != nil {
				b.Fatal(err)
			}
			defer bal.Close()
			r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"x": bal, "y": half}, routerOpts...)
			if err != nil {
				b.Fatal(err)
			}
			items := make([]int64, 16)
			for i := range items {
				items[i] = int64(i - 8)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Process(ctx, items); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
