package fanout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/seed-c94cd834/fanout"
)

// increment is a backend with trivial compute, so the benchmarks measure the
// router's own cost: classifying, grouping, goroutines and gathering.
var increment = fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = n + 1
	}
	return out, nil
})

var benchSizes = []int{10, 1000, 1_000_000}

// BenchmarkRouterProcess spreads every batch evenly over three routes.
func BenchmarkRouterProcess(b *testing.B) {
	r, err := fanout.NewRouter(byMod3, map[string]fanout.Backend[int64, int64]{
		"r0": increment, "r1": increment, "r2": increment,
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("routes=3/batch=%d", size), func(b *testing.B) {
			benchmarkProcess(b, r, size)
		})
	}
}

// BenchmarkRouterProcessMixed spreads every batch over three routes in no
// regular order, as mixed traffic arrives: which route an item takes cannot
// be predicted from the items before it.
func BenchmarkRouterProcessMixed(b *testing.B) {
	r, err := fanout.NewRouter(byMod3, map[string]fanout.Backend[int64, int64]{
		"r0": increment, "r1": increment, "r2": increment,
	})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range benchSizes[1:] {
		items := make([]int64, size)
		for i := range items {
			items[i] = rng.Int64()
		}
		b.Run(fmt.Sprintf("routes=3/batch=%d", size), func(b *testing.B) {
			benchmarkItems(b, r, items)
		})
	}
}

// BenchmarkRouterProcessSingleRoute sends every item of a batch to the same
// route, the path where the router hands the batch over without grouping.
func BenchmarkRouterProcessSingleRoute(b *testing.B) {
	all := fanout.ClassifierFunc[int64](func(int64) (string, error) { return "all", nil })
	r, err := fanout.NewRouter(all, map[string]fanout.Backend[int64, int64]{"all": increment})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("routes=1/batch=%d", size), func(b *testing.B) {
			benchmarkProcess(b, r, size)
		})
	}
}

func benchmarkProcess(b *testing.B, r *fanout.Router[int64, int64], size int) {
	items := make([]int64, size)
	for i := range items {
		items[i] = int64(i)
	}
	benchmarkItems(b, r, items)
}

func benchmarkItems(b *testing.B, r *fanout.Router[int64, int64], items []int64) {
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(items)) * 8)
	for b.Loop() {
		if _, err := r.Process(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
}
