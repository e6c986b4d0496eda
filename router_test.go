package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
)

var (
	errBoom    = errors.New("boom")
	errUnlucky = errors.New("unlucky number")
)

// noCalls is a calls value that requires no route to be called at all.
var noCalls = map[string][][]int64{}

func TestRouterProcess(t *testing.T) {
	tests := []struct {
		name string
		// classifier defaults to xyz.
		classifier fanout.Classifier[int64]
		// answer replaces the answer of the named routes' recorders.
		answer map[string]func(ctx context.Context, items []int64) ([]int64, error)
		items  []int64
		// want is the result on success; wantErr checks the error instead.
		want    []int64
		wantErr func(t *testing.T, err error)
		// calls is the batches each route must receive, in order; routes not
		// listed must not be called. nil: not checked.
		calls map[string][][]int64
	}{
		{
			name:  "all routes used, order kept",
			items: []int64{-3, 4, 5, 0, -1, 7, 2},
			want:  []int64{9, 2, 16, 0, 1, 22, 1},
			calls: map[string][][]int64{
				"x": {{-3, -1}},
				"y": {{4, 0, 2}},
				"z": {{5, 7}},
			},
		},
		{
			name:  "one route used",
			items: []int64{6, 2, 4},
			want:  []int64{3, 1, 2},
			calls: map[string][][]int64{"y": {{6, 2, 4}}},
		},
		{
			name:  "two routes used",
			items: []int64{-2, 3, -5},
			want:  []int64{4, 10, 25},
			calls: map[string][][]int64{"x": {{-2, -5}}, "z": {{3}}},
		},
		{
			name:  "single item",
			items: []int64{-9},
			want:  []int64{81},
			calls: map[string][][]int64{"x": {{-9}}},
		},
		{
			name:  "nil batch",
			items: nil,
			want:  []int64{},
			calls: noCalls,
		},
		{
			name:  "empty batch",
			items: []int64{},
			want:  []int64{},
			calls: noCalls,
		},
		{
			name: "unknown route",
			classifier: fanout.ClassifierFunc[int64](func(n int64) (string, error) {
				if n == 99 {
					return "w", nil
				}
				return xyz(n)
			}),
			items: []int64{1, 99, 2, 99},
			wantErr: func(t *testing.T, err error) {
				require.ErrorIs(t, err, fanout.ErrNoRoute)
				var ie *fanout.ItemError
				require.ErrorAs(t, err, &ie)
				require.Equal(t, 1, ie.Index)
				require.Equal(t, "w", ie.Route)
				require.EqualError(t, err, `fanout: item 1: route "w": no such route`)
			},
			calls: noCalls,
		},
		{
			name: "classifier chooses the empty route",
			classifier: fanout.ClassifierFunc[int64](func(n int64) (string, error) {
				if n == 0 {
					return "", nil
				}
				return xyz(n)
			}),
			items: []int64{1, 0},
			wantErr: func(t *testing.T, err error) {
				require.ErrorIs(t, err, fanout.ErrNoRoute)
				var ie *fanout.ItemError
				require.ErrorAs(t, err, &ie)
				require.Equal(t, 1, ie.Index)
				require.Empty(t, ie.Route)
				require.EqualError(t, err, `fanout: item 1: route "": no such route`)
			},
			calls: noCalls,
		},
		{
			name: "classifier error",
			classifier: fanout.ClassifierFunc[int64](func(n int64) (string, error) {
				if n == 13 {
					return "", errUnlucky
				}
				return xyz(n)
			}),
			items: []int64{1, 2, 13, 4},
			wantErr: func(t *testing.T, err error) {
				require.ErrorIs(t, err, errUnlucky)
				var ie *fanout.ItemError
				require.ErrorAs(t, err, &ie)
				require.Equal(t, 2, ie.Index)
				require.Empty(t, ie.Route)
				require.EqualError(t, err, "fanout: item 2: classify: unlucky number")
			},
			calls: noCalls,
		},
		{
			name: "backend answers too many results",
			answer: map[string]func(context.Context, []int64) ([]int64, error){
				"y": func(_ context.Context, items []int64) ([]int64, error) {
					return make([]int64, len(items)+1), nil
				},
			},
			items: []int64{-1, 2, 3, 4},
			wantErr: func(t *testing.T, err error) {
				require.ErrorIs(t, err, fanout.ErrResultCount)
				var re *fanout.RouteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, "y", re.Route)
				require.Equal(t, []int{1, 3}, re.Indices)
				require.ErrorContains(t, err, "3 results for 2 items")
			},
		},
		{
			name: "backend answers too few results, one route",
			answer: map[string]func(context.Context, []int64) ([]int64, error){
				"z": func(_ context.Context, items []int64) ([]int64, error) {
					return make([]int64, len(items)-1), nil
				},
			},
			items: []int64{1, 3, 5},
			wantErr: func(t *testing.T, err error) {
				require.ErrorIs(t, err, fanout.ErrResultCount)
				var re *fanout.RouteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, "z", re.Route)
				require.Equal(t, []int{0, 1, 2}, re.Indices)
			},
			calls: map[string][][]int64{"z": {{1, 3, 5}}},
		},
		{
			name: "backend error",
			answer: map[string]func(context.Context, []int64) ([]int64, error){
				"x": func(context.Context, []int64) ([]int64, error) { return nil, errBoom },
			},
			items: []int64{0, -7, 1, -8},
			wantErr: func(t *testing.T, err error) {
				require.ErrorIs(t, err, errBoom)
				var re *fanout.RouteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, "x", re.Route)
				require.Equal(t, []int{1, 3}, re.Indices)
				require.EqualError(t, err, `fanout: route "x" (2 items: 1, 3): boom`)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recorders := make(map[string]*recorder)
			routes := make(map[string]fanout.Backend[int64, int64])
			for name, fn := range xyzFuncs {
				recorders[name] = &recorder{fn: fn, answer: tc.answer[name]}
				routes[name] = recorders[name]
			}
			classifier := tc.classifier
			if classifier == nil {
				classifier = xyz
			}
			r := mustRouter(t, classifier, routes)
			kept := slices.Clone(tc.items)

			out, err := backendtest.Process(t, t.Context(), r, tc.items)

			if tc.wantErr != nil {
				require.Error(t, err)
				require.Nil(t, out, "a failed call returns no results")
				tc.wantErr(t, err)
			} else {
				require.NoError(t, err)
				require.NotNil(t, out, "an empty batch gives an empty, non-nil result")
				require.Equal(t, tc.want, out)
			}
			require.Equal(t, kept, tc.items, "Process modified the caller's batch")
			if tc.calls != nil {
				for name, rec := range recorders {
					require.Equal(t, len(tc.calls[name]), len(rec.calls()), "calls to route %q", name)
					for i, batch := range tc.calls[name] {
						require.Equal(t, batch, rec.calls()[i], "batch %d of route %q", i, name)
					}
				}
			}
		})
	}
}

