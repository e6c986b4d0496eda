package otelfanout_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/otelfanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// TestTraceAcrossThreeHops: a traced call from a client to a middle
// server, whose router's balancer calls server x over TCP, is one trace:
// client -> middle's serve -> call -> route -> attempt -> x's serve, each
// span the child of the one before it.
func TestTraceAcrossThreeHops(t *testing.T) {
	tel := newTelemetry(t)
	prop := transport.WithPropagator(otelfanout.Propagator())
	server := attribute.Key("server")

	x := transport.NewServer(square, transport.Int64(), transport.Int64(), quiet, prop,
		transport.WithObserver(tel.observer(otelfanout.WithAttributes(server.String("x")))))
	toX := transport.NewClient(serve(t, x), transport.Int64(), transport.Int64(), quiet, prop)
	defer toX.Close()

	middleObs := tel.observer(otelfanout.WithAttributes(server.String("middle")))
	bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{toX}, fanout.WithBalancerName("x"),
		fanout.WithReplicaNames("x1"), fanout.WithBalancerObserver(middleObs))
	require.NoError(t, err)
	defer bal.Close()
	router, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"x": bal, "y": half}, fanout.WithObserver(middleObs))
	require.NoError(t, err)
	middle := transport.NewServer(router, transport.Int64(), transport.Int64(), quiet, prop, transport.WithObserver(middleObs))
	client := transport.NewClient(serve(t, middle), transport.Int64(), transport.Int64(), quiet, prop)
	defer client.Close()

	ctx, root := tel.tp.Tracer("client").Start(context.Background(), "client")
	out, err := client.Process(ctx, []int64{-3, -4})
	root.End()
	require.NoError(t, err)
	assert.Equal(t, []int64{9, 16}, out)
	// Each server tells its observer of a call after writing its answer:
	// Close waits for that.
	require.NoError(t, middle.Close())
	require.NoError(t, x.Close())

	all := tel.spans.Ended()
	chain := []struct {
		name, server string
		kind         trace.SpanKind
	}{
		{"client", "", trace.SpanKindInternal},
		{"fanout.serve", "middle", trace.SpanKindServer},
		{"fanout.call", "middle", trace.SpanKindInternal},
		{"fanout.route x", "middle", trace.SpanKindInternal},
		{"fanout.attempt x", "middle", trace.SpanKindClient},
		{"fanout.serve", "x", trace.SpanKindServer},
	}
	require.Len(t, all, len(chain), "spans: %v", names(all))
	find := func(name, server string) sdktrace.ReadOnlySpan {
		for _, s := range all {
			if s.Name() == name && spanAttrs(s)["server"] == server {
				return s
			}
		}
		t.Fatalf("no span %q of server %q among %v", name, server, names(all))
		return nil
	}
	parent := find("client", "")
	assert.False(t, parent.Parent().IsValid(), "the client's span is the root")
	for _, link := range chain[1:] {
		s := find(link.name, link.server)
		assert.Equal(t, link.kind, s.SpanKind(), link.name)
		assert.Equal(t, root.SpanContext().TraceID(), s.SpanContext().TraceID(), "%s of %s is in the root's trace", link.name, link.server)
		assert.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID(), "%s of %s is the child of %s", link.name, link.server, parent.Name())
		if link.name == "fanout.serve" {
			assert.True(t, s.Parent().IsRemote(), "a served call's parent is the caller's span")
			assert.Equal(t, "2", spanAttrs(s)["fanout.items"])
		}
		assert.Equal(t, "ok", spanAttrs(s)["fanout.outcome"], link.name)
		parent = s
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
		if server := spanAttrs(s)["server"]; server != "" {
			out[i] += "@" + server
		}
	}
	return out
}
