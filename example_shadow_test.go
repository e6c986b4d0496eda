package fanout_test

import (
	"context"
	"fmt"

	"github.com/seed-c94cd834/fanout"
)

func ExampleNewShadow() {
	// The service in production, and a new version that rounds 3 up.
	current := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})
	next := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
			if n == 3 {
				out[i]++
			}
		}
		return out, nil
	})

	s, err := fanout.NewShadow[int64, int64](current, next, nil, fanout.WithShadowFraction(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := s.Process(context.Background(), []int64{1, 2, 3, 4})
	fmt.Println(out, err) // the primary's answer, whatever the candidate says

	s.Close() // waits for the mirrored call, so that the counts are final
	fmt.Printf("%+v\n", s.Stats())
	for _, m := range s.Mismatches() {
		fmt.Printf("item %d: primary %d, candidate %d\n", m.Item, m.Primary, m.Candidate)
	}
	// Output:
	// [2 4 6 8] <nil>
	// {Mirrored:1 Dropped:0 Matches:3 Mismatches:1 Errors:0}
	// item 3: primary 6, candidate 7
}
