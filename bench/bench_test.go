package main

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary serve the raw TCP, gRPC and plain yamux
// roles, as the bench program does: the benchmark runs its own executable
// for them.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "role" {
		os.Exit(runRole(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestBenchmark runs every system briefly and checks that every answer was
// right and every figure was measured.
func TestBenchmark(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := benchmark(ctx, config{reps: 1, duration: 200 * time.Millisecond, burst: 4, root: "..", roleExe: exe, log: t.Output()})
	if err != nil {
		t.Fatal(err)
	}
	if wrong, errs := res.problems(); wrong > 0 || errs > 0 {
		t.Errorf("%d wrong answers, %d failed calls", wrong, errs)
	}
	for _, sys := range systemNames {
		for _, fig := range allFigures {
			if v := median(res.values(sys, fig)); !(v > 0) {
				t.Errorf("%s: %s is %v, want a positive figure", sys, fig.name, v)
			}
		}
	}

	report := res.markdown("go test")
	for _, want := range []string{"| p50 latency, 10 numbers |", "| requests/s, 64 callers of 10 numbers |", "| numbers/s, 1,000,000-number requests |", "| fanout vs plain yamux |", "Wrong answers: 0."} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	var chart bytes.Buffer
	if err := res.chart(&chart); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(&chart); err != nil {
		t.Errorf("the chart is not a PNG: %v", err)
	}
}

// TestYamux runs the processes of the plain yamux system on loopback and
// checks the answers of callers that share its client session, each call a
// stream of its own: mixed batches, an empty one, batches of one route each
// and a bulk one, several at once.
func TestYamux(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dep, err := deploy(ctx, roleSystem(yamuxName, "yamux", exe, connectYamux))
	if err != nil {
		t.Fatal(err)
	}
	defer dep.stop()

	in := newInputs()
	batches := append(slices.Clone(in.small[:64]), []int64{}, []int64{-1, -2}, []int64{0, 2}, []int64{1, 3}, in.bulk[0])
	c := &checker{system: yamuxName, log: t.Output()}
	var answered atomic.Int64
	const callers = 8
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			cl, err := dep.target.caller()
			if err != nil {
				c.failed(err)
				return
			}
			for i := g; i < len(batches); i += callers {
				out, err := cl.Process(ctx, batches[i])
				if err != nil {
					c.failed(err)
					continue
				}
				c.check(batches[i], out)
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	if wrong, errs := c.wrong.Load(), c.errors.Load(); wrong > 0 || errs > 0 {
		t.Errorf("%d wrong answers, %d failed calls", wrong, errs)
	}
	if n := answered.Load(); n != int64(len(batches)) {
		t.Errorf("%d calls answered, want %d", n, len(batches))
	}
}

// TestOverflow checks that every system reports a number whose result
// would overflow with an error naming the number and the backend: the
// call's error, or the number's own (version 2 of the result codec).
func TestOverflow(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := buildExamples("..", bin); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, sys := range newSystems(bin, exe, nil) {
		t.Run(sys.name, func(t *testing.T) {
			dep, err := deploy(ctx, sys)
			if err != nil {
				t.Fatal(err)
			}
			defer dep.stop()
			c, err := dep.target.caller()
			if err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				items []int64
				want  string
			}{
				{[]int64{4, -3037000500}, "x: -3037000500 squared overflows int64"},
				{[]int64{-1, math.MaxInt64}, "z: 3*9223372036854775807+1 overflows int64"},
			} {
				out, err := c.Process(ctx, tt.items)
				var got string
				switch {
				case err != nil:
					got = err.Error()
				case len(out) == len(tt.items):
					got = out[1].Err
				}
				if !strings.Contains(got, tt.want) {
					t.Errorf("Process(%v) = %v, %v; want an error containing %q", tt.items, out, err, tt.want)
				}
			}
			// The system still answers after a failed call.
			out, err := c.Process(ctx, []int64{-3, 4, 7})
			if want := []Result{{Value: 9, Backend: "x"}, {Value: 2, Backend: "y"}, {Value: 22, Backend: "z"}}; err != nil || !slices.Equal(out, want) {
				t.Errorf("Process(-3, 4, 7) = %v, %v; want %v", out, err, want)
			}
		})
	}
}

func TestResultCodec(t *testing.T) {
	ok := []Result{{Value: 9, Backend: "x"}, {Value: 2, Backend: "y"}, {Value: -4, Backend: "z"}, {Value: 0, Backend: "y"}}
	failed := append(slices.Clone(ok),
		Result{Backend: "z", Err: "z is down"}, Result{Backend: "x", Err: "x is down"}, Result{Backend: "z", Err: "z is down"})
	tests := []struct {
		version int
		in      []Result
		size    int
	}{
		{1, ok, 10 * len(ok)},
		{3, ok, 10 * len(ok)},
		{2, ok, 11 * len(ok)},
		{2, failed, 11*len(failed) + 2*(2+len("z is down"))},
	}
	for _, tt := range tests {
		c := resultCodec{version: tt.version}
		data, err := c.Append(nil, tt.in)
		if err != nil || len(data) != tt.size {
			t.Fatalf("%s: Append = %d bytes, %v; want %d bytes", c.Name(), len(data), err, tt.size)
		}
		out, err := c.Decode(nil, data)
		if err != nil || !slices.Equal(out, tt.in) {
			t.Errorf("%s: Decode = %v, %v; want %v", c.Name(), out, err, tt.in)
		}
		for _, n := range []int{5, 9, len(data) - 1} { // cut inside a result
			if out, err := c.Decode(nil, data[:n]); err == nil {
				t.Errorf("%s: Decode of the first %d bytes = %v, want an error", c.Name(), n, out)
			}
		}
	}
	if _, err := (resultCodec{version: 1}).Append(nil, failed); err == nil {
		t.Error("version 1 encoded an error")
	}
	bad := []byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 2} // refers to a second text before the first
	if _, err := (resultCodec{version: 2}).Decode(nil, bad); err == nil {
		t.Errorf("Decode(% x) succeeded, want an error", bad)
	}
}

func TestExpected(t *testing.T) {
	tests := []struct {
		n       int64
		want    Result
		wantErr string
	}{
		{-3, Result{Value: 9, Backend: "x"}, ""},
		{4, Result{Value: 2, Backend: "y"}, ""},
		{0, Result{Value: 0, Backend: "y"}, ""},
		{7, Result{Value: 22, Backend: "z"}, ""},
		{-3037000499, Result{Value: 9223372030926249001, Backend: "x"}, ""},
		{-3037000500, Result{}, "x: -3037000500 squared overflows int64"},
		{3074457345618258603, Result{}, "z: 3*3074457345618258603+1 overflows int64"},
	}
	for _, tt := range tests {
		got, err := expected(tt.n)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("expected(%d) error = %v, want %q", tt.n, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expected(%d) = %v, %v; want %v", tt.n, got, err, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want int
	}{
		{math.MinInt64, 0}, {-2, 0}, {-1, 0}, {0, 1}, {1, 2}, {2, 1},
		{math.MaxInt64 - 1, 1}, {math.MaxInt64, 2},
	} {
		if got := classify(tt.n); got != tt.want {
			t.Errorf("classify(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

// resultsOf returns the results of reps repetitions with the figures of
// each system by repetition.
func resultsOf(reps int, bySystem map[string][]figures) *results {
	r := &results{reps: reps}
	for sys, fs := range bySystem {
		for rep, f := range fs {
			r.runs = append(r.runs, measurement{system: sys, rep: rep, figures: f})
		}
	}
	return r
}

// p50s returns figures with the given p50 latencies, in nanoseconds.
func p50s(ns ...float64) []figures {
	out := make([]figures, len(ns))
	for i, v := range ns {
		out[i].P50 = time.Duration(v)
	}
	return out
}

func TestRatio(t *testing.T) {
	tests := []struct {
		name          string
		fanout, other []float64 // p50 by repetition
		want          float64   // NaN: none
	}{
		{"median of the same-run ratios, not the ratio of the medians", []float64{100, 200, 300}, []float64{200, 400, 250}, 0.5},
		{"even count: mean of the middle two", []float64{2, 2, 2, 2}, []float64{2, 4, 8, 1}, 0.75},
		{"a repetition not measured is left out", []float64{1, 0, 1}, []float64{2, 1, 4}, 0.375},
		{"the other not measured", []float64{1, 1, 1}, []float64{2, 0, 4}, 0.375},
		{"nothing measured", []float64{0, 0}, []float64{1, 1}, math.NaN()},
	}
	for _, tt := range tests {
		r := resultsOf(len(tt.fanout), map[string][]figures{fanoutName: p50s(tt.fanout...), grpcName: p50s(tt.other...)})
		got := r.ratio(fanoutName, grpcName, p50Figure)
		if got != tt.want && !(math.IsNaN(got) && math.IsNaN(tt.want)) {
			t.Errorf("%s: ratio = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBound(t *testing.T) {
	tests := []struct {
		b     bound
		ratio float64
		met   bool
		text  string
	}{
		{bound{0.7, true}, 0.5, true, "at most 0.7x"},
		{bound{0.7, true}, 0.7, true, "at most 0.7x"},
		{bound{1, true}, 1.01, false, "at most 1.0x"},
		{bound{0.75, false}, 0.75, true, "at least 0.75x"},
		{bound{1.5, false}, 1.49, false, "at least 1.5x"},
		{bound{1, true}, math.NaN(), false, "at most 1.0x"},
		{bound{1, false}, math.NaN(), false, "at least 1.0x"},
	}
	for _, tt := range tests {
		if got := tt.b.met(tt.ratio); got != tt.met {
			t.Errorf("%v met(%v) = %v, want %v", tt.b, tt.ratio, got, tt.met)
		}
		if got := tt.b.String(); got != tt.text {
			t.Errorf("bound%+v.String() = %q, want %q", tt.b, got, tt.text)
		}
	}
}

// TestTargets checks fanout's targets against every other system, on
// figures whose same-run ratios are known: some on a bound, which is met,
// one beyond it.
func TestTargets(t *testing.T) {
	fig := func(p50us, requests, numbers float64) figures {
		return figures{P50: time.Duration(p50us * 1e3), RequestsPerSec: requests, NumbersPerSec: numbers}
	}
	r := resultsOf(3, map[string][]figures{
		fanoutName: {fig(100, 3000, 1e6), fig(200, 3000, 2e6), fig(300, 3000, 3e6)},
		grpcName:   {fig(200, 2000, 1e6), fig(400, 1000, 1e6), fig(250, 3000, 1e6)},
		yamuxName:  {fig(100, 3000, 1e6), fig(100, 2000, 2e6), fig(400, 1500, 4e6)},
		rawName:    {fig(50, 3000, 2e6), fig(100, 3000, 2e6), fig(200, 3000, 4e6)},
	})
	type cell struct {
		ratio float64
		met   bool
	}
	want := map[string][]cell{ // by figure; against gRPC, plain yamux, raw TCP
		p50Figure.name:      {{0.5, true}, {1.0, true}, {2.0, false}},
		requestsFigure.name: {{1.5, true}, {1.5, true}, {1.0, true}},
		numbersFigure.name:  {{2.0, true}, {1.0, true}, {0.75, true}},
	}
	if len(goals) != len(want) {
		t.Fatalf("%d goals, want %d", len(goals), len(want))
	}
	for _, g := range goals {
		checks := r.checks(g)
		if len(checks) != len(comparedNames) {
			t.Fatalf("%s: %d checks, want one against each of %v", g.name, len(checks), comparedNames)
		}
		for i, c := range checks {
			if w := want[g.name][i]; c.vs != comparedNames[i] || c.ratio != w.ratio || c.met != w.met {
				t.Errorf("%s vs %s: ratio %v, met %v; want vs %s, ratio %v, met %v",
					g.name, c.vs, c.ratio, c.met, comparedNames[i], w.ratio, w.met)
			}
		}
	}
	report := r.markdown("test")
	row := "| p50 latency, 10 numbers | 0.50x | at most 0.7x | yes | 1.00x | at most 1.0x | yes | 2.00x | at most 1.5x | **no** |"
	if !strings.Contains(report, row) {
		t.Errorf("the report lacks the row\n%s\n%s", row, report)
	}
}