func TestRouterFirstFailureCancelsOtherRoutes(t *testing.T) {
	// The router runs its last route (in sorted order) on the caller's
	// goroutine and the others on goroutines of their own: the failing
	// route is tried in both places.
	for _, names := range []struct{ fail, slow string }{
		{fail: "a-fail", slow: "b-slow"}, // the failing route on a goroutine
		{fail: "b-fail", slow: "a-slow"}, // the failing route on the caller's
	} {
		t.Run(names.fail, func(t *testing.T) {
			slow := newBlocker(t)
			fail := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
				select {
				case <-slow.started:
					return nil, errBoom
				case <-time.After(hangGuard):
					return nil, errors.New("the slow route never started")
				}
			})
			failOrSlow := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
				if n < 0 {
					return names.fail, nil
				}
				return names.slow, nil
			})
			r := mustRouter(t, failOrSlow, map[string]fanout.Backend[int64, int64]{names.fail: fail, names.slow: slow})

			out, err := backendtest.Process(t, t.Context(), r, []int64{1, -1, 2, -2})

			require.Nil(t, out)
			require.ErrorIs(t, err, errBoom)
			require.NotErrorIs(t, err, context.Canceled, "the call reports the first failure, not the cancellation it caused")
			var re *fanout.RouteError
			require.ErrorAs(t, err, &re)
			require.Equal(t, names.fail, re.Route)
			require.Equal(t, []int{1, 3}, re.Indices)
			// Process waits for every route, so the slow route has returned by now.
			require.Equal(t, 1, slow.sawCancel(), "the slow route's context was not cancelled")
		})
	}
}

