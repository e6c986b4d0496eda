package main

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

func TestNumberRangesDoNotOverflow(t *testing.T) {
	// The ends of the ranges number draws from.
	ends := map[int64]string{-maxNegated: "x", -1: "x", 0: "y", maxEven: "y", 1: "z", maxOdd: "z"}
	for n, route := range ends {
		got, err := xyz.Expected(n)
		require.NoError(t, err, "number %d", n)
		require.Equal(t, route, got.Backend, "number %d", n)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	routes := map[string]int{}
	for range 100_000 {
		n := number(rng)
		got, err := xyz.Expected(n)
		require.NoError(t, err, "number %d", n)
		routes[got.Backend]++
	}
	require.Len(t, routes, 3, "every route gets numbers")
}
