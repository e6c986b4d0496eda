package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is the start of the runs of the tests, on a clock of their own.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestProgressNotOnATerminal checks the lines written once a second when
// standard error is not a terminal: their wording, read by tests and
// logs, with the requests answered in the second before, and nothing more
// when the run ends.
func TestProgressNotOnATerminal(t *testing.T) {
	var out bytes.Buffer
	m := newMeter(&out, false, t0, 10*time.Second)
	require.Equal(t, time.Second, m.interval())
	m.update(t0.Add(time.Second), counts{requests: 5, numbers: 50})
	m.update(t0.Add(2*time.Second), counts{requests: 12, numbers: 120, errors: 1, wrong: 2})
	m.note("loadgen: first problem: something")
	m.finish(counts{requests: 13, numbers: 130, errors: 1, wrong: 2})
	require.Equal(t, "loadgen:   1s  5 requests answered (5/s)  50 numbers  0 errors  0 wrong\n"+
		"loadgen:   2s  12 requests answered (7/s)  120 numbers  1 errors  2 wrong\n"+
		"loadgen: first problem: something\n", out.String())
}

// TestProgressOnATerminal checks the line rewritten in place on a
// terminal: back to its start, the bar, the time elapsed of the duration,
// the requests answered, their rate over the last second, errors and
// wrong answers, and spaces over what is left of a longer line before. A
// note clears the line and takes one of its own; the end of the run
// updates the line and ends it.
func TestProgressOnATerminal(t *testing.T) {
	var out bytes.Buffer
	m := newMeter(&out, true, t0, 10*time.Second)
	require.Equal(t, 200*time.Millisecond, m.interval())
	step := func(at time.Duration, c counts) string {
		out.Reset()
		m.update(t0.Add(at), c)
		return out.String()
	}

	// Within the first second, the rate is that since the start.
	first := step(200*time.Millisecond, counts{requests: 100})
	require.Equal(t, "\r[--------------------] 0.2s/10s  100 answered  500 req/s  0 errors  0 wrong", first)

	// Five updates a second: from the sixth on, the rate is over the
	// last second, 1000 requests in it.
	for i := 2; i <= 6; i++ {
		step(time.Duration(i)*200*time.Millisecond, counts{requests: int64(i) * 100})
	}
	require.Equal(t, "\r[##------------------] 1.4s/10s  1200 answered  1000 req/s  3 errors  1 wrong",
		step(1400*time.Millisecond, counts{requests: 1200, errors: 3, wrong: 1}))

	// Half way, and no request in the last second: a shorter line, so
	// spaces clear what is left of the one before.
	before := len("[##------------------] 1.4s/10s  1200 answered  1000 req/s  3 errors  1 wrong")
	line := "[##########----------] 5.0s/10s  1200 answered  0 req/s  3 errors  1 wrong"
	require.Equal(t, "\r"+line+strings.Repeat(" ", before-len(line)), step(5*time.Second, counts{requests: 1200, errors: 3, wrong: 1}))

	out.Reset()
	m.note("loadgen: first problem: something")
	require.Equal(t, "\r"+strings.Repeat(" ", len(line))+"\r"+"loadgen: first problem: something\n", out.String())

	// Past the duration (calls in flight are waited for), the bar is
	// full. The rate is since the update at 5s, the newest a second old:
	// 800 requests in 5.3s.
	out.Reset()
	m.clock = func() time.Time { return t0.Add(10*time.Second + 300*time.Millisecond) }
	m.finish(counts{requests: 2000, errors: 3, wrong: 1})
	require.Equal(t, "\r[####################] 10.3s/10s  2000 answered  151 req/s  3 errors  1 wrong\n", out.String())
}

// TestProgressFitsTheTerminal checks that a line as wide as the terminal
// is cut to one column less, so that it never wraps.
func TestProgressFitsTheTerminal(t *testing.T) {
	var out bytes.Buffer
	m := newMeter(&out, true, t0, 10*time.Second)
	m.width = 40
	m.update(t0.Add(time.Second), counts{requests: 100})
	require.Equal(t, "\r"+"[##------------------] 1.0s/10s  100 answered  100 req/s  0 errors  0 wrong"[:39], out.String())
}

// TestProgressBar checks the bar's cells at the ends and in between.
func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		elapsed time.Duration
		bar     string
	}{
		{0, "--------------------"},
		{-time.Second, "--------------------"}, // a clock that went back
		{499 * time.Millisecond, "--------------------"},
		{500 * time.Millisecond, "#-------------------"},
		{9999 * time.Millisecond, "###################-"},
		{10 * time.Second, "####################"},
		{time.Minute, "####################"},
	} {
		line := terminalLine(tc.elapsed, 10*time.Second, counts{}, 0)
		require.True(t, strings.HasPrefix(line, "["+tc.bar+"] "), "%v: %s", tc.elapsed, line)
	}
	require.Contains(t, terminalLine(90*time.Second, 2*time.Minute, counts{}, 0), " 90.0s/120s ")
}

// TestProgressShow drives the meter's loop with ticks of a fake clock:
// each tick is one update, and done ends the loop, on a terminal with the
// line finished, while callers note their problems at the same time. (The
// counts stay put: a tick taken is not yet an update done.)
func TestProgressShow(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		t.Run(fmt.Sprintf("terminal=%v", terminal), func(t *testing.T) {
			var out safeBuffer
			m := newMeter(&out, terminal, t0, 10*time.Second)
			m.clock = func() time.Time { return t0.Add(3 * time.Second) }
			tl := &tally{notes: m}
			tl.requests.Store(4)
			ticks, done, stopped := make(chan time.Time), make(chan struct{}), make(chan struct{})
			go func() {
				m.show(tl, ticks, done)
				close(stopped)
			}()

			var callers sync.WaitGroup
			for i := range 4 {
				callers.Go(func() { tl.problem("caller %d", i) })
			}
			for i := 1; i <= 2; i++ {
				ticks <- t0.Add(time.Duration(i) * time.Second) // taken by the loop
			}
			callers.Wait()
			close(done)
			<-stopped

			got := out.String()
			require.Equal(t, 1, strings.Count(got, "loadgen: first problem: caller "), got)
			if !terminal {
				require.Equal(t, 3, strings.Count(got, "\n"), got)
				require.Contains(t, got, "loadgen:   2s  ")
				require.NotContains(t, got, "\r")
				return
			}
			require.True(t, strings.HasSuffix(got, "\r[######--------------] 3.0s/10s  4 answered  0 req/s  0 errors  0 wrong\n"), "%q", got)
		})
	}
}

// safeBuffer is a bytes.Buffer for writers in several goroutines.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
