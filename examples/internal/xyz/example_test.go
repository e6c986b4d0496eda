package xyz_test

import (
	"context"
	"fmt"

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

func ExampleTag() {
	z, err := xyz.Backend("z")
	if err != nil {
		panic(err)
	}
	out, err := xyz.Tag("z", z).Process(context.Background(), []int64{1, 5})
	fmt.Println(out, err)
	// Output:
	// [{4 z} {16 z}] <nil>
}
