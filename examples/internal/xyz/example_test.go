package xyz_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

func ExampleExpected() {
	for _, n := range []int64{-3, 4, 7, -3037000500} {
		r, err := xyz.Expected(n)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%d -> %d (backend %s)\n", n, r.Value, r.Backend)
	}
	// Output:
	// -3 -> 9 (backend x)
	// 4 -> 2 (backend y)
	// 7 -> 22 (backend z)
	// x: -3037000500 squared overflows int64
}

func ExampleLabel() {
	z := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, errors.New("connection refused")
	})
	_, err := xyz.Label("z", z).Process(context.Background(), []int64{1, 5})
	fmt.Println(err)
	// Output:
	// z could not process numbers 1, 5: connection refused
}

func ExamplePerItem() {
	routes := map[string]fanout.Backend[int64, int64]{}
	for _, route := range xyz.Routes() {
		b, err := xyz.Backend(route)
		if err != nil {
			panic(err)
		}
		routes[route] = xyz.Label(route, b)
	}
	r, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults())
	if err != nil {
		panic(err)
	}

	// -3037000500 overflows on x: it fails alone, and every other number,
	// -3 on x too, is answered. The failures come beside the answers.
	numbers := []int64{-3, 4, -3037000500, 7}
	out, err := xyz.PerItem(r).Process(context.Background(), numbers)
	if pe, ok := err.(*fanout.PartialError); ok {
		out = xyz.Annotate(out, len(numbers), pe)
	} else if err != nil {
		panic(err)
	}
	for _, res := range out {
		if res.Failed() {
			fmt.Printf("failed (backend %s): %s\n", res.Backend, res.Err)
			continue
		}
		fmt.Printf("%d (backend %s)\n", res.Value, res.Backend)
	}
	// Output:
	// 9 (backend x)
	// 2 (backend y)
	// failed (backend x): x: -3037000500 squared overflows int64
	// 22 (backend z)
}
