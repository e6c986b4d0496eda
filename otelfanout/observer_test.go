package otelfanout_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/otelfanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// failingOver returns two replicas named a and b: whichever is called
// first fails with ErrUnavailable, and sends its name to failed; every
// other call is answered with squares.
func failingOver() (replicas []fanout.Backend[int64, int64], failed <-chan string) {
	var calls atomic.Int32
	first := make(chan string, 1)
	replica := func(name string) fanout.Backend[int64, int64] {
		return fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
			if calls.Add(1) == 1 {
				first <- name
				return nil, fmt.Errorf("replica %s: %w", name, fanout.ErrUnavailable)
			}
			return square.Process(ctx, in)
		})
	}
	return []fanout.Backend[int64, int64]{replica("a"), replica("b")}, first
}

// TestRouterSpansAndMetrics: a router of two routes, x a balancer of two
// replicas whose first attempt fails over to the other, records the span
// tree call -> route -> attempts with their names, kinds, attributes and
// statuses, and the documented metrics with their attributes.
func TestRouterSpansAndMetrics(t *testing.T) {
	tel := newTelemetry(t)
	obs := tel.observer()
	replicas, failed := failingOver()
	bal, err := fanout.NewBalancer(replicas, fanout.WithReplicaNames("a", "b"), fanout.WithBalancerName("x"), fanout.WithBalancerObserver(obs))
	require.NoError(t, err)
	defer bal.Close()
	r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"x": bal, "y": half}, fanout.WithObserver(obs))
	require.NoError(t, err)

	out, err := r.Process(context.Background(), []int64{-3, 4, -5})
	require.NoError(t, err)
	assert.Equal(t, []int64{9, 2, 25}, out)
	down := <-failed
	up := map[string]string{"a": "b", "b": "a"}[down]

	byName, all := tel.ended()
	require.Len(t, all, 5, "a call, two routes, two attempts")
	call, x, y := byName["fanout.call"], byName["fanout.route x"], byName["fanout.route y"]
	require.NotNil(t, call)
	require.NotNil(t, x)
	require.NotNil(t, y)
	var attempts [2]sdktrace.ReadOnlySpan
	for _, s := range all {
		if s.Name() == "fanout.attempt x" {
			n := spanAttrs(s)["fanout.attempt"]
			require.Contains(t, []string{"1", "2"}, n)
			attempts[map[string]int{"1": 0, "2": 1}[n]] = s
		}
	}
	require.NotNil(t, attempts[0], "the first attempt")
	require.NotNil(t, attempts[1], "the second attempt")

	assert.False(t, call.Parent().IsValid(), "the call is the root")
	for _, s := range all {
		assert.Equal(t, call.SpanContext().TraceID(), s.SpanContext().TraceID(), s.Name())
	}
	assert.Equal(t, call.SpanContext().SpanID(), x.Parent().SpanID())
	assert.Equal(t, call.SpanContext().SpanID(), y.Parent().SpanID())
	for _, a := range attempts {
		assert.Equal(t, x.SpanContext().SpanID(), a.Parent().SpanID(), "an attempt is its route's child")
		assert.Equal(t, trace.SpanKindClient, a.SpanKind())
	}
	for _, s := range []sdktrace.ReadOnlySpan{call, x, y} {
		assert.Equal(t, trace.SpanKindInternal, s.SpanKind(), s.Name())
		assert.Equal(t, codes.Unset, s.Status().Code, s.Name())
	}

	assert.Equal(t, map[string]string{"rpc.system": "fanout", "fanout.items": "3", "fanout.outcome": "ok"}, spanAttrs(call))
	assert.Equal(t, map[string]string{"rpc.system": "fanout", "fanout.route": "x", "fanout.items": "2", "fanout.outcome": "ok"}, spanAttrs(x))
	assert.Equal(t, map[string]string{"rpc.system": "fanout", "fanout.route": "y", "fanout.items": "1", "fanout.outcome": "ok"}, spanAttrs(y))
	assert.Equal(t, map[string]string{
		"rpc.system": "fanout", "fanout.route": "x", "fanout.replica": down, "fanout.hedge": "false",
		"fanout.items": "2", "fanout.attempt": "1", "fanout.outcome": "unavailable",
	}, spanAttrs(attempts[0]))
	assert.Equal(t, map[string]string{
		"rpc.system": "fanout", "fanout.route": "x", "fanout.replica": up, "fanout.hedge": "false",
		"fanout.items": "2", "fanout.attempt": "2", "fanout.outcome": "ok",
	}, spanAttrs(attempts[1]))
	assert.Equal(t, sdktrace.Status{Code: codes.Error, Description: "replica " + down + ": backend unavailable"}, attempts[0].Status())
	assert.Equal(t, codes.Unset, attempts[1].Status().Code)

	m := tel.metrics(t)
	assert.Equal(t, map[string]int64{"fanout.outcome=ok rpc.system=fanout": 1}, points(t, m["fanout.call.duration"]))
	assert.Equal(t, map[string]int64{
		"fanout.outcome=ok fanout.route=x rpc.system=fanout": 1,
		"fanout.outcome=ok fanout.route=y rpc.system=fanout": 1,
	}, points(t, m["fanout.route.duration"]))
	assert.Equal(t, map[string]int64{
		"fanout.outcome=ok fanout.route=x rpc.system=fanout": 2,
		"fanout.outcome=ok fanout.route=y rpc.system=fanout": 1,
	}, points(t, m["fanout.route.items"]))
	assert.Equal(t, map[string]int64{
		"fanout.hedge=false fanout.outcome=unavailable fanout.replica=" + down + " fanout.route=x rpc.system=fanout": 1,
		"fanout.hedge=false fanout.outcome=ok fanout.replica=" + up + " fanout.route=x rpc.system=fanout":            1,
	}, points(t, m["rpc.client.call.duration"]))
	for _, name := range []string{"fanout.call.duration", "fanout.route.duration", "rpc.client.call.duration"} {
		assert.Equal(t, "s", m[name].Unit, name)
	}
	assert.Equal(t, "{item}", m["fanout.route.items"].Unit)
}

