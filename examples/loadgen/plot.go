package main

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Geometry of the latency chart.
const (
	plotWidth, plotHeight = 1000, 500
	plotLeft, plotRight   = 70, 980 // x of the plot area
	plotTop, plotBottom   = 80, 440 // y of the plot area
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	black     = color.RGBA{0, 0, 0, 255}
	gridGray  = color.RGBA{225, 225, 225, 255}
	textGray  = color.RGBA{90, 90, 90, 255}
	quietGray = color.RGBA{242, 242, 242, 255} // a second in which no call was answered

	// plotSeries are the lines of the chart, drawn in this order, so
	// that p50 is on top where lines meet.
	plotSeries = []struct {
		name  string
		color color.RGBA
		value func(secondLatency) time.Duration
	}{
		{"max", color.RGBA{214, 39, 40, 255}, func(s secondLatency) time.Duration { return s.max }},
		{"p99", color.RGBA{255, 127, 14, 255}, func(s secondLatency) time.Duration { return s.p99 }},
		{"p50", color.RGBA{31, 119, 180, 255}, func(s secondLatency) time.Duration { return s.p50 }},
	}
)

// plotLatency draws the latency of the run s summarizes over time, from
// seconds (see [timeline]), and writes it to w as a PNG: for each second
// of the run the p50, p99 and max of the calls answered in that second, as
// lines, on a log scale in milliseconds (a run's p50 and max are often
// orders of magnitude apart). A second in which no call was answered is a
// gap in the lines, shaded. A run in which no call was answered at all
// still gets a chart, which says so. The x axis ends at the run's end
// (s.Seconds): the last second, in which the calls in flight at the end
// were answered, is as long as it lasted.
func plotLatency(w io.Writer, s *summary, seconds []secondLatency) error {
	img := image.NewRGBA(image.Rect(0, 0, plotWidth, plotHeight))
	fill(img, img.Bounds(), white)
	text(img, plotLeft, 22, black, fmt.Sprintf("loadgen: batch %d, concurrency %d, %.1fs: %d requests answered, %d errors, %d wrong",
		s.Batch, s.Concurrency, s.Seconds, s.Requests, s.Errors, s.Wrong))

	lo, hi, answered := latencyRange(seconds)
	if !answered {
		frame(img)
		note := "no call was answered: no latency to plot"
		text(img, (plotLeft+plotRight-width(note))/2, (plotTop+plotBottom)/2, black, note)
		return png.Encode(w, img)
	}

	// The legend.
	x := plotLeft
	for i := range plotSeries {
		s := plotSeries[len(plotSeries)-1-i] // p50 first
		fill(img, image.Rect(x, 36, x+12, 48), s.color)
		text(img, x+18, 47, black, s.name)
		x += 18 + width(s.name) + 24
	}
	text(img, x, 47, textGray, "of the calls answered in each second (by the second they ended)")

	// The seconds, on the x axis: a tick every step seconds, the
	// seconds without an answer shaded.
	n := len(seconds)
	end := s.Seconds
	if end <= float64(n-1) { // a summary that does not fit the seconds
		end = float64(n)
	}
	xAt := func(sec float64) int { return plotLeft + int(math.Round(sec/end*(plotRight-plotLeft))) }
	span := func(i int) (from, to float64) { return float64(i), min(float64(i+1), end) }
	for i, sec := range seconds {
		if from, to := span(i); sec.answered == 0 {
			fill(img, image.Rect(xAt(from), plotTop, xAt(to), plotBottom), quietGray)
		}
	}
	step := tickStep(int(math.Ceil(end)))
	for sec := 0; float64(sec) <= end; sec += step {
		fill(img, image.Rect(xAt(float64(sec)), plotTop, xAt(float64(sec))+1, plotBottom), gridGray)
		label := strconv.Itoa(sec)
		text(img, xAt(float64(sec))-width(label)/2, plotBottom+18, textGray, label)
	}
	caption := "seconds since the start"
	text(img, (plotLeft+plotRight-width(caption))/2, plotBottom+40, black, caption)

	// The latency, on the y axis, in milliseconds on a log scale.
	logLo, logHi := math.Log10(lo), math.Log10(hi)
	yAt := func(ms float64) int {
		f := (math.Log10(min(max(ms, lo), hi)) - logLo) / (logHi - logLo)
		return plotBottom - int(math.Round(f*(plotBottom-plotTop)))
	}
	for _, ms := range latencyTicks(lo, hi) {
		fill(img, image.Rect(plotLeft, yAt(ms), plotRight, yAt(ms)+1), gridGray)
		label := strconv.FormatFloat(ms, 'f', -1, 64)
		text(img, plotLeft-8-width(label), yAt(ms)+4, textGray, label)
	}
	text(img, 8, plotTop-8, black, "latency, ms (log scale)")
	frame(img)

	// The lines, each point at the middle of its second. A point with no
	// neighbour to join is drawn as a dot, so that it shows.
	for _, series := range plotSeries {
		at := func(i int) image.Point {
			from, to := span(i)
			return image.Pt(xAt((from+to)/2), yAt(series.value(seconds[i]).Seconds()*1e3))
		}
		for i, sec := range seconds {
			if sec.answered == 0 {
				continue
			}
			joined := false
			if i+1 < n && seconds[i+1].answered > 0 {
				line(img, at(i), at(i+1), series.color)
				joined = true
			}
			if i > 0 && seconds[i-1].answered > 0 {
				joined = true
			}
			if !joined {
				p := at(i)
				fill(img, image.Rect(p.X-2, p.Y-2, p.X+3, p.Y+3), series.color)
			}
		}
	}
	return png.Encode(w, img)
}

