package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

func TestNumberRangesDoNotOverflow(t *testing.T) {
	// The ends of the ranges number draws from.
	ends := map[int64]string{-maxNegated: "x", -1: "x", 0: "y", maxEven: "y", 1: "z", maxOdd: "z"}
	for n, route := range ends {
		got, err := xyz.Expected(n)
		require.NoError(t, err, "number %d", n)
		require.Equal(t, route, got.Backend, "number %d", n)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	routes := map[string]int{}
	for range 100_000 {
		n := number(rng)
		got, err := xyz.Expected(n)
		require.NoError(t, err, "number %d", n)
		routes[got.Backend]++
	}
	require.Len(t, routes, 3, "every route gets numbers")
}

// TestSummary checks the summary of a run in which more calls failed than
// were answered: the text says what requests and errors count, and the
// JSON gives seconds to the millisecond, with the rates of the run's
// whole time.
func TestSummary(t *testing.T) {
	var tl tally
	tl.requests.Store(3)
	tl.numbers.Store(30)
	tl.errors.Store(5)
	h := new(histogram)
	for range 3 {
		h.record(250 * time.Microsecond)
	}
	s := summarize(config{batch: 10, concurrency: 2}, &tl, h, 2*time.Second+123456789*time.Nanosecond)

	var text bytes.Buffer
	require.NoError(t, s.print(&text, false))
	lines := strings.Split(text.String(), "\n")
	require.Equal(t, "batch 10, concurrency 2, 2.12s", lines[0])
	require.Equal(t, "requests  3 calls answered (1/s)", lines[1])
	require.Equal(t, "numbers   30 numbers answered (14/s)", lines[2])
	require.Equal(t, "errors    5 calls failed (not counted in requests)", lines[3])
	require.Equal(t, "wrong     0 answers wrong", lines[4])
	require.True(t, strings.HasPrefix(lines[5], "latency   p50 "), lines[5])
	require.True(t, strings.HasSuffix(lines[5], " (of the calls answered)"), lines[5])

	var js bytes.Buffer
	require.NoError(t, s.print(&js, true))
	require.Contains(t, js.String(), `"seconds":2.123,`)
	var got map[string]float64
	require.NoError(t, json.Unmarshal(js.Bytes(), &got))
	require.InDelta(t, 3/2.123456789, got["requests_per_sec"], 1e-9)
	require.InDelta(t, 30/2.123456789, got["numbers_per_sec"], 1e-9)
	for _, field := range []string{"batch", "concurrency", "requests", "numbers", "errors", "wrong", "seconds",
		"requests_per_sec", "numbers_per_sec", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"} {
		require.Contains(t, got, field)
	}
}

// TestSummaryLatencies checks the latencies of the summary, in text and
// JSON, over 10,000 calls whose p50, p90, p99, p99.9 and max differ: each
// is reported within a bucket (1/128) above its true value.
func TestSummaryLatencies(t *testing.T) {
	h := new(histogram)
	for _, c := range []struct {
		calls int
		d     time.Duration
	}{
		{5000, 100 * time.Microsecond}, // p50 is the 5,000th call
		{4000, 200 * time.Microsecond}, // p90 the 9,000th
		{900, time.Millisecond},        // p99 the 9,900th
		{90, 10 * time.Millisecond},    // p99.9 the 9,990th
		{9, 100 * time.Millisecond},
		{1, time.Second}, // max
	} {
		for range c.calls {
			h.record(c.d)
		}
	}
	var tl tally
	tl.requests.Store(10_000)
	s := summarize(config{batch: 10, concurrency: 2}, &tl, h, time.Second)
	want := map[string]float64{"p50_us": 100, "p90_us": 200, "p99_us": 1000, "p999_us": 10_000, "max_us": 1_000_000}

	var js bytes.Buffer
	require.NoError(t, s.print(&js, true))
	var got map[string]float64
	require.NoError(t, json.Unmarshal(js.Bytes(), &got))
	for field, w := range want {
		require.GreaterOrEqual(t, got[field], w, field)
		require.Less(t, got[field]-w, w/128, field)
	}

	var text bytes.Buffer
	require.NoError(t, s.print(&text, false))
	line := strings.Split(text.String(), "\n")[5]
	require.Equal(t, fmt.Sprintf("latency   p50 %.0fµs  p90 %.0fµs  p99 %.0fµs  p99.9 %.0fµs  max %.0fµs (of the calls answered)",
		got["p50_us"], got["p90_us"], got["p99_us"], got["p999_us"], got["max_us"]), line)
}
