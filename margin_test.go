package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// deadlineOf is a backend that records the deadline of the context it is
// given, then answers as the xyz route would.
type deadlineOf struct {
	route string
	seen  chan time.Time // the zero time for no deadline
}

func newDeadlineOf(route string) *deadlineOf {
	return &deadlineOf{route: route, seen: make(chan time.Time, 16)}
}

func (d *deadlineOf) Process(ctx context.Context, items []int64) ([]int64, error) {
	dl, _ := ctx.Deadline()
	d.seen <- dl
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = xyzFuncs[d.route](n)
	}
	return out, nil
}

func (d *deadlineOf) next(t *testing.T) time.Time {
	t.Helper()
	select {
	case dl := <-d.seen:
		return dl
	case <-time.After(hangGuard):
		require.FailNow(t, "the route was not called")
		return time.Time{}
	}
}

// The routes' deadline is the margin earlier than the caller's, by the
// documented rule: a tenth of the time left, at most 250ms by default. A
// deadline 10s away gives exactly 250ms, whatever time the call takes to
// start.
func TestDeadlineMarginRule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []fanout.RouterOption
		left   time.Duration
		margin time.Duration // exact, or within 1% below when approx
		approx bool
	}{
		{name: "default, capped", left: 10 * time.Second, margin: fanout.DefaultMaxDeadlineMargin},
		{name: "default, a tenth", left: time.Second, margin: 100 * time.Millisecond, approx: true},
		{name: "own cap", opts: []fanout.RouterOption{fanout.WithDeadlineMargin(0.5, 40*time.Millisecond)}, left: time.Second, margin: 40 * time.Millisecond},
		{name: "off by fraction", opts: []fanout.RouterOption{fanout.WithDeadlineMargin(0, time.Second)}, left: time.Second},
		{name: "off by maximum", opts: []fanout.RouterOption{fanout.WithDeadlineMargin(0.1, 0)}, left: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, one := range []bool{true, false} { // one route, and several
				x, y := newDeadlineOf("x"), newDeadlineOf("y")
				r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": x, "y": y, "z": newDeadlineOf("z")}, tc.opts...)
				deadline := time.Now().Add(tc.left)
				ctx, cancel := context.WithDeadline(context.Background(), deadline)
				items := []int64{-3, 4}
				if one {
					items = []int64{-3}
				}
				out, err := r.Process(ctx, items)
				cancel()
				require.NoError(t, err)
				require.Equal(t, int64(9), out[0])
				got := deadline.Sub(x.next(t))
				if tc.approx {
					require.InDelta(t, float64(tc.margin), float64(got), float64(tc.margin)/100, "margin %v", got)
				} else {
					require.Equal(t, tc.margin, got)
				}
				if !one {
					require.Equal(t, got, deadline.Sub(y.next(t)), "every route gets the same deadline")
				}
			}
		})
	}

	t.Run("no deadline", func(t *testing.T) {
		x := newDeadlineOf("x")
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": x, "y": newDeadlineOf("y")})
		_, err := r.Process(context.Background(), []int64{-3, 4})
		require.NoError(t, err)
		require.True(t, x.next(t).IsZero(), "a call without a deadline gives its routes none")
	})
}