func TestRouterCallerCancellation(t *testing.T) {
	t.Run("while routes run", func(t *testing.T) {
		blockers := map[string]*blocker{"x": newBlocker(t), "y": newBlocker(t), "z": newBlocker(t)}
		routes := make(map[string]fanout.Backend[int64, int64])
		for name, b := range blockers {
			routes[name] = b
		}
		r := mustRouter(t, xyz, routes)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()

		done := make(chan error, 1)
		go func() {
			_, err := r.Process(ctx, []int64{-1, 2, 3})
			done <- err
		}()
		for name, b := range blockers {
			waitFor(t, b.started, "route "+name+" to start")
		}
		cancel()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(hangGuard):
			require.FailNow(t, "Process did not return after cancel")
		}
		for name, b := range blockers {
			require.Equal(t, 1, b.sawCancel(), "route %q did not see the cancellation", name)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		rec := &recorder{fn: xyzAnswer}
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": rec, "y": rec, "z": rec})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()

		out, err := backendtest.Process(t, ctx, r, []int64{-1, 2, 3})

		require.Nil(t, out)
		require.ErrorIs(t, err, context.Canceled)
		require.Empty(t, rec.calls(), "no backend is called on a cancelled context")
	})
}

func TestRouterNested(t *testing.T) {
	// The outer router splits by sign; negative numbers go to an inner router
	// that splits them by parity.
	byParity := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n%2 == 0 {
			return "even", nil
		}
		return "odd", nil
	})
	even := &recorder{fn: func(n int64) int64 { return n * 10 }}
	odd := &recorder{fn: func(n int64) int64 { return n * 100 }}
	nonneg := &recorder{fn: func(n int64) int64 { return n + 1 }}
	inner := mustRouter(t, byParity, map[string]fanout.Backend[int64, int64]{"even": even, "odd": odd})
	outer := mustRouter(t, bySign, map[string]fanout.Backend[int64, int64]{"neg": inner, "nonneg": nonneg})

	t.Run("answers", func(t *testing.T) {
		out, err := backendtest.Process(t, t.Context(), outer, []int64{-1, 5, -2, 0, -3, -4})
		require.NoError(t, err)
		require.Equal(t, []int64{-100, 6, -20, 1, -300, -40}, out)
		require.Equal(t, [][]int64{{-2, -4}}, even.calls())
		require.Equal(t, [][]int64{{-1, -3}}, odd.calls())
		require.Equal(t, [][]int64{{5, 0}}, nonneg.calls())
	})
	t.Run("errors name both levels", func(t *testing.T) {
		odd.answer = func(context.Context, []int64) ([]int64, error) { return nil, errBoom }
		out, err := backendtest.Process(t, t.Context(), outer, []int64{4, -2, -3, -5})
		require.Nil(t, out)
		require.ErrorIs(t, err, errBoom)
		var re *fanout.RouteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, "neg", re.Route)
		require.Equal(t, []int{1, 2, 3}, re.Indices, "outer indices are positions in the outer batch")
		var innerErr *fanout.RouteError
		require.ErrorAs(t, re.Err, &innerErr)
		require.Equal(t, "odd", innerErr.Route)
		require.Equal(t, []int{1, 2}, innerErr.Indices, "inner indices are positions in the inner batch")
	})
}

