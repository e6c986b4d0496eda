package otelfanout_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/otelfanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// telemetry is an SDK tracer provider that records every span, sampling
// all, and an SDK meter provider read by hand.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tel.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tel.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() {
		require.NoError(t, tel.tp.Shutdown(context.Background()))
		require.NoError(t, tel.mp.Shutdown(context.Background()))
	})
	return tel
}

// observer returns an observer that reports to tel.
func (tel *telemetry) observer(opts ...otelfanout.Option) fanout.Observer {
	return otelfanout.NewObserver(append([]otelfanout.Option{
		otelfanout.WithTracerProvider(tel.tp), otelfanout.WithMeterProvider(tel.mp),
	}, opts...)...)
}

// ended returns the spans ended so far, by name; a name ended more than
// once holds the first.
func (tel *telemetry) ended() (map[string]sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
	all := tel.spans.Ended()
	byName := make(map[string]sdktrace.ReadOnlySpan, len(all))
	for _, s := range all {
		if _, ok := byName[s.Name()]; !ok {
			byName[s.Name()] = s
		}
	}
	return byName, all
}

// metrics collects every metric of the meter provider, by name.
func (tel *telemetry) metrics(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tel.reader.Collect(context.Background(), &rm))
	out := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, otelfanout.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// labels writes a set as "k=v k=v", sorted by key.
func labels(set attribute.Set) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		parts = append(parts, fmt.Sprintf("%s=%s", kv.Key, kv.Value.Emit()))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// spanAttrs returns a span's attributes as labels does.
func spanAttrs(s sdktrace.ReadOnlySpan) map[string]string {
	out := make(map[string]string)
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

// points returns a metric's points: a histogram's count, a counter's
// value, per attribute set.
func points(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out[labels(p.Attributes)] = int64(p.Count)
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			out[labels(p.Attributes)] = int64(p.Count)
		}
	case metricdata.Sum[int64]:
		require.True(t, d.IsMonotonic, "%s is a counter", m.Name)
		for _, p := range d.DataPoints {
			out[labels(p.Attributes)] = p.Value
		}
	default:
		t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
	}
	return out
}

// square answers n*n for each n.
var square = fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
	out := make([]int64, len(in))
	for i, n := range in {
		out[i] = n * n
	}
	return out, nil
})

// half answers n/2 for each n.
var half = fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
	out := make([]int64, len(in))
	for i, n := range in {
		out[i] = n / 2
	}
	return out, nil
})

// bySign routes negative numbers to "x", the others to "y".
var bySign = fanout.ClassifierFunc[int64](func(n int64) (string, error) {
	if n < 0 {
		return "x", nil
	}
	return "y", nil
})

// serve serves srv on a loopback listener until the test ends, and
// returns its address.
func serve(t *testing.T, srv *transport.Server[int64, int64]) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, transport.ErrServerClosed)
	})
	return l.Addr().String()
}

// quiet discards the transport's log lines.
var quiet = transport.WithLogger(nil)
