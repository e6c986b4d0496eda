package fanout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
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

// BenchmarkRouterFanOut compares the ways a router can call its routes
// concurrently: on its workers, which keep their grown stacks between
// calls, with the last route on the caller's goroutine (workers.go), or on
// a goroutine per route started by an errgroup.Group. "local" routes
// answer in the caller's process; "transport" routes are clients of three
// servers on loopback, whose calls go deep into the stack.
func BenchmarkRouterFanOut(b *testing.B) {
	routes := map[string]map[string]fanout.Backend[int64, int64]{
		"local":     {"r0": increment, "r1": increment, "r2": increment},
		"transport": {"r0": served(b, increment), "r1": served(b, increment), "r2": served(b, increment)},
	}
	for _, backends := range []string{"local", "transport"} {
		for _, size := range []int{10, 1000} {
			for _, strategy := range []string{"workers", "errgroup"} {
				r, err := fanout.NewRouter(byMod3, routes[backends])
				if err != nil {
					b.Fatal(err)
				}
				if strategy == "errgroup" {
					fanout.UseErrgroup(r)
				}
				b.Run(fmt.Sprintf("%s/batch=%d/%s", backends, size, strategy), func(b *testing.B) {
					benchmarkProcess(b, r, size)
				})
			}
		}
	}
}

// BenchmarkRouterRouteLookup compares the ways a router can find an item's
// route from the name its classifier returns: through the route guesses
// (routeGuesses in router.go), or by a lookup in the map of names. The
// items are mixed as in BenchmarkRouterProcessMixed.
func BenchmarkRouterRouteLookup(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1000, 1_000_000} {
		items := make([]int64, size)
		for i := range items {
			items[i] = rng.Int64()
		}
		for _, lookup := range []string{"guesses", "map"} {
			r, err := fanout.NewRouter(byMod3, map[string]fanout.Backend[int64, int64]{
				"r0": increment, "r1": increment, "r2": increment,
			})
			if err != nil {
				b.Fatal(err)
			}
			if lookup == "map" {
				fanout.UseMapLookup(r)
			}
			b.Run(fmt.Sprintf("batch=%d/%s", size, lookup), func(b *testing.B) {
				benchmarkItems(b, r, items)
			})
		}
	}
}

// served serves backend over a transport server on loopback for the
// benchmark's duration and returns a client of it.
func served(b testing.TB, backend fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := transport.NewServer(backend, transport.Int64(), transport.Int64(), transport.WithLogger(nil))
	go srv.Serve(l)
	c := transport.NewClient(l.Addr().String(), transport.Int64(), transport.Int64(), transport.WithLogger(nil))
	b.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return c
}