func TestRouterConcurrentCallers(t *testing.T) {
	const goroutines, calls = 8, 50
	routes := make(map[string]fanout.Backend[int64, int64])
	for name, fn := range xyzFuncs {
		routes[name] = &recorder{fn: fn}
	}
	r := mustRouter(t, xyz, routes)

	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls)
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for c := range calls {
				items := make([]int64, 1+rng.IntN(200))
				want := make([]int64, len(items))
				for i := range items {
					items[i] = rng.Int64N(2001) - 1000
					want[i] = xyzAnswer(items[i])
				}
				out, err := r.Process(t.Context(), items)
				switch {
				case err != nil:
					errs <- fmt.Errorf("goroutine %d call %d: %w", g, c, err)
				case !slices.Equal(out, want):
					errs <- fmt.Errorf("goroutine %d call %d: got %v, want %v", g, c, out, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var failures []string
	for err := range errs {
		failures = append(failures, err.Error())
	}
	require.Empty(t, failures)
}

func TestNewRouterErrors(t *testing.T) {
	leaf := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		return items, nil
	})
	tests := []struct {
		name       string
		classifier fanout.Classifier[int64]
		routes     map[string]fanout.Backend[int64, int64]
		wantErr    string
	}{
		{"nil classifier", nil, map[string]fanout.Backend[int64, int64]{"a": leaf}, "nil classifier"},
		{"nil routes", xyz, nil, "no routes"},
		{"no routes", xyz, map[string]fanout.Backend[int64, int64]{}, "no routes"},
		{"empty route name", xyz, map[string]fanout.Backend[int64, int64]{"a": leaf, "": leaf}, "empty route name"},
		{"nil backend", xyz, map[string]fanout.Backend[int64, int64]{"a": leaf, "b": nil}, `route "b": nil backend`},
		{"nil ClassifierFunc", fanout.ClassifierFunc[int64](nil), map[string]fanout.Backend[int64, int64]{"a": leaf}, "nil classifier"},
		{"nil BackendFunc", xyz, map[string]fanout.Backend[int64, int64]{"a": leaf, "b": fanout.BackendFunc[int64, int64](nil)}, `route "b": nil backend`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := fanout.NewRouter(tc.classifier, tc.routes)
			require.ErrorContains(t, err, tc.wantErr)
			require.Nil(t, r)
		})
	}
}

func TestRouterRoutes(t *testing.T) {
	leaf := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		return items, nil
	})
	routes := map[string]fanout.Backend[int64, int64]{"z": leaf, "b": leaf, "x": leaf, "a": leaf}
	r := mustRouter(t, xyz, routes)
	require.Equal(t, []string{"a", "b", "x", "z"}, r.Routes())

	got := r.Routes()
	got[0] = "changed"
	require.Equal(t, []string{"a", "b", "x", "z"}, r.Routes(), "Routes returns a copy")

	delete(routes, "a")
	routes["c"] = leaf
	require.Equal(t, []string{"a", "b", "x", "z"}, r.Routes(), "NewRouter copies the routes map")
}

