// Command bench measures the fanout example system against the same
// scatter-gather over gRPC, over plain yamux (a new stream per call) and
// over raw TCP (the floor), each as separate processes on loopback: a
// middle layer and backends x, y and z.
//
// Usage, from this directory:
//
//	go run . [-reps N] [-duration D] [-out DIR] [-root DIR] [-middle-args "FLAGS"] [-quick]
//	go run . -hedging [-reps N] [-duration D] [-root DIR]
//
// It prints a markdown report to standard output and writes it, with a
// chart, to DIR/latest.md and DIR/latest.png; progress goes to standard
// error. The exit status is 1 if anything failed or any answer was wrong,
// 2 for bad usage. See README.md for what is measured and how.
//
// With -hedging it runs the hedging experiment instead (hedging.go) and
// prints its report only.
//
// The program also serves the gRPC, plain yamux and raw TCP servers: the
// benchmark runs it again as "bench role KIND ROLE ..." for each of them
// (see runRole).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "role" {
		os.Exit(runRole(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	cfg := config{log: os.Stderr, burst: burstCallers}
	var out string
	var quick bool
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.IntVar(&cfg.reps, "reps", 3, "repetitions of the whole benchmark")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "duration of each workload")
	fs.StringVar(&out, "out", "results", "`directory` to write latest.md and latest.png to")
	fs.StringVar(&cfg.root, "root", "..", "`directory` of the fanout repository, whose example programs are measured")
	fs.Func("middle-args", "extra `flags` for fanout's middle layer, space-separated, to compare its settings", func(v string) error {
		cfg.middleArgs = strings.Fields(v)
		return nil
	})
	fs.IntVar(&serverProcs, "procs", 0, "GOMAXPROCS of every server process of every system (0: Go's default, the machine's cores); the load client keeps the default")
	fs.BoolVar(&quick, "quick", false, "a smoke test: 1 repetition of 200ms per workload")
	var hedging bool
	fs.Func("hedging-args", "with -hedging, more `flags` for the middle layer with -hedge, space-separated (-hedge-budget 0.1, say)", func(v string) error {
		hedgeArgs = strings.Fields(v)
		return nil
	})
	fs.BoolVar(&hedging, "hedging", false, "instead, the hedging experiment: fanout's example system, two replicas a route delaying 5% of calls by 100ms, loadgen with and without middle -hedge; -duration per run")
	fs.Parse(os.Args[1:])
	if quick {
		cfg.reps, cfg.duration = 1, 200*time.Millisecond
	}
	if fs.NArg() > 0 || cfg.reps < 1 || cfg.duration <= 0 {
		fmt.Fprintln(os.Stderr, "bench: takes flags only; -reps must be at least 1 and -duration positive")
		fs.Usage()
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	cfg.roleExe = exe

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if hedging {
		if err := runHedging(ctx, cfg, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "bench: FAILED: %v\n", err)
			return 1
		}
		return 0
	}
	res, err := benchmark(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: FAILED: %v\n", err)
		return 1
	}
	report := res.markdown(strings.Join(append([]string{"cd bench && go run ."}, os.Args[1:]...), " "))
	fmt.Print(report)
	if err := save(out, res, report); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	if wrong, errs := res.problems(); wrong > 0 || errs > 0 {
		fmt.Fprintf(os.Stderr, "bench: FAILED: %d wrong answers, %d failed calls\n", wrong, errs)
		return 1
	}
	return 0
}

// save writes the report and the chart to dir.
func save(dir string, res *results, report string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(report), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "latest.png"))
	if err != nil {
		return err
	}
	if err := res.chart(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
