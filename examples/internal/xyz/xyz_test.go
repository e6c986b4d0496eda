package xyz_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{math.MinInt64, "x"},
		{-3, "x"},
		{-2, "x"},
		{-1, "x"},
		{0, "y"},
		{1, "z"},
		{2, "y"},
		{3, "z"},
		{math.MaxInt64 - 1, "y"},
		{math.MaxInt64, "z"},
	}
	for _, tt := range tests {
		got, err := xyz.Classify(tt.n)
		require.NoError(t, err)
		require.Equal(t, tt.want, got, "Classify(%d)", tt.n)
	}
	// Classify computes the route without branches; it must agree with the
	// routing table's plain reading on numbers of every size and sign.
	plain := func(n int64) string {
		switch {
		case n < 0:
			return "x"
		case n%2 == 0:
			return "y"
		}
		return "z"
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		n := rng.Int64() >> rng.IntN(64) // magnitudes from 0 to MaxInt64
		if rng.IntN(2) == 0 {
			n = -n - 1
		}
		got, err := xyz.Classify(n)
		require.NoError(t, err)
		if got != plain(n) {
			require.Equal(t, plain(n), got, "Classify(%d)", n)
		}
	}
}

func TestRouteFunctions(t *testing.T) {
	tests := []struct {
		name    string
		f       func(int64) (int64, error)
		n       int64
		want    int64
		wantErr string // empty: no error
	}{
		{"x", xyz.X, 0, 0, ""},
		{"x", xyz.X, -1, 1, ""},
		{"x", xyz.X, -3, 9, ""},
		{"x", xyz.X, 1, 1, ""},
		{"x", xyz.X, -3037000499, 9223372030926249001, ""},
		{"x", xyz.X, 3037000499, 9223372030926249001, ""},
		{"x", xyz.X, -3037000500, 0, "x: -3037000500 squared overflows int64"},
		{"x", xyz.X, 3037000500, 0, "x: 3037000500 squared overflows int64"},
		{"x", xyz.X, math.MinInt64, 0, "x: -9223372036854775808 squared overflows int64"},
		{"x", xyz.X, math.MaxInt64, 0, "x: 9223372036854775807 squared overflows int64"},

		{"y", xyz.Y, 0, 0, ""},
		{"y", xyz.Y, 1, 0, ""},
		{"y", xyz.Y, 4, 2, ""},
		{"y", xyz.Y, math.MaxInt64 - 1, math.MaxInt64 / 2, ""},
		{"y", xyz.Y, math.MaxInt64, math.MaxInt64 / 2, ""},
		{"y", xyz.Y, math.MinInt64, math.MinInt64 / 2, ""},

		{"z", xyz.Z, 1, 4, ""},
		{"z", xyz.Z, 7, 22, ""},
		{"z", xyz.Z, 0, 1, ""},
		{"z", xyz.Z, -1, -2, ""},
		{"z", xyz.Z, (math.MaxInt64 - 1) / 3, math.MaxInt64, ""},
		{"z", xyz.Z, (math.MaxInt64-1)/3 + 1, 0, "z: 3*3074457345618258603+1 overflows int64"},
		{"z", xyz.Z, math.MaxInt64, 0, "z: 3*9223372036854775807+1 overflows int64"},
		{"z", xyz.Z, -3074457345618258603, math.MinInt64, ""},
		{"z", xyz.Z, -3074457345618258604, 0, "z: 3*-3074457345618258604+1 overflows int64"},
		{"z", xyz.Z, math.MinInt64, 0, "z: 3*-9223372036854775808+1 overflows int64"},
	}
	for _, tt := range tests {
		got, err := tt.f(tt.n)
		if tt.wantErr != "" {
			require.ErrorIs(t, err, xyz.ErrOverflow, "%s(%d)", tt.name, tt.n)
			require.EqualError(t, err, tt.wantErr)
			continue
		}
		require.NoError(t, err, "%s(%d)", tt.name, tt.n)
		require.Equal(t, tt.want, got, "%s(%d)", tt.name, tt.n)
	}
}

