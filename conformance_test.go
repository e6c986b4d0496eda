package fanout_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
)

// byMod3 routes n to "r0", "r1" or "r2" by n mod 3, negative numbers included
// (in Go, -4 % 3 is -1).
var byMod3 = fanout.ClassifierFunc[int64](func(n int64) (string, error) {
	return mod3Names[(n%3+3)%3], nil
})

var mod3Names = [3]string{"r0", "r1", "r2"}

func mod3Router(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
	r, err := fanout.NewRouter(byMod3, map[string]fanout.Backend[int64, int64]{"r0": leaf, "r1": leaf, "r2": leaf})
	require.NoError(t, err)
	return r
}

func TestBackendConformance(t *testing.T) {
	tests := []struct {
		name string
		wrap backendtest.Wrap
	}{
		{
			// A BackendFunc over leaf. It answers an empty batch itself:
			// the suite requires that no empty batch reaches the leaf, which
			// a bare BackendFunc(leaf.Process) would not meet.
			name: "BackendFunc",
			wrap: func(_ *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
				return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
					if len(items) == 0 {
						return []int64{}, nil
					}
					return leaf.Process(ctx, items)
				})
			},
		},
		{
			name: "Router",
			wrap: mod3Router,
		},
		{
			// The alternatives the benchmarks measure the router against
			// (export_test.go) must be correct for the comparison to count.
			name: "RouterWithErrgroup",
			wrap: func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
				r := mod3Router(t, leaf).(*fanout.Router[int64, int64])
				fanout.UseErrgroup(r)
				return r
			},
		},
		{
			name: "RouterWithMapLookup",
			wrap: func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
				r := mod3Router(t, leaf).(*fanout.Router[int64, int64])
				fanout.UseMapLookup(r)
				return r
			},
		},
		{
			name: "NestedRouter",
			wrap: func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
				inner := mod3Router(t, leaf)
				r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{"neg": inner, "nonneg": inner})
				require.NoError(t, err)
				return r
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backendtest.Run(t, tc.wrap)
		})
	}
}
