package main

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve the raw TCP and gRPC roles, as the
// bench program does: the benchmark runs its own executable for them.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "role" {
		os.Exit(runRole(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestBenchmark runs all three systems briefly and checks that every answer
// was right and every figure was measured.
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
	for _, sys := range []string{fanoutName, rawName, grpcName} {
		for _, fig := range allFigures {
			if v := median(res.values(sys, fig)); !(v > 0) {
				t.Errorf("%s: %s is %v, want a positive figure", sys, fig.name, v)
			}
		}
	}

	report := res.markdown("go test")
	for _, want := range []string{"| p50 latency, 10 numbers |", "| requests/s, 64 callers of 10 numbers |", "| numbers/s, 1,000,000-number requests |", "Wrong answers: 0."} {
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