func TestRouterPartialResults(t *testing.T) {
	fails := func(context.Context, []int64) ([]int64, error) { return nil, errBoom }
	tests := []struct {
		name   string
		failed []string // routes whose backend fails
		items  []int64
		// want is the result; nil when nothing partial is returned.
		want []int64
		// wantFailed maps each failed route to its indices, in route order.
		wantFailed []*fanout.RouteError
	}{
		{
			name:  "no failure",
			items: []int64{-3, 4, 5, -1, 2, 7},
			want:  []int64{9, 2, 16, 1, 1, 22},
		},
		{
			name:       "one of three routes fails",
			failed:     []string{"z"},
			items:      []int64{-3, 4, 5, -1, 2, 7},
			want:       []int64{9, 2, 0, 1, 1, 0},
			wantFailed: []*fanout.RouteError{{Route: "z", Indices: []int{2, 5}}},
		},
		{
			name:   "two of three routes fail",
			failed: []string{"z", "x"},
			items:  []int64{-3, 4, 5, -1, 2, 7},
			want:   []int64{0, 2, 0, 0, 1, 0},
			wantFailed: []*fanout.RouteError{
				{Route: "x", Indices: []int{0, 3}},
				{Route: "z", Indices: []int{2, 5}},
			},
		},
		{
			name:   "every used route fails",
			failed: []string{"x", "z"},
			items:  []int64{-3, 5, -1},
			wantFailed: []*fanout.RouteError{
				{Route: "x", Indices: []int{0, 2}},
				{Route: "z", Indices: []int{1}},
			},
		},
		{
			name:       "the only used route fails",
			failed:     []string{"y"},
			items:      []int64{2, 4},
			wantFailed: []*fanout.RouteError{{Route: "y", Indices: []int{0, 1}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes := make(map[string]fanout.Backend[int64, int64])
			for name, fn := range xyzFuncs {
				rec := &recorder{fn: fn}
				if slices.Contains(tc.failed, name) {
					rec.answer = fails
				}
				routes[name] = rec
			}
			r := mustRouter(t, xyz, routes, fanout.WithPartialResults())

			out, err := backendtest.Process(t, t.Context(), r, tc.items)

			require.Equal(t, tc.want, out)
			if tc.wantFailed == nil {
				require.NoError(t, err)
				return
			}
			var pe *fanout.PartialError
			require.ErrorAs(t, err, &pe)
			require.ErrorIs(t, err, errBoom)
			require.Len(t, pe.Failed, len(tc.wantFailed))
			for i, want := range tc.wantFailed {
				require.Equal(t, want.Route, pe.Failed[i].Route, "failed route %d", i)
				require.Equal(t, want.Indices, pe.Failed[i].Indices, "indices of route %q", want.Route)
				require.ErrorIs(t, pe.Failed[i], errBoom)
			}
		})
	}
}

func TestRouterPartialResultsDoNotCancel(t *testing.T) {
	failed := make(chan struct{})
	fail := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		defer close(failed)
		return nil, errBoom
	})
	// The other route answers only after the failing one has returned, and
	// fails if its context is cancelled meanwhile. A correct router never
	// cancels it, so a correct router passes however the goroutines run.
	other := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		<-failed
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return items, nil
	})
	failOrOther := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n < 0 {
			return "fail", nil
		}
		return "other", nil
	})
	r := mustRouter(t, failOrOther, map[string]fanout.Backend[int64, int64]{"fail": fail, "other": other}, fanout.WithPartialResults())

	out, err := backendtest.Process(t, t.Context(), r, []int64{1, -1, 2})

	require.Equal(t, []int64{1, 0, 2}, out)
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe)
	require.Len(t, pe.Failed, 1)
	require.Equal(t, "fail", pe.Failed[0].Route)
}

func TestErrorMessages(t *testing.T) {
	seq := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		return s
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{
			name: "route error, one item",
			err:  &fanout.RouteError{Route: "y", Indices: []int{3}, Err: errBoom},
			want: `fanout: route "y" (1 item: 3): boom`,
		},
		{
			name: "route error, eight items shown in full",
			err:  &fanout.RouteError{Route: "y", Indices: seq(8), Err: errBoom},
			want: `fanout: route "y" (8 items: 0, 1, 2, 3, 4, 5, 6, 7): boom`,
		},
		{
			name: "route error, nine items truncated",
			err:  &fanout.RouteError{Route: "y", Indices: seq(9), Err: errBoom},
			want: `fanout: route "y" (9 items: 0, 1, 2, 3, 4, 5, 6, 7, ...): boom`,
		},
		{
			name: "route error, a million items truncated",
			err:  &fanout.RouteError{Route: "y", Indices: seq(1_000_000), Err: errBoom},
			want: `fanout: route "y" (1000000 items: 0, 1, 2, 3, 4, 5, 6, 7, ...): boom`,
		},
		{
			name: "route error, quoted route name",
			err:  &fanout.RouteError{Route: "a \"b\"", Indices: []int{0}, Err: errBoom},
			want: `fanout: route "a \"b\"" (1 item: 0): boom`,
		},
		{
			name: "partial error",
			err: &fanout.PartialError{Failed: []*fanout.RouteError{
				{Route: "x", Indices: []int{0}, Err: errBoom},
				{Route: "z", Indices: seq(10), Err: errUnlucky},
			}},
			want: `fanout: 2 routes failed: fanout: route "x" (1 item: 0): boom; ` +
				`fanout: route "z" (10 items: 0, 1, 2, 3, 4, 5, 6, 7, ...): unlucky number`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.EqualError(t, tc.err, tc.want)
		})
	}
}

