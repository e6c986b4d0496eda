package admin

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/stretchr/testify/require"
)

func TestHandlerEndpoints(t *testing.T) {
	m := NewMetrics()
	m.AddRoute("x", newReplicas("127.0.0.1:7001").read)
	base := serve(t, Handler(Options{Program: "middle", Metrics: m}))
	for _, tc := range []struct {
		path     string
		code     int
		contains string
	}{
		{"/healthz", http.StatusOK, "ok"},
		{"/readyz", http.StatusOK, "ready"},
		{"/metrics", http.StatusOK, "fanout_replica_up"},
		{"/status.json", http.StatusOK, `"program": "middle"`},
		{"/", http.StatusOK, "<title>fanout middle · status</title>"},
		{"/debug/pprof/", http.StatusOK, "goroutine"},
		{"/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{"/debug/pprof/cmdline", http.StatusOK, ""},
		{"/nope", http.StatusNotFound, ""},
		{"/index.html", http.StatusNotFound, ""},
		{"/metrics/x", http.StatusNotFound, ""},
		{"/healthz/", http.StatusNotFound, ""},
	} {
		code, body := get(t, base+tc.path)
		require.Equal(t, tc.code, code, tc.path)
		require.Contains(t, body, tc.contains, tc.path)
	}

	require.NotPanics(t, func() { Handler(Options{Metrics: m}) }, "a second handler of the same metrics")

	resp, err := http.Post(base+"/healthz", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestReadyzWhileDraining(t *testing.T) {
	var draining atomic.Bool
	base := serve(t, Handler(Options{Program: "x", Ready: func() error {
		if draining.Load() {
			return ErrDraining
		}
		return nil
	}}))
	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ready\n", body)
	st := status(t, base)
	require.True(t, st.Ready)
	require.Empty(t, st.NotReady)

	draining.Store(true)
	code, body = get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not ready: draining: shutting down\n", body)
	st = status(t, base)
	require.False(t, st.Ready)
	require.Equal(t, "draining: shutting down", st.NotReady)

	code, body = get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "alive while draining")
	require.Equal(t, "ok\n", body)
}

func TestReadyUntil(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := ReadyUntil(ctx)
	require.NoError(t, ready())
	cancel()
	require.ErrorIs(t, ready(), ErrDraining)
}

// The zero Options serve a nameless program, always ready, with metrics
// that nothing feeds.
func TestHandlerZeroOptions(t *testing.T) {
	base := serve(t, Handler(Options{}))
	code, body := get(t, base+"/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "<title>fanout · status</title>")
	require.Contains(t, scrape(t, base), "fanout_server_calls_total")
	st := status(t, base)
	require.True(t, st.Ready)
	require.Equal(t, []RouteStatus{}, st.Routes)
	require.Equal(t, []StateChange{}, st.Changes)
}

// The page loads nothing from elsewhere, and escapes the program's name.
func TestPageIsSelfContained(t *testing.T) {
	base := serve(t, Handler(Options{Program: `<b>"x"</b>`}))
	_, body := get(t, base+"/")
	require.NotContains(t, body, "<b>")
	require.Contains(t, body, "&lt;b&gt;")
	require.NotRegexp(t, regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`), body)
	require.NotRegexp(t, regexp.MustCompile(`(?i)<link|@import|url\(`), body)
	require.Contains(t, body, "<style>")
	require.Contains(t, body, "<script>")
}

func TestStatusJSON(t *testing.T) {
	m := NewMetrics()
	x := newReplicas("127.0.0.1:7001", "127.0.0.1:7011")
	since := time.Now().Add(-time.Minute).Truncate(time.Second)
	x.set(1, fanout.ReplicaEjected, since, errRefused)
	m.AddRoute("x", x.read)
	observe(m, attempt("x", "127.0.0.1:7001", false), time.Now(), 3*time.Millisecond, nil)
	base := serve(t, Handler(Options{Program: "middle", Metrics: m}))

	_, body := get(t, base+"/status.json")
	for _, field := range []string{`"program"`, `"time"`, `"ready"`, `"server"`, `"routes"`, `"changes"`, `"route"`,
		`"replicas"`, `"replica"`, `"state"`, `"since"`, `"error"`, `"calls"`, `"errors"`, `"in_flight"`, `"recent"`,
		`"p50_ns"`, `"p99_ns"`} {
		require.Contains(t, body, field)
	}
	require.Equal(t, 1, strings.Count(body, `"since"`), "only a replica out of service has one")

	st := status(t, base)
	require.Equal(t, "middle", st.Program)
	require.Len(t, st.Routes, 1)
	r := st.Routes[0].Replicas
	require.Equal(t, ReplicaStatus{Replica: "127.0.0.1:7001", State: StateHealthy,
		CallStats: CallStats{Calls: 1, Recent: 1, P50: 3 * time.Millisecond, P99: 3 * time.Millisecond}}, r[0])
	require.Equal(t, StateDown, r[1].State)
	require.True(t, since.Equal(r[1].Since))
	require.Equal(t, errRefused.Error(), r[1].Error)
}
