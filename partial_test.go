package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
)

// errOdd is the error of failOdd for an odd item.
var errOdd = errors.New("odd items fail")

// failOdd is a leaf that answers each even item with its double and fails
// each odd one alone, with a *PartialError that lists them.
var failOdd = fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	var pe fanout.PartialError
	for i, n := range items {
		if n%2 != 0 {
			pe.Items = append(pe.Items, &fanout.ItemError{Index: i, Err: fmt.Errorf("%d: %w", n, errOdd)})
			continue
		}
		out[i] = 2 * n
	}
	if pe.Items != nil {
		return out, &pe
	}
	return out, nil
})

// double answers every item with its double.
var double = fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = 2 * n
	}
	return out, nil
})

// itemIndices returns the index and route of every item error of pe.
func itemIndices(pe *fanout.PartialError) map[int]string {
	m := make(map[int]string)
	for _, ie := range pe.Items {
		m[ie.Index] = ie.Route
	}
	return m
}

func TestRouterKeepsItemFailuresPerItem(t *testing.T) {
	// "nonneg" fails its odd items alone; "neg" answers all of its own.
	items := []int64{-3, 4, 5, -8, 6, 7}
	routes := map[string]fanout.Backend[int64, int64]{"neg": double, "nonneg": failOdd}

	r := mustRouter(t, bySign, routes, fanout.WithPartialResults())
	out, err := r.Process(t.Context(), items)
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Empty(t, pe.Failed, "no route failed as a whole")
	require.Equal(t, map[int]string{2: "nonneg", 5: "nonneg"}, itemIndices(pe), "indices in the caller's batch")
	require.ErrorIs(t, err, errOdd)
	require.ErrorContains(t, pe.Items[0], "5: odd items fail")
	require.Equal(t, []int64{-6, 8, 0, -16, 12, 0}, out, "every other item answered, the failed ones zero")

	// Without partial results, the call fails and names the first item.
	r = mustRouter(t, bySign, routes)
	out, err = r.Process(t.Context(), items)
	require.Nil(t, out)
	var re *fanout.RouteError
	require.ErrorAs(t, err, &re)
	require.NotErrorAs(t, err, new(*fanout.PartialError))
	require.Equal(t, "nonneg", re.Route)
	require.Equal(t, []int{2}, re.Indices)
	require.ErrorIs(t, err, errOdd)

	// One route only: the batch goes to it whole, and the same holds.
	r = mustRouter(t, bySign, routes, fanout.WithPartialResults())
	out, err = r.Process(t.Context(), []int64{1, 2, 3})
	require.ErrorAs(t, err, &pe)
	require.Equal(t, map[int]string{0: "nonneg", 2: "nonneg"}, itemIndices(pe))
	require.Equal(t, []int64{0, 4, 0}, out)
	r = mustRouter(t, bySign, routes)
	_, err = r.Process(t.Context(), []int64{2, 3, 5})
	require.ErrorAs(t, err, &re)
	require.Equal(t, []int{1}, re.Indices)
}

func TestNestedRoutersKeepPathsAndIndices(t *testing.T) {
	// inner routes by sign: "neg" is down, "nonneg" fails odd items.
	down := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, fanout.ErrUnavailable
	})
	inner := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": down, "nonneg": failOdd}, fanout.WithPartialResults())
	// outer sends items below 100 to inner ("m"), the rest to "big".
	byRange := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n < 100 {
			return "m", nil
		}
		return "big", nil
	})
	outer := mustRouter(t, byRange, map[string]fanout.Backend[int64, int64]{"m": inner, "big": double}, fanout.WithPartialResults())

	items := []int64{200, -1, 2, 300, 3, -4}
	out, err := outer.Process(t.Context(), items)
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Len(t, pe.Failed, 1)
	require.Equal(t, "m/neg", pe.Failed[0].Route)
	require.Equal(t, []int{1, 5}, pe.Failed[0].Indices, "the outer call's indices")
	require.ErrorIs(t, pe.Failed[0], fanout.ErrUnavailable)
	require.Equal(t, map[int]string{4: "m/nonneg"}, itemIndices(pe))
	require.Equal(t, []int64{400, 0, 4, 600, 0, 0}, out)
}

func TestRouterEveryRouteFailingIsNoAnswer(t *testing.T) {
	// Each route fails as a whole: no results at all, however nested.
	down := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, fanout.ErrUnavailable
	})
	inner := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": down, "nonneg": down}, fanout.WithPartialResults())
	out, err := inner.Process(t.Context(), []int64{-1, 1})
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Nil(t, out)
	require.Len(t, pe.Failed, 2)

	// A router above it takes that as its route's items each failed.
	outer := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": double, "nonneg": inner}, fanout.WithPartialResults())
	out, err = outer.Process(t.Context(), []int64{-5, 3, 7})
	require.ErrorAs(t, err, &pe)
	require.Equal(t, []int64{-10, 0, 0}, out)
	require.Len(t, pe.Failed, 1)
	require.Equal(t, "nonneg/nonneg", pe.Failed[0].Route)
	require.Equal(t, []int{1, 2}, pe.Failed[0].Indices)
}