// Nested routers: each takes its margin from what the layer above left it.
func TestDeadlineMarginNests(t *testing.T) {
	b := newDeadlineOf("y")
	inner := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": newDeadlineOf("x"), "y": b})
	outer := mustRouter(t, fanout.ClassifierFunc[int64](func(int64) (string, error) { return "m", nil }),
		map[string]fanout.Backend[int64, int64]{"m": inner})
	deadline := time.Now().Add(10 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	out, err := outer.Process(ctx, []int64{-3, 4})
	require.NoError(t, err)
	require.Equal(t, []int64{9, 2}, out)
	require.Equal(t, 2*fanout.DefaultMaxDeadlineMargin, deadline.Sub(b.next(t)), "250ms taken by each of the two layers")
}

// A route that has not answered by its deadline fails, naming itself and
// the deadline, while the caller's context is still live; under partial
// results the others' answers are returned, through nested routers too.
func TestDeadlineMarginAnswersWhatCameBack(t *testing.T) {
	slow := newBlocker(t)
	margin := fanout.WithDeadlineMargin(0.5, 10*time.Second)

	t.Run("partial", func(t *testing.T) {
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": newDeadlineOf("x"), "y": slow, "z": newDeadlineOf("z")},
			fanout.WithPartialResults(), margin)
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		out, err := r.Process(ctx, []int64{-3, 4, 5})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, []int64{9, 0, 16}, out)
		require.Len(t, pe.Failed, 1)
		require.Equal(t, "y", pe.Failed[0].Route)
		require.Equal(t, []int{1}, pe.Failed[0].Indices)
		require.ErrorIs(t, pe.Failed[0], context.DeadlineExceeded)
		require.Contains(t, pe.Failed[0].Error(), "the route's deadline passed, ")
		require.Contains(t, pe.Failed[0].Error(), " before the call's")
	})

	t.Run("a failure cancels no other route", func(t *testing.T) {
		// Under partial results, with a deadline: x fails at once, and y
		// answers only after that.
		xFailed := make(chan struct{})
		x := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
			defer close(xFailed)
			return nil, errors.New("x is broken")
		})
		y := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
			waitFor(t, xFailed, "x's failure")
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return []int64{items[0] / 2}, nil
		})
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": x, "y": y}, fanout.WithPartialResults())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := r.Process(ctx, []int64{-3, 4})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, []int64{0, 2}, out, "y answered after x failed: %v", err)
		require.Len(t, pe.Failed, 1)
		require.Equal(t, "x", pe.Failed[0].Route)
	})

	t.Run("the backend says first that the deadline passed", func(t *testing.T) {
		// A remote backend counts the same deadline, and may answer that
		// it passed before the routes' context's timer has fired.
		own := fanout.BackendFunc[int64, int64](func(ctx context.Context, _ []int64) ([]int64, error) {
			dl, _ := ctx.Deadline()
			<-time.After(time.Until(dl))
			return nil, fmt.Errorf("remote: %w", context.DeadlineExceeded)
		})
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": newDeadlineOf("x"), "y": own}, fanout.WithPartialResults(), margin)
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		_, err := r.Process(ctx, []int64{-3, 4})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Contains(t, pe.Failed[0].Error(), "remote: context deadline exceeded (the route's deadline passed, ")
	})

	t.Run("without partial results", func(t *testing.T) {
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": newDeadlineOf("x"), "y": slow}, margin)
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		out, err := r.Process(ctx, []int64{-3, 4})
		require.Nil(t, out)
		var re *fanout.RouteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, "y", re.Route)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Contains(t, err.Error(), "the route's deadline passed, ")
	})

	t.Run("nested", func(t *testing.T) {
		// The caller leaves 2s: the outer router's route m gets 1s, the
		// inner router's route y 0.5s, so m answers with what it has long
		// before its own deadline.
		inner := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": newDeadlineOf("x"), "y": slow},
			fanout.WithPartialResults(), margin)
		outer := mustRouter(t, fanout.ClassifierFunc[int64](func(int64) (string, error) { return "m", nil }),
			map[string]fanout.Backend[int64, int64]{"m": inner}, fanout.WithPartialResults(), margin)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		out, err := outer.Process(ctx, []int64{-3, 4, -1})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe, "%v", err)
		require.Equal(t, []int64{9, 0, 1}, out)
		require.Len(t, pe.Failed, 1)
		require.Equal(t, "m/y", pe.Failed[0].Route)
		require.Equal(t, []int{1}, pe.Failed[0].Indices)
		require.ErrorIs(t, pe.Failed[0], context.DeadlineExceeded)
		require.Contains(t, pe.Failed[0].Error(), "the route's deadline passed, ")
	})

	t.Run("caller gave up first", func(t *testing.T) {
		// The caller's own cancellation is not a route's deadline.
		slow := newBlocker(t)
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{"x": slow, "y": newDeadlineOf("y")}, fanout.WithPartialResults(), margin)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() { <-slow.started; cancel() }()
		_, err := r.Process(ctx, []int64{-3, 4})
		require.ErrorIs(t, err, context.Canceled)
		require.NotContains(t, err.Error(), "the route's deadline")
	})
}

func TestDeadlineMarginBadOptions(t *testing.T) {
	routes := map[string]fanout.Backend[int64, int64]{"x": newDeadlineOf("x")}
	for _, tc := range []struct {
		opt  fanout.RouterOption
		want string
	}{
		{fanout.WithDeadlineMargin(0.6, time.Second), "fraction 0.6 is not in [0, 0.5]"},
		{fanout.WithDeadlineMargin(-0.1, time.Second), "fraction -0.1 is not in [0, 0.5]"},
		{fanout.WithDeadlineMargin(math.NaN(), time.Second), "fraction NaN is not in [0, 0.5]"},
		{fanout.WithDeadlineMargin(0.1, -time.Second), "negative maximum -1s"},
	} {
		_, err := fanout.NewRouter(xyz, routes, tc.opt)
		require.EqualError(t, err, "fanout: NewRouter: WithDeadlineMargin: "+tc.want)
	}
}

// unavailable is a backend that cannot be reached.
var unavailable = fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
	return nil, fmt.Errorf("dial: connection refused: %w", fanout.ErrUnavailable)
})