func TestExpected(t *testing.T) {
	tests := []struct {
		n       int64
		want    xyz.Result
		wantErr string
	}{
		{0, xyz.Result{Value: 0, Backend: "y"}, ""},
		{-1, xyz.Result{Value: 1, Backend: "x"}, ""},
		{1, xyz.Result{Value: 4, Backend: "z"}, ""},
		{-3, xyz.Result{Value: 9, Backend: "x"}, ""},
		{4, xyz.Result{Value: 2, Backend: "y"}, ""},
		{-3037000499, xyz.Result{Value: 9223372030926249001, Backend: "x"}, ""},
		{-3037000500, xyz.Result{}, "x: -3037000500 squared overflows int64"},
		{math.MinInt64, xyz.Result{}, "x: -9223372036854775808 squared overflows int64"},
		{math.MaxInt64 - 1, xyz.Result{Value: math.MaxInt64 / 2, Backend: "y"}, ""},
		{math.MaxInt64, xyz.Result{}, "z: 3*9223372036854775807+1 overflows int64"},
		{3074457345618258601, xyz.Result{Value: math.MaxInt64 - 3, Backend: "z"}, ""},
		{3074457345618258603, xyz.Result{}, "z: 3*3074457345618258603+1 overflows int64"},
	}
	for _, tt := range tests {
		got, err := xyz.Expected(tt.n)
		if tt.wantErr != "" {
			require.EqualError(t, err, tt.wantErr)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tt.want, got, "Expected(%d)", tt.n)
	}
}

func TestBackend(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		route  string
		in     []int64
		want   []int64
		failed map[int]string // index: error text
	}{
		{"x", []int64{-1, -2, -3}, []int64{1, 4, 9}, nil},
		{"y", []int64{0, 2, 10}, []int64{0, 1, 5}, nil},
		{"z", []int64{1, 3, 5}, []int64{4, 10, 16}, nil},
		{"x", []int64{}, []int64{}, nil},
		{"x", []int64{-1, -3037000500, math.MinInt64}, []int64{1, 0, 0}, map[int]string{
			1: "x: -3037000500 squared overflows int64",
			2: "x: -9223372036854775808 squared overflows int64",
		}},
		{"z", []int64{1, math.MaxInt64, 3}, []int64{4, 0, 10}, map[int]string{1: "z: 3*9223372036854775807+1 overflows int64"}},
	}
	for _, tt := range tests {
		b, err := xyz.Backend(tt.route)
		require.NoError(t, err)
		got, err := b.Process(ctx, tt.in)
		require.Equal(t, tt.want, got, "every number that fits is answered")
		if tt.failed == nil {
			require.NoError(t, err)
			continue
		}
		pe, ok := err.(*fanout.PartialError)
		require.True(t, ok, "a *PartialError, not wrapped: %v", err)
		require.Empty(t, pe.Failed)
		failed := map[int]string{}
		for _, ie := range pe.Items {
			require.ErrorIs(t, ie, xyz.ErrOverflow)
			failed[ie.Index] = ie.Err.Error()
		}
		require.Equal(t, tt.failed, failed)
	}
}

func TestBackendUnknownRoute(t *testing.T) {
	_, err := xyz.Backend("w")
	require.EqualError(t, err, `xyz: unknown route "w"`)
}

func TestBackendStopsWhenCancelled(t *testing.T) {
	b, err := xyz.Backend("y")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.Process(ctx, make([]int64, 100_000))
	require.ErrorIs(t, err, context.Canceled)
}

func TestBackendAllocatesOnlyTheResult(t *testing.T) {
	b, err := xyz.Backend("z")
	require.NoError(t, err)
	in := make([]int64, 10_000)
	for i := range in {
		in[i] = int64(2*i + 1)
	}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := b.Process(ctx, in); err != nil {
			t.Fatal(err)
		}
	})
	require.Equal(t, 1.0, allocs)
}