// TestRouteErrorMessageFromRouter checks that a failing route of a large
// batch makes a short error message, end to end.
func TestRouteErrorMessageFromRouter(t *testing.T) {
	fail := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) { return nil, errBoom })
	ok := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) { return items, nil })
	r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": ok, "y": fail, "z": ok})
	items := make([]int64, 100_000)
	for i := range items {
		items[i] = int64(i)
	}

	_, err := backendtest.Process(t, t.Context(), r, items)

	require.ErrorIs(t, err, errBoom)
	require.EqualError(t, err, `fanout: route "y" (50000 items: 0, 2, 4, 6, 8, 10, 12, 14, ...): boom`)
	require.Less(t, len(err.Error()), 200)
	require.False(t, strings.Contains(err.Error(), "99998"))
}

// TestRouterProcessRoutes checks the route report of ProcessRoutes: it
// names, for every item, the route that received it, whether the routes
// succeeded, one of them failed or, with partial results, some did; it
// matches the classifier's choice; and it costs no allocation over Process.
func TestRouterProcessRoutes(t *testing.T) {
	fails := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) { return nil, errBoom })
	items := []int64{-3, 4, 5, -1, 2, 7, 0}
	want := []string{"x", "y", "z", "x", "y", "z", "y"}
	for _, tc := range []struct {
		name    string
		opts    []fanout.RouterOption
		failing string // the route whose backend fails, if any
		wantErr any    // a pointer to the error type wanted, if any
	}{
		{name: "every route answers"},
		{name: "a route fails", failing: "z", wantErr: new(*fanout.RouteError)},
		{name: "a route fails, partial results", opts: []fanout.RouterOption{fanout.WithPartialResults()}, failing: "x", wantErr: new(*fanout.PartialError)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			routes := make(map[string]fanout.Backend[int64, int64])
			for name, fn := range xyzFuncs {
				routes[name] = &recorder{fn: fn}
			}
			if tc.failing != "" {
				routes[tc.failing] = fails
			}
			r := mustRouter(t, xyz, routes, tc.opts...)
			names := r.Routes()
			got := make([]int, len(items))
			for i := range got {
				got[i] = -1
			}
			out, err := r.ProcessRoutes(context.Background(), items, got)
			if tc.wantErr == nil {
				require.NoError(t, err)
				want, err := r.Process(context.Background(), items)
				require.NoError(t, err)
				require.Equal(t, want, out, "the results are Process's")
			} else {
				require.ErrorAs(t, err, tc.wantErr)
			}
			gotNames := make([]string, len(got))
			for i, k := range got {
				require.True(t, k >= 0 && k < len(names), "item %d: route index %d", i, k)
				gotNames[i] = names[k]
			}
			require.Equal(t, want, gotNames)
		})
	}

	// One route for the whole batch: the router hands it over as it is, and
	// still reports the route.
	routes := make(map[string]fanout.Backend[int64, int64])
	for name, fn := range xyzFuncs {
		routes[name] = &recorder{fn: fn}
	}
	r := mustRouter(t, xyz, routes)
	got := []int{-1, -1}
	_, err := r.ProcessRoutes(context.Background(), []int64{2, 4}, got)
	require.NoError(t, err)
	require.Equal(t, []int{1, 1}, got, "y is the second of the sorted routes")

	require.PanicsWithValue(t, "fanout: Router.ProcessRoutes: 1 routes for 2 items", func() {
		r.ProcessRoutes(context.Background(), []int64{2, 4}, make([]int, 1))
	})

	ctx := context.Background()
	got = make([]int, len(items))
	process := testing.AllocsPerRun(100, func() { r.Process(ctx, items) })
	report := testing.AllocsPerRun(100, func() { r.ProcessRoutes(ctx, items, got) })
	// Averages over runs: the workers' hand-offs vary them by about one.
	require.LessOrEqual(t, report, process+1, "the report allocates")
}
