package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Names of the systems, as the report shows them.
const (
	fanoutName = "fanout"
	rawName    = "raw TCP"
	grpcName   = "gRPC"
	yamuxName  = "plain yamux"
)

// systemNames are the names of the systems, in the order they run in even
// repetitions and appear in the report.
var systemNames = []string{fanoutName, grpcName, yamuxName, rawName}

// config is what a benchmark run needs.
type config struct {
	reps     int
	duration time.Duration // of each workload
	root     string        // directory of the fanout module, whose examples are measured
	roleExe  string        // program that serves the raw TCP, gRPC and plain yamux roles (runRole)
	log      io.Writer     // progress and problems
	burst    int           // bulk calls sent at once to fanout, to measure its memory bound
	// middleArgs are extra flags for fanout's middle layer, to compare its
	// settings.
	middleArgs []string
}

// measurement is the figures of one system in one repetition.
type measurement struct {
	system string
	rep    int // from 0
	figures
}

// results are the measurements of a benchmark run, in the order they ran.
type results struct {
	reps       int
	duration   time.Duration
	burst      int      // bulk calls sent at once to fanout's middle layer
	middleArgs []string // extra flags of fanout's middle layer
	started    time.Time
	runs       []measurement
}

// benchmark builds the example programs and measures every system
// cfg.reps times, alternating their order: that of systemNames in even
// repetitions and the reverse in odd ones.
func benchmark(ctx context.Context, cfg config) (*results, error) {
	res := &results{reps: cfg.reps, duration: cfg.duration, burst: cfg.burst, middleArgs: cfg.middleArgs, started: time.Now()}
	if _, err := os.Stat(filepath.Join(cfg.root, "examples", "middle")); err != nil {
		return res, fmt.Errorf("-root %s is not the fanout repository: %w", cfg.root, err)
	}
	bin, err := os.MkdirTemp("", "fanout-bench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(bin)
	fmt.Fprintf(cfg.log, "building the example programs of %s\n", cfg.root)
	if err := buildExamples(cfg.root, bin); err != nil {
		return res, fmt.Errorf("build the example programs: %w", err)
	}

	systems := newSystems(bin, cfg.roleExe, cfg.middleArgs)
	in := newInputs()
	for rep := range cfg.reps {
		order := slices.Clone(systems)
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		for _, sys := range order {
			fmt.Fprintf(cfg.log, "repetition %d of %d: %s ...\n", rep+1, cfg.reps, sys.name)
			f, err := measure(ctx, sys, in, cfg.duration, cfg.burst, cfg.log)
			if err != nil {
				return res, fmt.Errorf("%s, repetition %d: %w", sys.name, rep+1, err)
			}
			burst := ""
			if f.BurstPeakRSS > 0 {
				burst = fmt.Sprintf(" (after the burst %d MiB)", f.BurstPeakRSS>>20)
			}
			fmt.Fprintf(cfg.log, "  p50 %v  p99 %v  %.0f requests/s  %v CPU/request  %.0f numbers/s  middle peak %d MiB%s  %d wrong  %d errors\n",
				f.P50, f.P99, f.RequestsPerSec, f.CPUPerRequest, f.NumbersPerSec, f.PeakRSS>>20, burst, f.Wrong, f.Errors)
			res.runs = append(res.runs, measurement{system: sys.name, rep: rep, figures: f})
		}
	}
	return res, nil
}

// newSystems returns the systems under test, in the order of systemNames:
// fanout's example programs, built into bin, then the gRPC, plain yamux and
// raw TCP servers, which exe serves as roles. middleArgs go to fanout's
// middle layer.
func newSystems(bin, exe string, middleArgs []string) []system {
	return []system{
		fanoutSystem(bin, middleArgs),
		roleSystem(grpcName, "grpc", exe, connectGRPC),
		roleSystem(yamuxName, "yamux", exe, connectYamux),
		roleSystem(rawName, "raw", exe, connectRaw),
	}
}

// of returns the measurements of system, by repetition.
func (r *results) of(system string) []figures {
	out := make([]figures, r.reps)
	for _, m := range r.runs {
		if m.system == system {
			out[m.rep] = m.figures
		}
	}
	return out
}

// problems returns the wrong answers and failed calls of all runs.
func (r *results) problems() (wrong, errors int64) {
	for _, m := range r.runs {
		wrong += m.Wrong
		errors += m.Errors
	}
	return wrong, errors
}