func TestLabel(t *testing.T) {
	b, err := xyz.Backend("x")
	require.NoError(t, err)
	labelled := xyz.Label("x", b)

	got, err := labelled.Process(context.Background(), []int64{-2, -5})
	require.NoError(t, err)
	require.Equal(t, []int64{4, 25}, got)

	// A number that overflows is failed alone, as the backend did.
	got, err = labelled.Process(context.Background(), []int64{math.MinInt64, -1})
	require.ErrorIs(t, err, xyz.ErrOverflow)
	require.IsType(t, &fanout.PartialError{}, err)
	require.Equal(t, []int64{0, 1}, got)

	// A failure that is not the backend's own answer names the numbers.
	down := errors.New("connection refused")
	failing := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) { return nil, down })
	tests := []struct {
		items []int64
		want  string
	}{
		{[]int64{7}, "z could not process 7: connection refused"},
		{[]int64{7, 9}, "z could not process numbers 7, 9: connection refused"},
		{[]int64{1, 3, 5, 7, 9, 11, 13, 15, 17}, "z could not process numbers 1, 3, 5, 7, 9, 11, 13, 15, ... (9 in all): connection refused"},
	}
	for _, tt := range tests {
		_, err = xyz.Label("z", failing).Process(context.Background(), tt.items)
		require.ErrorIs(t, err, down)
		require.EqualError(t, err, tt.want)
	}

	// A transport client's redial note is its own plan, not the user's.
	waiting := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, fmt.Errorf("%w: dial tcp 127.0.0.1:7003: connection refused (next attempt in 44ms)", fanout.ErrUnavailable)
	})
	_, err = xyz.Label("z", waiting).Process(context.Background(), []int64{7})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.EqualError(t, err, "z could not process 7: backend unavailable: dial tcp 127.0.0.1:7003: connection refused")
}

