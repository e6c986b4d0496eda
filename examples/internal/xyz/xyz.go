package xyz

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/seed-c94cd834/fanout"
)

// ErrOverflow means a result does not fit in an int64. The errors of [X] and
// [Z] wrap it.
var ErrOverflow = errors.New("overflows int64")

// Exact bounds of the inputs whose results fit in an int64.
const (
	maxSquared = 3037000499              // largest n with n*n <= MaxInt64
	minZ       = (math.MinInt64 - 1) / 3 // smallest n with 3n+1 >= MinInt64
	maxZ       = (math.MaxInt64 - 1) / 3 // largest n with 3n+1 <= MaxInt64
)

// ctxCheckEvery is how many items a backend processes between two looks at
// its context: often enough to stop a big batch promptly, rarely enough to
// cost nothing.
const ctxCheckEvery = 4096

// Routes returns the names of the routes, in order: "x", "y", "z".
func Routes() []string {
	return slices.Clone(routeNames[:])
}

// Classify returns the route that owns n: "x" for negative numbers, "y" for
// even numbers >= 0 and "z" for odd positive numbers. It never fails; it
// returns an error only to have the signature of a [fanout.ClassifierFunc].
//
// It computes the route without branches: numbers of all three routes
// arrive mixed, and a branch on each would be mispredicted for about half
// of them.
func Classify(n int64) (string, error) {
	nonNegative := int(^uint64(n) >> 63) // 1 if n >= 0, else 0
	return routeNames[(1+int(n&1))*nonNegative], nil
}

// routeNames are the routes by the index Classify computes.
var routeNames = [3]string{"x", "y", "z"}

// X returns n squared, or an error wrapping [ErrOverflow] if that does not
// fit in an int64.
func X(n int64) (int64, error) {
	if n < -maxSquared || n > maxSquared {
		return 0, fmt.Errorf("x: %d squared %w", n, ErrOverflow)
	}
	return n * n, nil
}

// Y returns n / 2, truncated toward zero. It never fails.
func Y(n int64) (int64, error) {
	return n / 2, nil
}

// Z returns 3n + 1, or an error wrapping [ErrOverflow] if that does not fit
// in an int64.
func Z(n int64) (int64, error) {
	if n < minZ || n > maxZ {
		return 0, fmt.Errorf("z: 3*%d+1 %w", n, ErrOverflow)
	}
	return 3*n + 1, nil
}

// compute returns the function of a route, or nil for an unknown route.
func compute(route string) func(int64) (int64, error) {
	switch route {
	case "x":
		return X
	case "y":
		return Y
	case "z":
		return Z
	}
	return nil
}

// Backend returns the backend of a route: it applies the route's function
// ([X], [Y] or [Z]) to every item of a batch, whatever route the items
// belong to. An item whose result overflows fails alone: the call answers
// every other item, and returns a [*fanout.PartialError] listing each item
// that overflowed with its error (which wraps [ErrOverflow]). A call fails
// as a whole only with the context's error, if it is cancelled during a
// big batch. It allocates the result slice, and an error per failed item.
func Backend(route string) (fanout.Backend[int64, int64], error) {
	f := compute(route)
	if f == nil {
		return nil, fmt.Errorf("xyz: unknown route %q", route)
	}
	return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		var failed []*fanout.ItemError
		for i, n := range items {
			if i%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			v, err := f(n)
			if err != nil {
				failed = append(failed, &fanout.ItemError{Index: i, Err: err})
				continue
			}
			out[i] = v
		}
		if failed != nil {
			return out, &fanout.PartialError{Items: failed}
		}
		return out, nil
	}), nil
}

// FallbackRoute returns the name of the fallback route of route, which
// answers its numbers while every replica of it is down ("x-fallback" for
// "x"): what a number a fallback answered is labelled with.
func FallbackRoute(route string) string { return route + "-fallback" }

// Correct reports whether r is the right answer to n: [Expected]'s, from
// the route that owns n or from its fallback ([FallbackRoute]).
func Correct(n int64, r Result) bool {
	want, err := Expected(n)
	if err != nil || r.Err != "" || r.Value != want.Value {
		return false
	}
	return r.Backend == want.Backend || r.Backend == FallbackRoute(want.Backend)
}

// Expected returns the answer the example system must give for n: the route
// [Classify] chooses and that route's result, or the route's overflow error.
func Expected(n int64) (Result, error) {
	route, err := Classify(n)
	if err != nil {
		return Result{}, err
	}
	v, err := compute(route)(n)
	if err != nil {
		return Result{}, err
	}
	return Result{Value: v, Backend: route}, nil
}