// TestSpanStatus: a failed call's span and its failed route's have status
// Error with the error's message; a partial answer's call span is left
// unset, the error recorded on it as an exception event.
func TestSpanStatus(t *testing.T) {
	boom := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, errors.New("boom")
	})
	for _, tc := range []struct {
		name        string
		opts        []fanout.RouterOption
		items       []int64
		callStatus  codes.Code
		callOutcome string
		exception   bool
	}{
		{"failed", nil, []int64{1}, codes.Error, "error", false},
		{"partial", []fanout.RouterOption{fanout.WithPartialResults()}, []int64{-1, 1}, codes.Unset, "partial", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tel := newTelemetry(t)
			obs := tel.observer()
			r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"x": square, "y": boom},
				append(tc.opts, fanout.WithObserver(obs))...)
			require.NoError(t, err)
			_, callErr := r.Process(context.Background(), tc.items)
			require.Error(t, callErr)

			byName, _ := tel.ended()
			call, y := byName["fanout.call"], byName["fanout.route y"]
			require.NotNil(t, call)
			require.NotNil(t, y)
			assert.Equal(t, sdktrace.Status{Code: codes.Error, Description: "boom"}, y.Status())
			assert.Equal(t, "error", spanAttrs(y)["fanout.outcome"])
			assert.Equal(t, tc.callStatus, call.Status().Code)
			assert.Equal(t, tc.callOutcome, spanAttrs(call)["fanout.outcome"])
			if tc.callStatus == codes.Error {
				assert.Equal(t, callErr.Error(), call.Status().Description)
			}
			var exceptions []string
			for _, e := range call.Events() {
				if e.Name == "exception" {
					for _, kv := range e.Attributes {
						if kv.Key == "exception.message" {
							exceptions = append(exceptions, kv.Value.AsString())
						}
					}
				}
			}
			if tc.exception {
				assert.Equal(t, []string{callErr.Error()}, exceptions)
			} else {
				assert.Empty(t, exceptions)
			}
			assert.Equal(t, map[string]int64{"fanout.outcome=" + tc.callOutcome + " rpc.system=fanout": 1},
				points(t, tel.metrics(t)["fanout.call.duration"]))
		})
	}
}

