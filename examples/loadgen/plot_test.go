package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPlotTimeline records calls on a fake clock and checks the seconds it
// gives: each call in the second it ended, a second without a call as
// zero, and one second for each second the run began, the last one
// partial.
func TestPlotTimeline(t *testing.T) {
	now := t0
	tl := newTimeline(t0, func() time.Time { return now })
	at := func(d time.Duration, latencies ...time.Duration) {
		now = t0.Add(d)
		for _, l := range latencies {
			tl.record(l)
		}
	}
	at(100*time.Millisecond, time.Millisecond, 3*time.Millisecond)
	at(999*time.Millisecond, 2*time.Millisecond)
	at(2500*time.Millisecond, 10*time.Millisecond) // nothing in second 1
	fast := make([]time.Duration, 100)
	for i := range fast {
		fast[i] = time.Duration(i+1) * time.Microsecond
	}
	at(3*time.Second, fast...) // second 3 opens at 3s exactly
	got := tl.finish(4*time.Second + time.Millisecond)
	require.Equal(t, []secondLatency{
		{answered: 3, p50: ms(2), p99: ms(3), max: ms(3)},
		{},
		{answered: 1, p50: ms(10), p99: ms(10), max: ms(10)},
		{answered: 100, p50: quantile(fast, 0.5), p99: quantile(fast, 0.99), max: quantile(fast, 1)},
		{}, // the last millisecond
	}, got)

	empty := newTimeline(t0, func() time.Time { return now })
	require.Len(t, empty.finish(2500*time.Millisecond), 3)
	require.Empty(t, newTimeline(t0, time.Now).finish(0))
}

// ms returns n milliseconds as a histogram reports them: rounded up to the
// end of their bucket.
func ms(n int) time.Duration {
	return quantile([]time.Duration{time.Duration(n) * time.Millisecond}, 1)
}

// quantile returns the q-quantile of ds as a histogram reports it.
func quantile(ds []time.Duration, q float64) time.Duration {
	var h histogram
	for _, d := range ds {
		h.record(d)
	}
	return h.quantile(q)
}

// drawn draws the chart of seconds and decodes it.
func drawn(t *testing.T, seconds []secondLatency) image.Image {
	t.Helper()
	var buf bytes.Buffer
	s := &summary{Batch: 10, Concurrency: 64, Requests: 1234, Errors: 1, Seconds: float64(len(seconds))}
	require.NoError(t, plotLatency(&buf, s, seconds))
	img, err := png.Decode(&buf)
	require.NoError(t, err, "the chart is a PNG")
	require.Equal(t, image.Rect(0, 0, plotWidth, plotHeight), img.Bounds())
	return img
}

// inPlot returns the pixels of each colour inside the plot area, where
// the lines are (the legend is above it).
func inPlot(img image.Image) map[color.RGBA][]image.Point {
	at := map[color.RGBA][]image.Point{}
	for y := plotTop + 1; y < plotBottom; y++ {
		for x := plotLeft + 1; x < plotRight; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			at[c] = append(at[c], image.Pt(x, y))
		}
	}
	return at
}

func meanY(points []image.Point) float64 {
	var sum int
	for _, p := range points {
		sum += p.Y
	}
	return float64(sum) / float64(len(points))
}

// TestPlotLatency draws a synthetic run of 30 seconds, with a quiet second,
// and checks the chart: each series is a line in the plot area, p50 below
// p99 below max as their latencies are, and the quiet second is shaded.
func TestPlotLatency(t *testing.T) {
	seconds := make([]secondLatency, 30)
	for i := range seconds {
		seconds[i] = secondLatency{answered: 1000, p50: 200 * time.Microsecond,
			p99: 2 * time.Millisecond, max: time.Duration(20+i) * time.Millisecond}
	}
	seconds[12] = secondLatency{} // no call answered
	img := drawn(t, seconds)
	pixels := inPlot(img)

	var ys []float64
	for _, s := range plotSeries {
		points := pixels[s.color]
		require.Greater(t, len(points), 500, "the %s line is drawn", s.name)
		ys = append(ys, meanY(points))
	}
	// plotSeries is max, p99, p50: lower latency, lower in the chart.
	require.Less(t, ys[0], ys[1], "max above p99")
	require.Less(t, ys[1], ys[2], "p99 above p50")
	require.NotEmpty(t, pixels[quietGray], "the second without an answer is shaded")
	require.NotEmpty(t, pixels[gridGray], "the grid is drawn")
	require.Equal(t, textGray, color.RGBAModel.Convert(img.At(plotLeft, plotBottom)), "the frame is drawn")
}