func TestFailover(t *testing.T) {
	fallback := &recorder{fn: func(n int64) int64 { return n * n }}
	routes := func(x fanout.Backend[int64, int64]) map[string]fanout.Backend[int64, int64] {
		return map[string]fanout.Backend[int64, int64]{"x": x, "x-fallback": fallback, "y": newDeadlineOf("y"), "z": newDeadlineOf("z")}
	}

	t.Run("unavailable goes to the fallback, and says so", func(t *testing.T) {
		for _, opts := range [][]fanout.RouterOption{nil, {fanout.WithPartialResults()}} {
			r := mustRouter(t, xyz, routes(unavailable), append(opts, fanout.WithFailover("x", "x-fallback"))...)
			names := r.Routes()
			for _, items := range [][]int64{{-3, 4, -2, 5}, {-3, -2}} {
				got := make([]int, len(items))
				out, err := r.ProcessRoutes(context.Background(), items, got)
				require.NoError(t, err)
				var want []int64
				var wantRoutes []string
				for _, n := range items {
					want = append(want, xyzAnswer(n))
					route, _ := xyz(n)
					if route == "x" {
						route = "x-fallback"
					}
					wantRoutes = append(wantRoutes, route)
				}
				require.Equal(t, want, out)
				var gotRoutes []string
				for _, k := range got {
					gotRoutes = append(gotRoutes, names[k])
				}
				require.Equal(t, wantRoutes, gotRoutes)
			}
		}
	})

	t.Run("the route answers: no failover", func(t *testing.T) {
		before := len(fallback.calls())
		r := mustRouter(t, xyz, routes(newDeadlineOf("x")), fanout.WithFailover("x", "x-fallback"))
		out, err := r.Process(context.Background(), []int64{-3, 4})
		require.NoError(t, err)
		require.Equal(t, []int64{9, 2}, out)
		require.Len(t, fallback.calls(), before)
	})

	t.Run("other failures are the route's", func(t *testing.T) {
		before := len(fallback.calls())
		failing := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
			return nil, errors.New("x is broken")
		})
		r := mustRouter(t, xyz, routes(failing), fanout.WithFailover("x", "x-fallback"), fanout.WithPartialResults())
		_, err := r.Process(context.Background(), []int64{-3, 4})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "x", pe.Failed[0].Route)
		require.Len(t, fallback.calls(), before, "a failure of the backend itself is not failed over")
	})

	t.Run("the fallback fails too", func(t *testing.T) {
		broken := errors.New("fallback is broken")
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{
			"x": unavailable, "y": newDeadlineOf("y"),
			"x-fallback": fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) { return nil, broken }),
		}, fanout.WithFailover("x", "x-fallback"), fanout.WithPartialResults())
		out, err := r.Process(context.Background(), []int64{-3, 4})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, []int64{0, 2}, out)
		require.Len(t, pe.Failed, 1)
		require.Equal(t, "x", pe.Failed[0].Route)
		require.ErrorIs(t, pe.Failed[0], fanout.ErrUnavailable)
		require.ErrorIs(t, pe.Failed[0], broken)
		require.Contains(t, pe.Failed[0].Error(), `its fallback route "x-fallback" failed too: fallback is broken`)
	})

	t.Run("the fallback fails an item", func(t *testing.T) {
		bad := errors.New("cannot square 7")
		r := mustRouter(t, xyz, map[string]fanout.Backend[int64, int64]{
			"x": unavailable, "y": newDeadlineOf("y"),
			"x-fallback": fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
				out := make([]int64, len(items))
				var pe fanout.PartialError
				for i, n := range items {
					if n == -7 {
						pe.Items = append(pe.Items, &fanout.ItemError{Index: i, Err: bad})
					}
					out[i] = n * n
				}
				if pe.Items != nil {
					return out, &pe
				}
				return out, nil
			}),
		}, fanout.WithFailover("x", "x-fallback"), fanout.WithPartialResults())
		out, err := r.Process(context.Background(), []int64{-3, 4, -7})
		var pe *fanout.PartialError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, []int64{9, 2, 0}, out)
		require.Len(t, pe.Items, 1)
		require.Equal(t, 2, pe.Items[0].Index)
		require.Equal(t, "x-fallback", pe.Items[0].Route, "the item failed on the fallback, which says so")
	})
}

func TestFailoverBadOptions(t *testing.T) {
	routes := map[string]fanout.Backend[int64, int64]{"x": unavailable, "y": newDeadlineOf("y"), "f": newDeadlineOf("x")}
	for _, tc := range []struct {
		opts []fanout.RouterOption
		want string
	}{
		{[]fanout.RouterOption{fanout.WithFailover("q", "f")}, `WithFailover: "q" is not a route`},
		{[]fanout.RouterOption{fanout.WithFailover("x", "q")}, `WithFailover: fallback "q" of route "x" is not a route`},
		{[]fanout.RouterOption{fanout.WithFailover("x", "x")}, `WithFailover: route "x" is its own fallback`},
		{[]fanout.RouterOption{fanout.WithFailover("x", "f"), fanout.WithFailover("x", "y")}, `WithFailover: route "x" is given two fallbacks`},
		{[]fanout.RouterOption{fanout.WithFailover("x", "f"), fanout.WithFailover("f", "y")}, `WithFailover: fallback "f" of route "x" has a fallback of its own`},
	} {
		_, err := fanout.NewRouter(xyz, routes, tc.opts...)
		require.EqualError(t, err, "fanout: NewRouter: "+tc.want)
	}
}