// TestInstrumentsAsDocumented: work of every kind (a router's call and
// route, a batcher's merge, a balancer's attempt, a server's served call)
// records the instruments the package documentation lists, with their
// units, kinds and attributes, and nothing else.
func TestInstrumentsAsDocumented(t *testing.T) {
	tel := newTelemetry(t)
	obs := tel.observer(otelfanout.WithAttributes(attribute.String("service.role", "test")))
	srv := transport.NewServer(square, transport.Int64(), transport.Int64(), quiet, transport.WithObserver(obs))
	client := transport.NewClient(serve(t, srv), transport.Int64(), transport.Int64(), quiet)
	defer client.Close()
	bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{client}, fanout.WithBalancerName("x"),
		fanout.WithReplicaNames("x1"), fanout.WithBalancerObserver(obs))
	require.NoError(t, err)
	defer bal.Close()
	batcher, err := fanout.NewBatcher[int64, int64](bal, fanout.WithBatcherObserver(obs))
	require.NoError(t, err)
	r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"x": batcher, "y": half}, fanout.WithObserver(obs))
	require.NoError(t, err)

	out, err := r.Process(context.Background(), []int64{-2, 6, -3})
	require.NoError(t, err)
	assert.Equal(t, []int64{4, 3, 9}, out)
	// The server's observer is told of a call after its answer is
	// written; Close waits for that.
	require.NoError(t, srv.Close())

	const common = "fanout.outcome=ok rpc.system=fanout service.role=test"
	want := map[string]struct {
		unit   string
		points map[string]int64 // a histogram's count, a counter's value
	}{
		"fanout.call.duration":      {"s", map[string]int64{common: 1}},
		"fanout.route.duration":     {"s", map[string]int64{"fanout.outcome=ok fanout.route=x rpc.system=fanout service.role=test": 1, "fanout.outcome=ok fanout.route=y rpc.system=fanout service.role=test": 1}},
		"fanout.route.items":        {"{item}", map[string]int64{"fanout.outcome=ok fanout.route=x rpc.system=fanout service.role=test": 2, "fanout.outcome=ok fanout.route=y rpc.system=fanout service.role=test": 1}},
		"rpc.client.call.duration":  {"s", map[string]int64{"fanout.hedge=false fanout.outcome=ok fanout.replica=x1 fanout.route=x rpc.system=fanout service.role=test": 1}},
		"fanout.merge.duration":     {"s", map[string]int64{common: 1}},
		"fanout.merge.callers":      {"{caller}", map[string]int64{common: 1}},
		"rpc.server.call.duration":  {"s", map[string]int64{common: 1}},
		"fanout.serve.items":        {"{item}", map[string]int64{common: 2}},
		"fanout.serve.request.size": {"By", map[string]int64{common: 1}},
	}
	got := tel.metrics(t)
	assert.ElementsMatch(t, slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(got)))
	for name, w := range want {
		m, ok := got[name]
		if !assert.True(t, ok, name) {
			continue
		}
		assert.Equal(t, w.unit, m.Unit, name)
		assert.NotEmpty(t, m.Description, name)
		assert.Equal(t, w.points, points(t, m), name)
	}
}

// TestDefaultProviders: without options, the observer reports to the
// global providers.
func TestDefaultProviders(t *testing.T) {
	tel := newTelemetry(t)
	otel.SetTracerProvider(tel.tp)
	otel.SetMeterProvider(tel.mp)
	defer func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
	}()
	r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"x": square, "y": half},
		fanout.WithObserver(otelfanout.NewObserver()))
	require.NoError(t, err)
	_, err = r.Process(context.Background(), []int64{1})
	require.NoError(t, err)
	byName, _ := tel.ended()
	assert.Contains(t, byName, "fanout.call")
	assert.Contains(t, tel.metrics(t), "fanout.call.duration")
}

// TestManyRoutesConcurrently: an observer told of work from many
// goroutines at once, of more routes than it keeps the attributes of,
// measures each route under its own attributes.
func TestManyRoutesConcurrently(t *testing.T) {
	tel := newTelemetry(t)
	obs := tel.observer()
	const routes, goroutines = 1500, 4
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range routes {
				w := &fanout.Work{Kind: fanout.WorkRoute, Route: fmt.Sprint("r", (i+g*routes/goroutines)%routes), Items: 1}
				ctx := obs.Start(context.Background(), w)
				obs.End(ctx, w)
			}
		})
	}
	wg.Wait()
	items := points(t, tel.metrics(t)["fanout.route.items"])
	require.Len(t, items, routes)
	for i := range routes {
		assert.Equal(t, int64(goroutines), items[fmt.Sprintf("fanout.outcome=ok fanout.route=r%d rpc.system=fanout", i)], i)
	}
	byName, all := tel.ended()
	assert.Len(t, all, routes*goroutines)
	assert.Equal(t, "r1499", spanAttrs(byName["fanout.route r1499"])["fanout.route"])
}
