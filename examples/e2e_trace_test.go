package examples_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// span is what the OpenTelemetry stdout exporter writes of a span.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	SpanKind    int
}

// spans parses the spans in out, a JSON object a line.
func spans(t *testing.T, out string) []span {
	t.Helper()
	var all []span
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") || !strings.Contains(line, `"SpanContext"`) {
			continue // a log line, on the client's standard error
		}
		var s span
		require.NoError(t, json.Unmarshal([]byte(line), &s), line)
		all = append(all, s)
	}
	return all
}

// one returns the span of trace named name whose parent is parent, and
// fails the test unless there is exactly one.
func one(t *testing.T, all []span, trace, name, parent string) span {
	t.Helper()
	var found []span
	for _, s := range all {
		if s.SpanContext.TraceID == trace && s.Name == name && s.Parent.SpanID == parent {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "span %q under %s in trace %s among %+v", name, parent, trace, all)
	return found[0]
}

// TestTraceAcrossThreeHops: with -trace-stdout on the middle layer and the
// backends and -trace-stderr on the client, one call is one trace: the
// client's span, the middle layer's serve span its child (the trace
// context crossed the wire), then the router's call, the route, its
// batcher's call, the attempt on a replica, and the backend's serve span, the attempt's child
// across the second hop.
func TestTraceAcrossThreeHops(t *testing.T) {
	skipShort(t)
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-trace-stdout")
	y := startServer(t, "y", "-listen", "127.0.0.1:0", "-trace-stdout")
	z := startServer(t, "z", "-listen", "127.0.0.1:0", "-trace-stdout")
	middle := startServer(t, "middle", "-listen", "127.0.0.1:0", "-x", x.addr, "-y", y.addr, "-z", z.addr, "-trace-stdout")

	out := runProgram(t, "", "client", "-addr", middle.addr, "-trace-stderr", "-json", "--", "-3", "4")
	require.Equal(t, 0, out.code, out.stderr)
	checkJSON(t, out.stdout, -3, 4)
	roots := spans(t, out.stderr)
	require.Len(t, roots, 1, out.stderr)
	root := roots[0]
	require.Equal(t, "client.call", root.Name)
	trace := root.SpanContext.TraceID

	// A span is written as it ends, and a server's serve span ends once
	// its answer is written, maybe after the client has read it: wait for
	// it. The middle layer serves this call only, and its serve span ends
	// after every span under it. x and y write spans of the middle layer's
	// probes too, each in a trace of its own.
	middle.out.wait(t, "middle", `"Name":"fanout.serve"`, 1, middle.exited)
	x.out.wait(t, "x", `"TraceID":"`+trace+`"`, 1, x.exited)
	y.out.wait(t, "y", `"TraceID":"`+trace+`"`, 1, y.exited)

	m := spans(t, middle.out.String())
	serve := one(t, m, trace, "fanout.serve", root.SpanContext.SpanID)
	call := one(t, m, trace, "fanout.call", serve.SpanContext.SpanID)
	for _, tc := range []struct {
		route  string
		server *server
	}{{"x", x}, {"y", y}} {
		route := one(t, m, trace, "fanout.route "+tc.route, call.SpanContext.SpanID)
		// The route's batcher sends a call alone, on its caller's
		// context, when nothing waits to be merged with it: the merge
		// span is then in the tree, between the route and the attempt.
		merge := one(t, m, trace, "fanout.merge", route.SpanContext.SpanID)
		attempt := one(t, m, trace, "fanout.attempt "+tc.route, merge.SpanContext.SpanID)
		backend := one(t, spans(t, tc.server.out.String()), trace, "fanout.serve", attempt.SpanContext.SpanID)
		assert.NotEmpty(t, backend.SpanContext.SpanID, "%s's span is the attempt's child, across the wire", tc.route)
	}
	for _, s := range spans(t, z.out.String()) {
		assert.NotEqual(t, trace, s.SpanContext.TraceID, "z got no number of this call")
	}
}
