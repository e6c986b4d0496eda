package main

import (
	"github.com/seed-c94cd834/fanout/transport"

	"bufio"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
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
	if b.atMost {
		return fmt.Sprintf("at most %.1fx", b.limit)
	}
	return fmt.Sprintf("at least %.1fx", b.limit)
}

func (b bound) met(ratio float64) bool {
	if b.atMost {
		return ratio <= b.limit
	}
	return ratio >= b.limit
}

// goals are fanout's targets, against gRPC and against raw TCP.
var goals = []struct {
	figure
	vsGRPC, vsRaw bound
}{
	{p50Figure, bound{0.7, true}, bound{1.5, true}},
	{requestsFigure, bound{1.5, false}, bound{1.0, false}},
	{numbersFigure, bound{1.3, false}, bound{0.9, false}},
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
// by fig of system b in the same repetition.
func (r *results) ratio(a, b string, fig figure) float64 {
	as, bs := r.values(a, fig), r.values(b, fig)
	ratios := make([]float64, len(as))
	for i := range as {
		ratios[i] = as[i] / bs[i] // NaN or Inf if nothing was measured
		if math.IsInf(ratios[i], 0) {
			ratios[i] = math.NaN()
		}
	}
	return median(ratios)
}

// markdown returns the report; command is how the run was started.
func (r *results) markdown(command string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# fanout vs raw TCP vs gRPC\n\n")
	p("- date: %s\n", r.started.UTC().Format(time.RFC3339))
	p("- machine: %s/%s, %s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, cpuModel(), runtime.NumCPU(), runtime.Version())
	p("- command: `%s`\n", command)
	p("- repetitions: %d, each workload %v; systems in alternating order (fanout, raw TCP, gRPC, then the reverse), fresh processes for every system in every repetition\n", r.reps, r.duration)
	p("- every figure is the median over the repetitions; every ratio is fanout's figure divided by the other system's in the same repetition, median over the repetitions\n\n")

	p("## Targets\n\n")
	p("| figure | fanout vs gRPC | target | met | fanout vs raw TCP | target | met |\n")
	p("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, g := range goals {
		vsGRPC, vsRaw := r.ratio(fanoutName, grpcName, g.figure), r.ratio(fanoutName, rawName, g.figure)
		p("| %s | %s | %s | %s | %s | %s | %s |\n", g.name,
			formatRatio(vsGRPC), g.vsGRPC, yesNo(g.vsGRPC.met(vsGRPC)),
			formatRatio(vsRaw), g.vsRaw, yesNo(g.vsRaw.met(vsRaw)))
	}

	p("\n## Figures\n\n")
	p("| figure | fanout | raw TCP | gRPC | fanout vs gRPC | fanout vs raw TCP |\n")
	p("| --- | --- | --- | --- | --- | --- |\n")
	for _, fig := range allFigures {
		p("| %s", fig.name)
		if fig.lower {
			p(" (lower is better)")
		}
		for _, sys := range []string{fanoutName, rawName, grpcName} {
			p(" | %s", fig.format(median(r.values(sys, fig))))
		}
		p(" | %s | %s |\n", formatRatio(r.ratio(fanoutName, grpcName, fig)), formatRatio(r.ratio(fanoutName, rawName, fig)))
	}
	var burst []float64
	for _, f := range r.of(fanoutName) {
		if f.BurstPeakRSS > 0 {
			burst = append(burst, float64(f.BurstPeakRSS))
		}
	}
	if len(burst) > 0 {
		limits := fmt.Sprintf("its default limits: at most %d MiB of requests held at once (`-max-request-mb`), the others waiting, the large ones before their clients send them", transport.DefaultMaxPendingBytes>>20)
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
