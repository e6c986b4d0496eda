package main

import (
	"github.com/seed-c94cd834/fanout/transport"

	"bufio"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// figure is a row of the report: one number measured of every system.
type figure struct {
	name   string   // in the tables
	label  []string // in the chart, a line each
	value  func(figures) float64
	format func(float64) string
	lower  bool // lower is better
}

var (
	p50Figure = figure{"p50 latency, 10 numbers", []string{"p50 latency", "10 numbers"},
		func(f figures) float64 { return float64(f.P50) }, formatDuration, true}
	p99Figure = figure{"p99 latency, 10 numbers", []string{"p99 latency", "10 numbers"},
		func(f figures) float64 { return float64(f.P99) }, formatDuration, true}
	requestsFigure = figure{"requests/s, 64 callers of 10 numbers", []string{"requests/s", "64 callers"},
		func(f figures) float64 { return f.RequestsPerSec }, formatCount, false}
	numbersFigure = figure{"numbers/s, 1,000,000-number requests", []string{"numbers/s", "1M-number calls"},
		func(f figures) float64 { return f.NumbersPerSec }, formatCount, false}
	cpuFigure = figure{"CPU per request, middle + x + y + z, 64 callers", []string{"CPU/request", "64 callers"},
		func(f figures) float64 { return float64(f.CPUPerRequest) }, formatDuration, true}
	memoryFigure = figure{"peak memory of the middle (VmHWM)", []string{"middle peak", "memory"},
		func(f figures) float64 { return float64(f.PeakRSS) }, formatBytes, true}

	// allFigures are the rows of the report, in order.
	allFigures = []figure{p50Figure, p99Figure, requestsFigure, numbersFigure, cpuFigure, memoryFigure}
)

// bound is a target for a ratio.
type bound struct {
	limit  float64
	atMost bool // the ratio must be at most limit, rather than at least
}

func (b bound) String() string {
	limit := strconv.FormatFloat(b.limit, 'f', -1, 64)
	if !strings.Contains(limit, ".") {
		limit += ".0"
	}
	if b.atMost {
		return "at most " + limit + "x"
	}
	return "at least " + limit + "x"
}

// met reports whether ratio is within the bound; a NaN ratio, nothing
// measured, is not.
func (b bound) met(ratio float64) bool {
	if b.atMost {
		return ratio <= b.limit
	}
	return ratio >= b.limit
}

// comparedNames are the systems that fanout's figures are divided by in the
// report's ratio columns, in order.
var comparedNames = []string{grpcName, yamuxName, rawName}

// A goal is fanout's targets for one figure: bounds on fanout's figure
// divided by the same figure of each of comparedNames, by name.
type goal struct {
	figure
	vs map[string]bound
}

// goals are fanout's targets, the rows of the report's Targets table.
var goals = []goal{
	{p50Figure, map[string]bound{grpcName: {0.7, true}, yamuxName: {1.0, true}, rawName: {1.5, true}}},
	{requestsFigure, map[string]bound{grpcName: {1.5, false}, yamuxName: {1.5, false}, rawName: {1.0, false}}},
	{numbersFigure, map[string]bound{grpcName: {1.3, false}, yamuxName: {1.0, false}, rawName: {0.75, false}}},
}

// A check is one of fanout's figures against another system's, and its
// target.
type check struct {
	vs    string  // the other system
	ratio float64 // see results.ratio; NaN if nothing was measured
	bound bound
	met   bool // ratio is within bound
}

// checks returns the checks of g against each of comparedNames, in order.
func (r *results) checks(g goal) []check {
	var out []check
	for _, vs := range comparedNames {
		x := r.ratio(fanoutName, vs, g.figure)
		out = append(out, check{vs: vs, ratio: x, bound: g.vs[vs], met: g.vs[vs].met(x)})
	}
	return out
}

// median returns the median of xs, ignoring NaNs, or NaN if there is none.
func median(xs []float64) float64 {
	s := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// values returns fig of system in every repetition.
func (r *results) values(system string, fig figure) []float64 {
	var out []float64
	for _, f := range r.of(system) {
		out = append(out, fig.value(f))
	}
	return out
}

// ratio returns the median over the repetitions of fig of system a divided
// by fig of system b in the same repetition. A repetition in which either
// figure is not positive, not measured, is left out; if every one is, the
// ratio is NaN.
func (r *results) ratio(a, b string, fig figure) float64 {
	as, bs := r.values(a, fig), r.values(b, fig)
	ratios := make([]float64, len(as))
	for i := range as {
		ratios[i] = math.NaN()
		if as[i] > 0 && bs[i] > 0 {
			ratios[i] = as[i] / bs[i]
		}
	}
	return median(ratios)
}

// markdown returns the report; command is how the run was started.
func (r *results) markdown(command string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# fanout vs %s\n\n", strings.Join(comparedNames, " vs "))
	p("- date: %s\n", r.started.UTC().Format(time.RFC3339))
	p("- machine: %s/%s, %s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, cpuModel(), runtime.NumCPU(), runtime.Version())
	p("- command: `%s`\n", command)
	p("- repetitions: %d, each workload %v; systems in alternating order (%s, then the reverse), fresh processes for every system in every repetition\n", r.reps, r.duration, strings.Join(systemNames, ", "))
	p("- %s: github.com/hashicorp/yamux with its default configuration, a new stream per call (no stream reuse, no write coalescing); one session from the load client, one from the middle layer to each backend\n", yamuxName)
	p("- every figure is the median over the repetitions; every ratio is fanout's figure divided by the other system's in the same repetition, median over the repetitions\n\n")

	p("## Targets\n\n")
	p("| figure")
	for _, vs := range comparedNames {
		p(" | fanout vs %s | target | met", vs)
	}
	p(" |\n|%s\n", strings.Repeat(" --- |", 1+3*len(comparedNames)))
	for _, g := range goals {
		p("| %s", g.name)
		for _, c := range r.checks(g) {
			p(" | %s | %s | %s", formatRatio(c.ratio), c.bound, yesNo(c.met))
		}
		p(" |\n")
	}

	p("\n## Figures\n\n")
	p("| figure | %s", strings.Join(systemNames, " | "))
	for _, vs := range comparedNames {
		p(" | fanout vs %s", vs)
	}
	p(" |\n|%s\n", strings.Repeat(" --- |", 1+len(systemNames)+len(comparedNames)))
	for _, fig := range allFigures {
		p("| %s", fig.name)
		if fig.lower {
			p(" (lower is better)")
		}
		for _, sys := range systemNames {
			p(" | %s", fig.format(median(r.values(sys, fig))))
		}
		for _, vs := range comparedNames {
			p(" | %s", formatRatio(r.ratio(fanoutName, vs, fig)))
		}
		p(" |\n")
	}
	var burst []float64
	for _, f := range r.of(fanoutName) {
		if f.BurstPeakRSS > 0 {
			burst = append(burst, float64(f.BurstPeakRSS))
		}
	}
	if len(burst) > 0 {
		limits := fmt.Sprintf("its default limits: at most %d MiB of requests held at once (`-max-request-mb`), the others waiting, the large ones holding only their header", transport.DefaultMaxPendingBytes>>20)
		if len(r.middleArgs) > 0 {
			limits = fmt.Sprintf("the flags `%s`", strings.Join(r.middleArgs, " "))
		}
		p("\nMemory bound: after %d callers each sent fanout's middle layer a 1,000,000-number request at once, its peak memory (VmHWM, the most over the process's life, so the bulk workload's peak too) was %s (median; every repetition: %s). The middle layer runs with %s.\n",
			r.burst, formatBytes(median(burst)), formatEach(burst, formatBytes), limits)
	}
	wrong, errs := r.problems()
	p("\nWrong answers: %d. Failed calls: %d. (Every answer, value and backend, is checked against the routing table.)\n", wrong, errs)

	p("\n## Every repetition\n\n")
	p("| repetition | system | p50 | p99 | requests/s | CPU/request | numbers/s | middle peak memory | wrong | errors |\n")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, m := range r.runs {
		p("| %d | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n", m.rep+1, m.system,
			formatDuration(float64(m.P50)), formatDuration(float64(m.P99)), formatCount(m.RequestsPerSec),
			formatDuration(float64(m.CPUPerRequest)), formatCount(m.NumbersPerSec), formatBytes(float64(m.PeakRSS)),
			m.Wrong, m.Errors)
	}
	return b.String()
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// formatDuration formats nanoseconds.
func formatDuration(ns float64) string {
	switch us := ns / 1e3; {
	case math.IsNaN(ns):
		return "-"
	case us < 10:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	default:
		return fmt.Sprintf("%.2f ms", us/1e3)
	}
}

// formatCount formats a rate, with thousands separators below a million.
func formatCount(x float64) string {
	switch {
	case math.IsNaN(x):
		return "-"
	case x >= 1e6:
		return fmt.Sprintf("%.2f M", x/1e6)
	}
	s := fmt.Sprintf("%.0f", x)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func formatBytes(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", x/(1<<20))
}

func formatRatio(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

// cpuModel returns the first model name in /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// formatEach formats every value, comma-separated.
func formatEach(values []float64, format func(float64) string) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = format(v)
	}
	return strings.Join(parts, ", ")
}