func BenchmarkBackend(b *testing.B) {
	be, err := xyz.Backend("z")
	require.NoError(b, err)
	in := make([]int64, 65536)
	for i := range in {
		in[i] = int64(2*i + 1)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Process(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPerItem(t *testing.T) {
	down := errors.New("connection refused")
	routes := map[string]fanout.Backend[int64, int64]{}
	for _, route := range xyz.Routes() {
		b, err := xyz.Backend(route)
		require.NoError(t, err)
		routes[route] = xyz.Label(route, b)
	}
	routes["z"] = xyz.Label("z", fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) { return nil, down }))
	r, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults())
	require.NoError(t, err)
	b := xyz.PerItem(r)
	ctx := context.Background()

	// The router's partial answer comes back as it is, beside the answers
	// labelled with their route; Annotate sets the failures in them.
	got, err := b.Process(ctx, []int64{-2, 1, 4, 3, -3037000500})
	pe, ok := err.(*fanout.PartialError)
	require.True(t, ok, "a *PartialError: %v", err)
	require.Len(t, pe.Failed, 1)
	require.Equal(t, []int{1, 3}, pe.Failed[0].Indices)
	require.Len(t, pe.Items, 1)
	require.Equal(t, 4, pe.Items[0].Index)
	zErr := "z could not process numbers 1, 3: connection refused"
	require.Equal(t, []xyz.Result{
		{Value: 4, Backend: "x"}, {Backend: "z", Err: zErr}, {Value: 2, Backend: "y"}, {Backend: "z", Err: zErr},
		{Backend: "x", Err: "x: -3037000500 squared overflows int64"},
	}, xyz.Annotate(got, 5, pe))
	require.False(t, got[0].Failed())
	require.True(t, got[1].Failed())

	got, err = b.Process(ctx, []int64{5, 7})
	require.IsType(t, &fanout.PartialError{}, err)
	require.Nil(t, got, "every route failed: no answer")
	require.Equal(t, []xyz.Result{
		{Backend: "z", Err: "z could not process numbers 5, 7: connection refused"},
		{Backend: "z", Err: "z could not process numbers 5, 7: connection refused"},
	}, xyz.Annotate(got, 2, err.(*fanout.PartialError)))

	got, err = b.Process(ctx, []int64{})
	require.NoError(t, err)
	require.Empty(t, got)

	// A route still at work when the routes' deadline passes, a margin
	// before the call's, fails alone: the call answers with what came back.
	routes["z"] = xyz.Label("z", fanout.BackendFunc[int64, int64](func(ctx context.Context, _ []int64) ([]int64, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	r, err = fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults(),
		fanout.WithDeadlineMargin(0.5, time.Minute))
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	got, err = xyz.PerItem(r).Process(short, []int64{-1, 1})
	pe = nil
	require.ErrorAs(t, err, &pe)
	answers := xyz.Annotate(got, 2, pe)
	require.Equal(t, xyz.Result{Value: 1, Backend: "x"}, answers[0])
	require.Equal(t, "z", answers[1].Backend)
	require.Regexp(t, `^z could not process 1: context deadline exceeded \(the route's deadline passed, [0-9]+ms before the call's\)$`, answers[1].Err)

	// Without a margin, a call whose deadline passes while a route is at
	// work fails as a whole, with the deadline's error, even though another
	// route answered.
	r, err = fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults(),
		fanout.WithDeadlineMargin(0, 0))
	require.NoError(t, err)
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = xyz.PerItem(r).Process(short, []int64{-1, 1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorAs(t, err, new(*fanout.PartialError))

	// So does a call whose route failed at a backend's deadline, later than
	// the call's own, while the call's context does not yet say that its
	// deadline passed: its timer can fire late on a busy machine.
	routes["z"] = xyz.Label("z", fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, fmt.Errorf("remote: %w", context.DeadlineExceeded)
	}))
	r, err = fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults())
	require.NoError(t, err)
	_, err = xyz.PerItem(r).Process(lateTimer{ctx, time.Now().Add(-time.Millisecond)}, []int64{-1, 1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorAs(t, err, new(*fanout.PartialError))

	// An error that is not a partial failure is the call's: here, from a
	// router built without partial results.
	routes["z"] = fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, down
	})
	r, err = fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes)
	require.NoError(t, err)
	_, err = xyz.PerItem(r).Process(ctx, []int64{1})
	require.ErrorIs(t, err, down)
	require.ErrorAs(t, err, new(*fanout.RouteError))
}

// lateTimer is a context whose deadline has passed but whose timer has not
// fired yet: Err is still nil.
type lateTimer struct {
	context.Context
	deadline time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }

// BenchmarkClassify classifies numbers of all three routes in no regular
// order, as the middle layer gets them.
func BenchmarkClassify(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	numbers := make([]int64, 1_000_000)
	for i := range numbers {
		numbers[i] = rng.Int64N(2_000_001) - 1_000_000
	}
	var perRoute [3]int
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range numbers {
			route, _ := xyz.Classify(n)
			perRoute[route[0]-'x']++
		}
	}
	if perRoute[0] == 0 || perRoute[1] == 0 || perRoute[2] == 0 {
		b.Fatalf("a route got no numbers: %v", perRoute)
	}
}

// BenchmarkPerItem answers a million numbers of all three routes in no
// regular order through PerItem over a router of the local backends, with
// each answer handed back as a transport server hands it: the middle
// layer's work without the network.
func BenchmarkPerItem(b *testing.B) {
	routes := map[string]fanout.Backend[int64, int64]{}
	for _, route := range xyz.Routes() {
		be, err := xyz.Backend(route)
		require.NoError(b, err)
		routes[route] = xyz.Label(route, be)
	}
	r, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults())
	require.NoError(b, err)
	p := xyz.PerItem(r)
	rec := p.(transport.Recycler[xyz.Result])
	rng := rand.New(rand.NewPCG(1, 2))
	numbers := make([]int64, 1_000_000)
	for i := range numbers {
		numbers[i] = rng.Int64N(2_000_001) - 1_000_000
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, err := p.Process(ctx, numbers)
		if err != nil {
			b.Fatal(err)
		}
		rec.Recycle(out)
	}
}
