package transport_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// failOdd answers each even item with its double and fails each odd one
// alone.
var failOdd = fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	var pe fanout.PartialError
	for i, n := range items {
		if n%2 != 0 {
			pe.Items = append(pe.Items, &fanout.ItemError{Index: i, Err: fmt.Errorf("%d is odd", n)})
			continue
		}
		out[i] = 2 * n
	}
	if pe.Items != nil {
		return out, &pe
	}
	return out, nil
})

var down = fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
	return nil, fmt.Errorf("route down: %w", fanout.ErrUnavailable)
})

// bySign routes negative numbers to "neg", the others to "nonneg".
var bySign = fanout.ClassifierFunc[int64](func(n int64) (string, error) {
	if n < 0 {
		return "neg", nil
	}
	return "nonneg", nil
})

func TestItemFailuresCrossTheWire(t *testing.T) {
	c := client(t, serve(t, failOdd))
	out, err := c.Process(t.Context(), []int64{2, 3, 4, 5})
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, []int64{4, 0, 8, 0}, out)
	require.Empty(t, pe.Failed)
	require.Len(t, pe.Items, 2)
	for i, want := range []struct {
		index int
		msg   string
	}{{1, "3 is odd"}, {3, "5 is odd"}} {
		ie := pe.Items[i]
		require.Equal(t, want.index, ie.Index)
		require.Empty(t, ie.Route, "the server's backend failed it itself")
		var re *transport.RemoteError
		require.ErrorAs(t, ie, &re)
		require.Equal(t, transport.CodeBackend, re.Code)
		require.Equal(t, want.msg, re.Message)
	}

	// The stream stays fit for the next call.
	out, err = c.Process(t.Context(), []int64{6})
	require.NoError(t, err)
	require.Equal(t, []int64{12}, out)
}

func TestPartialResultsSurviveHops(t *testing.T) {
	// leaf servers -> router "inner" (served) -> router "outer" (served) -> client.
	inner, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{
		"neg":    down, // unavailable at the inner router
		"nonneg": client(t, serve(t, failOdd)),
	}, fanout.WithPartialResults())
	require.NoError(t, err)
	byRange := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n < 100 {
			return "m", nil
		}
		return "big", nil
	})
	outer, err := fanout.NewRouter(byRange, map[string]fanout.Backend[int64, int64]{
		"m":   client(t, serve(t, inner)),
		"big": client(t, serve(t, failOdd)),
	}, fanout.WithPartialResults())
	require.NoError(t, err)
	c := client(t, serve(t, outer))

	items := []int64{200, -1, 2, 301, 3, -4}
	out, err := c.Process(t.Context(), items)
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe, "a *PartialError on the far side: %v", err)
	require.Equal(t, []int64{400, 0, 4, 0, 0, 0}, out)

	require.Len(t, pe.Failed, 1)
	require.Equal(t, "m/neg", pe.Failed[0].Route)
	require.Equal(t, []int{1, 5}, pe.Failed[0].Indices)
	require.ErrorIs(t, pe.Failed[0], fanout.ErrUnavailable, "the cause's kind survives")
	require.ErrorContains(t, pe.Failed[0], "route down")

	require.Len(t, pe.Items, 2)
	require.Equal(t, 3, pe.Items[0].Index)
	require.Equal(t, "big", pe.Items[0].Route)
	require.ErrorContains(t, pe.Items[0], "301 is odd")
	require.Equal(t, 4, pe.Items[1].Index)
	require.Equal(t, "m/nonneg", pe.Items[1].Route)
	var re *transport.RemoteError
	require.ErrorAs(t, pe.Items[1], &re)
	require.Equal(t, "3 is odd", re.Message, "the text the leaf gave, not wrapped once per hop")
}

func TestEveryRouteFailingCrossesTheWireWithoutResults(t *testing.T) {
	r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{
		"neg": down, "nonneg": down,
	}, fanout.WithPartialResults())
	require.NoError(t, err)
	out, err := client(t, serve(t, r)).Process(t.Context(), []int64{-1, 1, 2})
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Nil(t, out)
	require.Len(t, pe.Failed, 2)
	require.Equal(t, []int{0}, pe.Failed[0].Indices)
	require.Equal(t, []int{1, 2}, pe.Failed[1].Indices)
}

func TestChunkedCallMergesItsChunksFailures(t *testing.T) {
	r, err := fanout.NewRouter(bySign, map[string]fanout.Backend[int64, int64]{
		"neg": down, "nonneg": failOdd,
	}, fanout.WithPartialResults())
	require.NoError(t, err)
	c := client(t, serve(t, r), transport.WithChunks(3, 2))

	items := []int64{-1, 2, 3, -4, 6, 7, 8, -9}
	out, err := c.Process(t.Context(), items)
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, []int64{0, 4, 0, 0, 12, 0, 16, 0}, out)
	require.Len(t, pe.Failed, 1, "one route, one error: merged across chunks")
	require.Equal(t, "neg", pe.Failed[0].Route)
	require.Equal(t, []int{0, 3, 7}, pe.Failed[0].Indices)
	var idx []int
	for _, ie := range pe.Items {
		idx = append(idx, ie.Index)
	}
	require.Equal(t, []int{2, 5}, idx)
}

func TestServerRefusesABrokenPartialAnswer(t *testing.T) {
	broken := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		return make([]int64, len(items)), &fanout.PartialError{Items: []*fanout.ItemError{{Index: len(items), Err: errors.New("past the end")}}}
	})
	c := client(t, serve(t, broken))
	_, err := c.Process(t.Context(), []int64{1, 2})
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.NotErrorAs(t, err, new(*fanout.PartialError))
	require.Equal(t, transport.CodeInternal, re.Code)
	require.Contains(t, re.Message, "index 2, in a batch of 2 items")
}
