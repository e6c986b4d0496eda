package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The hedging experiment (-hedging): the fanout example system with two
// replicas of each route, every replica delaying a share of its calls,
// driven by the example's loadgen with and without the middle layer's
// -hedge, interleaved, once per repetition.
const (
	hedgeDelay       = "100ms" // -delay of every replica
	hedgeDelayShare  = "0.05"  // -delay-fraction of every replica
	hedgeBatch       = "10"    // loadgen -batch
	hedgeConcurrency = "8"     // loadgen -concurrency
)

// hedgeArgs are more flags for the middle layer with -hedge (-hedging-args).
var hedgeArgs []string

// hedgeRun is what one run of the experiment measured.
type hedgeRun struct {
	hedge                 bool
	requests, errs, wrong int64
	perSec                float64
	p50, p90, p99, p999   time.Duration
	calls, sent, won      int64 // the middle layer's route calls and hedges, summed over routes
}

// runHedging runs the hedging experiment and writes its report to w.
func runHedging(ctx context.Context, cfg config, w io.Writer) error {
	bin, err := os.MkdirTemp("", "fanout-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	fmt.Fprintf(cfg.log, "building the example programs of %s\n", cfg.root)
	if err := buildExamples(cfg.root, bin); err != nil {
		return fmt.Errorf("build the example programs: %w", err)
	}
	var runs []hedgeRun
	for rep := range cfg.reps {
		modes := []bool{false, true}
		if rep%2 == 1 {
			slices.Reverse(modes)
		}
		for _, hedge := range modes {
			fmt.Fprintf(cfg.log, "repetition %d of %d: -hedge=%v ...\n", rep+1, cfg.reps, hedge)
			r, err := hedgeOnce(ctx, bin, cfg.duration, hedge)
			if err != nil {
				return fmt.Errorf("repetition %d, -hedge=%v: %w", rep+1, hedge, err)
			}
			fmt.Fprintf(cfg.log, "  p50 %v  p90 %v  p99 %v  p99.9 %v  %.0f requests/s  %d hedges for %d route calls (%d won)  %d errors  %d wrong\n",
				r.p50, r.p90, r.p99, r.p999, r.perSec, r.sent, r.calls, r.won, r.errs, r.wrong)
			if r.errs > 0 || r.wrong > 0 {
				return fmt.Errorf("repetition %d, -hedge=%v: %d errors, %d wrong answers", rep+1, hedge, r.errs, r.wrong)
			}
			runs = append(runs, r)
		}
	}
	fmt.Fprint(w, hedgeReport(runs, cfg))
	return nil
}

// hedgeOnce deploys the system, with -hedge or not, runs loadgen against it
// for d, stops it and returns what loadgen and the middle layer reported.
func hedgeOnce(ctx context.Context, bin string, d time.Duration, hedge bool) (hedgeRun, error) {
	run := hedgeRun{hedge: hedge}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	middleArgs := []string{}
	for _, route := range routes {
		var addrs []string
		for i := range 2 {
			p, err := startProc(ctx, fmt.Sprintf("%s replica %d", route, i), filepath.Join(bin, route), "-delay", hedgeDelay, "-delay-fraction", hedgeDelayShare)
			if err != nil {
				return run, err
			}
			procs = append(procs, p)
			addrs = append(addrs, p.addr)
		}
		middleArgs = append(middleArgs, "-"+route, strings.Join(addrs, ","))
	}
	if hedge {
		middleArgs = append(middleArgs, "-hedge")
		middleArgs = append(middleArgs, hedgeArgs...)
	}
	middle, err := startProc(ctx, "middle", filepath.Join(bin, "middle"), middleArgs...)
	if err != nil {
		return run, err
	}
	procs = append(procs, middle)

	load := exec.CommandContext(ctx, filepath.Join(bin, "loadgen"), "-addr", middle.addr, "-batch", hedgeBatch,
		"-concurrency", hedgeConcurrency, "-duration", d.String(), "-json")
	load.Stderr = io.Discard
	out, err := load.Output()
	if err != nil {
		return run, fmt.Errorf("loadgen: %w", err)
	}
	var s struct {
		Requests, Errors, Wrong int64
		PerSec                  float64 `json:"requests_per_sec"`
		P50us                   float64 `json:"p50_us"`
		P90us                   float64 `json:"p90_us"`
		P99us                   float64 `json:"p99_us"`
		P999us                  float64 `json:"p999_us"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return run, fmt.Errorf("loadgen's summary %q: %w", out, err)
	}
	us := func(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }
	run.requests, run.errs, run.wrong, run.perSec = s.Requests, s.Errors, s.Wrong, s.PerSec
	run.p50, run.p90, run.p99, run.p999 = us(s.P50us), us(s.P90us), us(s.P99us), us(s.P999us)

	// The middle layer logs its hedges per route as it stops.
	middle.stop()
	procs = procs[:len(procs)-1]
	for _, m := range hedgesLine.FindAllStringSubmatch(middle.stderr.String(), -1) {
		calls, _ := strconv.ParseInt(m[1], 10, 64)
		sent, _ := strconv.ParseInt(m[2], 10, 64)
		won, _ := strconv.ParseInt(m[3], 10, 64)
		run.calls, run.sent, run.won = run.calls+calls, run.sent+sent, run.won+won
	}
	if hedge && run.calls == 0 {
		return run, fmt.Errorf("the middle layer logged no hedges; its last output:\n%s", middle.stderr)
	}
	return run, nil
}

var hedgesLine = regexp.MustCompile(`msg=hedges route=[a-z]+ calls=([0-9]+) sent=([0-9]+) won=([0-9]+)`)

// hedgeReport is the markdown report of the hedging experiment.
func hedgeReport(runs []hedgeRun, cfg config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Hedging: the example system with and without -hedge\n\n")
	extraArgs := ""
	if len(hedgeArgs) > 0 {
		extraArgs = fmt.Sprintf(" -hedging-args %q", strings.Join(hedgeArgs, " "))
	}
	fmt.Fprintf(&b, "`cd bench && go run . -hedging -reps %d -duration %v%s`: two replicas of each route, each delaying %s of its calls by %s (`-delay %s -delay-fraction %s`); `loadgen -batch %s -concurrency %s -duration %v`, with and without `middle -hedge`, interleaved, %d repetitions; medians over the repetitions, ratios taken within each.\n\n",
		cfg.reps, cfg.duration, extraArgs, pct(hedgeDelayShare), hedgeDelay, hedgeDelay, hedgeDelayShare, hedgeBatch, hedgeConcurrency, cfg.duration, cfg.reps)
	med := func(hedge bool, f func(hedgeRun) float64) float64 {
		var v []float64
		for _, r := range runs {
			if r.hedge == hedge {
				v = append(v, f(r))
			}
		}
		return median(v)
	}
	ratio := func(f func(hedgeRun) float64) float64 {
		var v []float64
		for i := 0; i+1 < len(runs); i += 2 {
			off, on := runs[i], runs[i+1]
			if off.hedge {
				off, on = on, off
			}
			v = append(v, f(on)/f(off))
		}
		return median(v)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rows := []struct {
		name string
		f    func(hedgeRun) float64
		unit string
	}{
		{"p50 latency", func(r hedgeRun) float64 { return ms(r.p50) }, "ms"},
		{"p90 latency", func(r hedgeRun) float64 { return ms(r.p90) }, "ms"},
		{"p99 latency", func(r hedgeRun) float64 { return ms(r.p99) }, "ms"},
		{"p99.9 latency", func(r hedgeRun) float64 { return ms(r.p999) }, "ms"},
		{"requests/s", func(r hedgeRun) float64 { return r.perSec }, ""},
	}
	fmt.Fprintf(&b, "| figure | without -hedge | with -hedge | with / without |\n| --- | --: | --: | --: |\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %.2f %s | %.2f %s | %.2fx |\n", row.name, med(false, row.f), row.unit, med(true, row.f), row.unit, ratio(row.f))
	}
	fmt.Fprintf(&b, "\np99 by repetition, without and with -hedge:")
	for i := 0; i+1 < len(runs); i += 2 {
		off, on := runs[i], runs[i+1]
		if off.hedge {
			off, on = on, off
		}
		fmt.Fprintf(&b, " %.1f and %.1f ms;", ms(off.p99), ms(on.p99))
	}
	b.WriteString("\n")
	extra := med(true, func(r hedgeRun) float64 { return 100 * float64(r.sent) / float64(r.calls) })
	won := med(true, func(r hedgeRun) float64 { return 100 * float64(r.won) / float64(max(r.sent, 1)) })
	fmt.Fprintf(&b, "\nHedging cost %.1f%% more backend calls (hedges sent over the middle layer's route calls), of which %.0f%% answered first. No call failed and no answer was wrong.\n", extra, won)
	return b.String()
}

// pct spells a share as a percentage: "0.05" as "5%".
func pct(share string) string {
	v, _ := strconv.ParseFloat(share, 64)
	return strconv.FormatFloat(100*v, 'f', -1, 64) + "%"
}
