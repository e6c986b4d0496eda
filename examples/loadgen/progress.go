package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// A meter shows the progress of a run. On a terminal it keeps one line,
// rewritten in place five times a second; anywhere else (a pipe, a file, a
// log) it writes a line a second, for a reader that keeps every line. It
// also writes the run's notes (the first problem), so that a note never
// lands in the middle of the progress line. It is safe for concurrent use.
type meter struct {
	w        io.Writer
	terminal bool
	width    int // the terminal's columns; 0 if not known
	start    time.Time
	duration time.Duration
	clock    func() time.Time // tells the time of the last update

	mu     sync.Mutex
	shown  int      // on a terminal: columns of the progress line on screen, 0 if none
	window []sample // on a terminal: the updates of the last second, for the rate
	last   int64    // elsewhere: requests answered at the previous line
}

// A sample is the count of requests answered at a time.
type sample struct {
	at       time.Time
	requests int64
}

// counts is a snapshot of a [tally].
type counts struct {
	requests, numbers, errors, wrong int64
}

// barWidth is the number of cells of the terminal's progress bar.
const barWidth = 20

// newMeter returns a meter of a run that started at start and sends new
// calls for duration, writing to w, a terminal or not.
func newMeter(w io.Writer, isTerminal bool, start time.Time, duration time.Duration) *meter {
	return &meter{w: w, terminal: isTerminal, start: start, duration: duration, clock: time.Now,
		window: []sample{{at: start}}}
}

// interval is how often the progress is updated.
func (m *meter) interval() time.Duration {
	if m.terminal {
		return 200 * time.Millisecond
	}
	return time.Second
}

// show updates the progress with t's counts at every tick until done is
// closed, then finishes it.
func (m *meter) show(t *tally, ticks <-chan time.Time, done <-chan struct{}) {
	for {
		select {
		case <-done:
			m.finish(t.counts())
			return
		case now := <-ticks:
			m.update(now, t.counts())
		}
	}
}

// update shows the counts c at time now.
func (m *meter) update(now time.Time, c counts) {
	m.mu.Lock()
	defer m.mu.Unlock()
	elapsed := now.Sub(m.start)
	if !m.terminal {
		io.WriteString(m.w, logLine(elapsed, c, c.requests-m.last))
		m.last = c.requests
		return
	}
	m.rewrite(terminalLine(elapsed, m.duration, c, m.rate(now, c.requests)))
}

// finish ends the progress with the final counts c: on a terminal, the
// line is updated one last time and ended, so that what follows starts on
// a line of its own. Elsewhere the lines are complete already.
func (m *meter) finish(c counts) {
	if !m.terminal {
		return
	}
	m.update(m.clock(), c)
	m.mu.Lock()
	defer m.mu.Unlock()
	io.WriteString(m.w, "\n")
	m.shown = 0
}

// note writes line on a line of its own. On a terminal the progress line
// is cleared first, and drawn again at the next update.
func (m *meter) note(line string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shown > 0 {
		io.WriteString(m.w, "\r"+strings.Repeat(" ", m.shown)+"\r")
		m.shown = 0
	}
	io.WriteString(m.w, line+"\n")
}

// rewrite replaces the progress line on screen with line: back to the
// start of the line, then line, then spaces over what is left of the line
// before. Spaces clear the rest of the line on every terminal, where an
// escape sequence would print as itself on a Windows console that does
// not take them. A line as wide as the terminal or wider is cut, since a
// line that wraps cannot be rewritten in place.
func (m *meter) rewrite(line string) {
	if m.width > 0 && len(line) >= m.width {
		line = line[:m.width-1]
	}
	io.WriteString(m.w, "\r"+line+strings.Repeat(" ", max(m.shown-len(line), 0)))
	m.shown = len(line)
}

// rate returns the requests answered per second over the last second, or
// since the start within the first second, given that requests had been
// answered at now.
func (m *meter) rate(now time.Time, requests int64) float64 {
	m.window = append(m.window, sample{now, requests})
	// The base is the newest sample at least a second old.
	for len(m.window) > 2 && !m.window[1].at.After(now.Add(-time.Second)) {
		m.window = m.window[1:]
	}
	base := m.window[0]
	d := now.Sub(base.at)
	if d <= 0 {
		return 0
	}
	return float64(requests-base.requests) / d.Seconds()
}

// logLine is the line written once a second when standard error is not a
// terminal; perSecond is the count of requests answered since the line
// before.
func logLine(elapsed time.Duration, c counts, perSecond int64) string {
	return fmt.Sprintf("loadgen: %3.0fs  %d requests answered (%d/s)  %d numbers  %d errors  %d wrong\n",
		elapsed.Seconds(), c.requests, perSecond, c.numbers, c.errors, c.wrong)
}

// terminalLine is the progress line on a terminal, without the carriage
// return and the padding that put it in place: a bar of the duration
// elapsed, the time elapsed of the duration, requests answered, their rate
// (per second, over the last second), errors and wrong answers.
//
//	[########------------] 4.0s/10s  12345 answered  3512 req/s  0 errors  0 wrong
func terminalLine(elapsed, duration time.Duration, c counts, rate float64) string {
	filled := barWidth
	if elapsed < duration {
		filled = int(int64(barWidth) * int64(max(elapsed, 0)) / int64(duration))
	}
	bar := strings.Repeat("#", filled) + strings.Repeat("-", barWidth-filled)
	return fmt.Sprintf("[%s] %.1fs/%gs  %d answered  %.0f req/s  %d errors  %d wrong",
		bar, elapsed.Seconds(), duration.Seconds(), c.requests, rate, c.errors, c.wrong)
}
