package fanout_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/seed-c94cd834/fanout"
)

func ExampleRouter() {
	// Negative numbers go to "neg", the others to "pos".
	classify := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n < 0 {
			return "neg", nil
		}
		return "pos", nil
	})
	square := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = n * n
		}
		return out, nil
	})
	half := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = n / 2
		}
		return out, nil
	})

	r, err := fanout.NewRouter(classify, map[string]fanout.Backend[int64, int64]{
		"neg": square,
		"pos": half,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Routes())

	// Both routes run at once; the answers come back in the caller's order.
	out, err := r.Process(context.Background(), []int64{-3, 10, -1, 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out)
	// Output:
	// [neg pos]
	// [9 5 1 2]
}

func ExampleWithPartialResults() {
	parity := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n%2 == 0 {
			return "even", nil
		}
		return "odd", nil
	})
	double := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})
	refuse := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, errors.New("odd numbers are not supported")
	})

	r, err := fanout.NewRouter(parity, map[string]fanout.Backend[int64, int64]{
		"even": double,
		"odd":  refuse,
	}, fanout.WithPartialResults())
	if err != nil {
		fmt.Println(err)
		return
	}

	out, err := r.Process(context.Background(), []int64{2, 3, 4, 5})
	fmt.Println(out)
	var pe *fanout.PartialError
	if errors.As(err, &pe) {
		for _, re := range pe.Failed {
			fmt.Printf("route %s failed for items %v: %v\n", re.Route, re.Indices, re.Err)
		}
	}
	// Output:
	// [4 0 8 0]
	// route odd failed for items [1 3]: odd numbers are not supported
}

func ExampleBackendFunc() {
	negate := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = -n
		}
		return out, nil
	})

	// negate is a fanout.Backend: it can be a route of a Router, or be served
	// over the network.
	var b fanout.Backend[int64, int64] = negate
	out, err := b.Process(context.Background(), []int64{1, -2, 3})
	fmt.Println(out, err)
	// Output:
	// [-1 2 -3] <nil>
}

func ExampleClassifierFunc() {
	errZero := errors.New("zero has no sign")
	sign := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		switch {
		case n < 0:
			return "negative", nil
		case n > 0:
			return "positive", nil
		default:
			return "", errZero
		}
	})

	for _, n := range []int64{-7, 7, 0} {
		route, err := sign.Classify(n)
		if err != nil {
			fmt.Printf("%d: error: %v\n", n, err)
			continue
		}
		fmt.Printf("%d: %s\n", n, route)
	}
	// Output:
	// -7: negative
	// 7: positive
	// 0: error: zero has no sign
}