func TestRouterRefusesABrokenPartialAnswer(t *testing.T) {
	for name, answer := range map[string]func(items []int64) ([]int64, error){
		"an index outside the batch": func(items []int64) ([]int64, error) {
			return make([]int64, len(items)), &fanout.PartialError{Items: []*fanout.ItemError{{Index: len(items), Err: errOdd}}}
		},
		"no failure listed": func(items []int64) ([]int64, error) {
			return make([]int64, len(items)), &fanout.PartialError{}
		},
		"no results, not every item listed": func([]int64) ([]int64, error) {
			return nil, &fanout.PartialError{Items: []*fanout.ItemError{{Index: 0, Err: errOdd}}}
		},
		"the wrong number of results": func(items []int64) ([]int64, error) {
			return make([]int64, len(items)+1), &fanout.PartialError{Items: []*fanout.ItemError{{Index: 0, Err: errOdd}}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			broken := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) { return answer(items) })
			r := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": double, "nonneg": broken}, fanout.WithPartialResults())
			out, err := r.Process(t.Context(), []int64{-1, 2, 4})
			var pe *fanout.PartialError
			require.ErrorAs(t, err, &pe)
			require.Len(t, pe.Failed, 1, "the route failed as a whole: none of its answers is trusted")
			require.Equal(t, "nonneg", pe.Failed[0].Route)
			require.Equal(t, []int{1, 2}, pe.Failed[0].Indices)
			require.NotErrorIs(t, err, errOdd)
			require.Equal(t, []int64{-2, 0, 0}, out)
		})
	}
}

func TestBatcherSplitsItemFailuresBetweenCallers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newGate(t)
	b := newBatcher(t, g, fanout.WithConcurrency(1))

	first := startProcess(t.Context(), b, []int64{100})
	held := g.next(t)

	// Three callers merged into one dispatch: the first's second item and
	// the third's first fail; the second's items all succeed.
	a := queue(t, t.Context(), b, []int64{10, 11})
	c := queue(t, t.Context(), b, []int64{20, 22})
	d := queue(t, t.Context(), b, []int64{31, 32, 33})
	held.answer()
	first.requireAnswered(t)

	merged := g.next(t)
	require.Equal(t, []int64{10, 11, 20, 22, 31, 32, 33}, merged.items)
	out := leafOf(merged.items)
	out[1], out[4], out[6] = 0, 0, 0
	merged.reply <- gateReply{out: out, err: &fanout.PartialError{
		Items:  []*fanout.ItemError{{Index: 1, Err: errOdd}, {Index: 4, Err: errOdd}},
		Failed: []*fanout.RouteError{{Route: "r", Indices: []int{6}, Err: fanout.ErrUnavailable}},
	}}

	res, err := a.wait(t)
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, map[int]string{1: ""}, itemIndices(pe), "the caller's own index")
	require.Empty(t, pe.Failed)
	require.Equal(t, []int64{leafOf([]int64{10})[0], 0}, res)

	c.requireAnswered(t) // none of its items failed: no error

	res, err = d.wait(t)
	require.ErrorAs(t, err, &pe)
	require.Equal(t, map[int]string{0: ""}, itemIndices(pe))
	require.Len(t, pe.Failed, 1)
	require.Equal(t, []int{2}, pe.Failed[0].Indices)
	require.Equal(t, []int64{0, leafOf([]int64{32})[0], 0}, res)
	idle(t, b)
	g.noMore(t)
}

func TestBatcherPassesAPartialAnswerOfADirectCall(t *testing.T) {
	b := newBatcher(t, failOdd)
	out, err := b.Process(t.Context(), []int64{2, 3})
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, map[int]string{1: ""}, itemIndices(pe))
	require.Equal(t, []int64{4, 0}, out)
}

func TestBalancerTakesAPartialAnswerAsAnAnswer(t *testing.T) {
	// A partial answer that lists an unavailable route is still the
	// replica's answer: not retried on the other replica, not a failure.
	var calls [2]int
	replica := func(i int) fanout.Backend[int64, int64] {
		return fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
			calls[i]++
			return make([]int64, len(items)), &fanout.PartialError{
				Failed: []*fanout.RouteError{{Route: "y", Indices: []int{0}, Err: fanout.ErrUnavailable}},
			}
		})
	}
	bal, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{replica(0), replica(1)}, fanout.WithEjection(1, hangGuard, hangGuard))
	require.NoError(t, err)
	defer bal.Close()
	// Ejection after 1 failure: a partial answer taken for a failure would
	// eject the replica at once, and every later call would go to the
	// other. Over 200 calls, each replica is picked (a replica in service
	// missed by all of them: odds of 2^-199).
	const n = 200
	for range n {
		out, err := bal.Process(t.Context(), []int64{1, 2})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Len(t, out, 2)
	}
	require.Equal(t, n, calls[0]+calls[1], "one replica call per call: no retry")
	require.NotZero(t, calls[0], "no replica ejected")
	require.NotZero(t, calls[1], "no replica ejected")
}