// TestPlotOneSecond checks a run of one second: its single points show as
// dots.
func TestPlotOneSecond(t *testing.T) {
	pixels := inPlot(drawn(t, []secondLatency{{answered: 3, p50: time.Millisecond, p99: 5 * time.Millisecond, max: 9 * time.Millisecond}}))
	for _, s := range plotSeries {
		require.NotEmpty(t, pixels[s.color], "the %s point is drawn", s.name)
	}
}

// TestPlotNothingAnswered checks that a run in which no call was answered,
// or that took no time, still gets a chart: a valid PNG with a note in the
// plot area and no line.
func TestPlotNothingAnswered(t *testing.T) {
	for _, seconds := range [][]secondLatency{nil, make([]secondLatency, 5)} {
		pixels := inPlot(drawn(t, seconds))
		require.NotEmpty(t, pixels[black], "the note is written")
		for _, s := range plotSeries {
			require.Empty(t, pixels[s.color], "no %s line", s.name)
		}
	}
}

func TestPlotTicks(t *testing.T) {
	lo, hi, ok := latencyRange([]secondLatency{{answered: 1, p50: 150 * time.Microsecond, p99: 3 * time.Millisecond, max: 40 * time.Millisecond}})
	require.True(t, ok)
	require.Equal(t, []float64{0.1, 100}, []float64{lo, hi})
	require.Equal(t, []float64{0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100}, latencyTicks(lo, hi))
	require.Equal(t, []float64{0.001, 0.01, 0.1, 1, 10}, latencyTicks(0.001, 10))

	lo, hi, _ = latencyRange([]secondLatency{{answered: 1, p50: time.Millisecond, p99: time.Millisecond, max: time.Millisecond}})
	require.Equal(t, []float64{1, 10}, []float64{lo, hi}, "a decade at least")

	for n, want := range map[int]int{1: 1, 10: 1, 11: 2, 20: 2, 21: 5, 50: 5, 51: 10, 3600: 500} {
		require.Equal(t, want, tickStep(n), "%d seconds", n)
	}
}

// TestPlotFlag checks what -plot takes when the flags are parsed: a PNG
// file name in a directory that exists and can be written.
func TestPlotFlag(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d.png"), 0o755))
	for _, tc := range []struct {
		path, err string
	}{
		{filepath.Join(dir, "latency.png"), ""},
		{filepath.Join(dir, "LATENCY.PNG"), ""},
		{file + ".png", ""}, // there already: replaced at the end
		{filepath.Join(dir, "latency.jpg"), "the file name must end in .png"},
		{filepath.Join(dir, "latency"), "the file name must end in .png"},
		{"", "the file name must end in .png"},
		{filepath.Join(dir, "none", "latency.png"), "directory " + filepath.Join(dir, "none") + " does not exist"},
		{filepath.Join(file, "latency.png"), file + " is not a directory"},
		{filepath.Join(dir, "d.png"), filepath.Join(dir, "d.png") + " is a directory"},
	} {
		var got string
		err := plotFile{&got}.Set(tc.path)
		if tc.err != "" {
			require.EqualError(t, err, tc.err, tc.path)
			require.Empty(t, got)
			continue
		}
		require.NoError(t, err, tc.path)
		require.Equal(t, tc.path, got)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "checking leaves no file behind")
}

// TestWritePlot writes the chart to a file, and to one that cannot be
// written: the error names the flag and the file, once.
func TestWritePlot(t *testing.T) {
	dir := t.TempDir()
	s := &summary{Batch: 1, Concurrency: 1}
	path := filepath.Join(dir, "latency.png")
	require.NoError(t, writePlot(path, s, []secondLatency{{answered: 1, p50: 1, p99: 1, max: 1}}))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = png.Decode(f)
	require.NoError(t, err)

	gone := filepath.Join(dir, "gone", "latency.png")
	err = writePlot(gone, s, nil)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), "-plot "+gone+": "), err.Error())
	require.Equal(t, 1, strings.Count(err.Error(), gone), err.Error())
}
