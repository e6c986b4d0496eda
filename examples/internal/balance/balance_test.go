package balance_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/balance"
)

// replica answers every item with its own id and counts its calls.
func replica(id int, mu *sync.Mutex, calls map[int]int) fanout.Backend[int, int] {
	return fanout.BackendFunc[int, int](func(_ context.Context, items []int) ([]int, error) {
		mu.Lock()
		calls[id]++
		mu.Unlock()
		out := make([]int, len(items))
		for i := range out {
			out[i] = id
		}
		return out, nil
	})
}

func TestRoundRobinTakesTurns(t *testing.T) {
	var mu sync.Mutex
	calls := map[int]int{}
	rr, err := balance.NewRoundRobin(replica(0, &mu, calls), replica(1, &mu, calls), replica(2, &mu, calls))
	require.NoError(t, err)

	var got []int
	for range 6 {
		out, err := rr.Process(context.Background(), []int{7})
		require.NoError(t, err)
		got = append(got, out[0])
	}
	require.Equal(t, []int{0, 1, 2, 0, 1, 2}, got)
}

func TestRoundRobinConcurrentCallsSpreadEvenly(t *testing.T) {
	var mu sync.Mutex
	calls := map[int]int{}
	rr, err := balance.NewRoundRobin(replica(0, &mu, calls), replica(1, &mu, calls))
	require.NoError(t, err)

	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			_, err := rr.Process(context.Background(), []int{1, 2})
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.Equal(t, map[int]int{0: 50, 1: 50}, calls)
}

func TestNewRoundRobinNeedsReplicas(t *testing.T) {
	_, err := balance.NewRoundRobin[int, int]()
	require.Error(t, err)
}