// latencyRange returns the range of the y axis, in milliseconds, for
// seconds: powers of ten around every latency of a second with an answer,
// at least a decade apart, and whether any second had one.
func latencyRange(seconds []secondLatency) (lo, hi float64, answered bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, sec := range seconds {
		if sec.answered == 0 {
			continue
		}
		answered = true
		for _, s := range plotSeries {
			ms := max(s.value(sec).Seconds()*1e3, 1e-6) // 1ns, the histogram's floor
			lo, hi = min(lo, ms), max(hi, ms)
		}
	}
	if !answered {
		return 0, 0, false
	}
	lo, hi = math.Pow10(int(math.Floor(math.Log10(lo)))), math.Pow10(int(math.Ceil(math.Log10(hi))))
	if hi <= lo {
		hi = lo * 10
	}
	return lo, hi, true
}

// latencyTicks returns the ticks of a log axis from lo to hi, powers of
// ten: each power, and over three decades or fewer 2 and 5 times each too.
func latencyTicks(lo, hi float64) []float64 {
	decades := int(math.Round(math.Log10(hi / lo)))
	var ticks []float64
	for d := range decades + 1 {
		p := lo * math.Pow10(d)
		ticks = append(ticks, p)
		if decades <= 3 && d < decades {
			ticks = append(ticks, 2*p, 5*p)
		}
	}
	return ticks
}

// tickStep returns the seconds between ticks of an axis of n seconds: 1,
// 2 or 5 times a power of ten, for at most ten steps.
func tickStep(n int) int {
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if n <= 10*m*p {
				return m * p
			}
		}
	}
}

// frame draws the axes' box around the plot area.
func frame(img draw.Image) {
	fill(img, image.Rect(plotLeft, plotTop, plotRight+1, plotTop+1), textGray)
	fill(img, image.Rect(plotLeft, plotBottom, plotRight+1, plotBottom+1), textGray)
	fill(img, image.Rect(plotLeft, plotTop, plotLeft+1, plotBottom+1), textGray)
	fill(img, image.Rect(plotRight, plotTop, plotRight+1, plotBottom+1), textGray)
}

// line draws a line two pixels wide from a to b.
func line(img draw.Image, a, b image.Point, c color.Color) {
	steps := max(abs(b.X-a.X), abs(b.Y-a.Y), 1)
	for i := range steps + 1 {
		x := a.X + (b.X-a.X)*i/steps
		y := a.Y + (b.Y-a.Y)*i/steps
		fill(img, image.Rect(x, y, x+2, y+2), c)
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func fill(img draw.Image, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// text draws s with its baseline starting at (x, y).
func text(img draw.Image, x, y int, c color.Color, s string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// width returns the width of s in pixels.
func width(s string) int {
	return font.MeasureString(basicfont.Face7x13, s).Ceil()
}

// writePlot writes the chart of [plotLatency] to the file path, replacing
// it if it exists.
func writePlot(path string, s *summary, seconds []secondLatency) error {
	f, err := os.Create(path)
	if err != nil {
		return plotError(path, err)
	}
	bw := bufio.NewWriter(f)
	err = plotLatency(bw, s, seconds)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return plotError(path, err)
	}
	return nil
}

// plotError names the plot's file and the flag in err, which may name the
// file already.
func plotError(path string, err error) error {
	return fmt.Errorf("-plot %s: %w", path, unwrapPath(err))
}

// plotFile is the flag.Value of -plot: the name of a PNG file that can be
// written, checked when the flag is parsed so that a run is not spent on a
// plot that cannot be written. Writing can still fail at the end (the
// directory removed during the run, the disk full).
type plotFile struct{ path *string }

func (v plotFile) String() string {
	if v.path == nil { // the zero value, which flag.PrintDefaults makes
		return ""
	}
	return *v.path
}

func (v plotFile) Set(path string) error {
	if !strings.EqualFold(filepath.Ext(path), ".png") {
		return errors.New("the file name must end in .png")
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("directory %s does not exist", dir)
		}
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory", path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0) // not truncated until the run has ended
		if err != nil {
			return fmt.Errorf("cannot write %s: %w", path, unwrapPath(err))
		}
		f.Close()
	} else {
		f, err := os.CreateTemp(dir, ".loadgen-plot-*.png")
		if err != nil {
			return fmt.Errorf("cannot write in directory %s: %w", dir, unwrapPath(err))
		}
		f.Close()
		os.Remove(f.Name())
	}
	*v.path = path
	return nil
}

// unwrapPath returns the error inside a *fs.PathError, which names a path
// the message names already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
