package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
	"github.com/seed-c94cd834/fanout/transport"
)

// newShadow returns a shadow that is closed at the end of the test, and a
// channel that receives a value after each mirrored call it compared.
func newShadow(t *testing.T, primary, candidate fanout.Backend[int64, int64], opts ...fanout.ShadowOption) (*fanout.Shadow[int64, int64], <-chan struct{}) {
	t.Helper()
	s, err := fanout.NewShadow(primary, candidate, nil, opts...)
	require.NoError(t, err)
	compared := make(chan struct{}, 1024)
	fanout.SetShadowCompared(s, func() { compared <- struct{}{} })
	t.Cleanup(func() { s.Close() })
	return s, compared
}

// shadowCandidate answers 2n, but 2n+1 for n divisible by 5, and fails
// item 7 alone: a new version with a bug.
var shadowCandidate = fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	var pe fanout.PartialError
	for i, n := range items {
		switch {
		case n == 7:
			pe.Items = append(pe.Items, &fanout.ItemError{Index: i, Err: errors.New("7 is not handled yet")})
		case n%5 == 0:
			out[i] = 2*n + 1
		default:
			out[i] = 2 * n
		}
	}
	if pe.Items != nil {
		return out, &pe
	}
	return out, nil
})

// servedCandidate serves b on a loopback TCP port and returns a client of
// it; both are closed at the end of the test.
func servedCandidate(t *testing.T, b fanout.Backend[int64, int64]) *transport.Client[int64, int64] {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := transport.NewServer(b, transport.Int64(), transport.Int64(), transport.WithLogger(nil))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c := transport.NewClient(l.Addr().String(), transport.Int64(), transport.Int64(), transport.WithLogger(nil))
	t.Cleanup(func() {
		require.NoError(t, c.Close())
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, transport.ErrServerClosed)
	})
	return c
}

// callShadow calls s with items, requires the primary's answer (double's)
// and waits for the mirrored call to be compared.
func callShadow(t *testing.T, s *fanout.Shadow[int64, int64], compared <-chan struct{}, items []int64) {
	t.Helper()
	out, err := s.Process(t.Context(), items)
	require.NoError(t, err)
	want := make([]int64, len(items))
	for i, n := range items {
		want[i] = 2 * n
	}
	require.Equal(t, want, out)
	waitFor(t, compared, "the mirrored call is compared")
}

func seqFrom(lo, hi int64) []int64 {
	var s []int64
	for n := lo; n <= hi; n++ {
		s = append(s, n)
	}
	return s
}

func TestShadowComparesACandidateOverTCP(t *testing.T) {
	s, compared := newShadow(t, double, servedCandidate(t, shadowCandidate))
	callShadow(t, s, compared, seqFrom(1, 10))
	callShadow(t, s, compared, seqFrom(11, 20))
	require.NoError(t, s.Close())

	// 20 items: 5, 10, 15 and 20 differ, 7 fails, the 15 others match.
	require.Equal(t, fanout.ShadowStats{Mirrored: 2, Matches: 15, Mismatches: 4, Errors: 1}, s.Stats())
	require.Equal(t, []fanout.Mismatch[int64, int64]{
		{Item: 5, Primary: 10, Candidate: 11},
		{Item: 10, Primary: 20, Candidate: 21},
		{Item: 15, Primary: 30, Candidate: 31},
		{Item: 20, Primary: 40, Candidate: 41},
	}, s.Mismatches())
}

func TestShadowConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		candidate := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
			out := make([]int64, len(items))
			for i, n := range items {
				out[i] = backendtest.Leaf(n)
			}
			return out, nil
		})
		s, _ := newShadow(t, leaf, candidate)
		return s
	})
}

func TestShadowKeepsTheLatestMismatches(t *testing.T) {
	wrong := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = -n
		}
		return out, nil
	})
	s, compared := newShadow(t, double, wrong, fanout.WithShadowSample(3))
	require.Empty(t, s.Mismatches())
	callShadow(t, s, compared, []int64{1, 2})
	require.Equal(t, []fanout.Mismatch[int64, int64]{{1, 2, -1}, {2, 4, -2}}, s.Mismatches())
	callShadow(t, s, compared, []int64{3, 4, 5, 6, 7})
	callShadow(t, s, compared, []int64{8})
	got := s.Mismatches()
	require.Equal(t, []fanout.Mismatch[int64, int64]{{6, 12, -6}, {7, 14, -7}, {8, 16, -8}}, got, "the last 3, oldest first")
	got[0].Item = 100
	require.Equal(t, int64(6), s.Mismatches()[0].Item, "Mismatches returns a copy")
	require.Equal(t, int64(8), s.Stats().Mismatches, "every mismatch counts, kept or not")

	none, compared := newShadow(t, double, wrong, fanout.WithShadowSample(0))
	callShadow(t, none, compared, []int64{1, 2})
	require.Empty(t, none.Mismatches())
	require.Equal(t, int64(2), none.Stats().Mismatches)
}

// heldCandidate is a candidate that announces each call on started, then
// answers 2n once release is closed, or fails when its context is done.
type heldCandidate struct {
	started chan context.Context
	release chan struct{}
	calls   atomic.Int64
}

func newHeldCandidate() *heldCandidate {
	return &heldCandidate{started: make(chan context.Context, 16), release: make(chan struct{})}
}

func (h *heldCandidate) Process(ctx context.Context, items []int64) ([]int64, error) {
	h.calls.Add(1)
	h.started <- ctx
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return double(ctx, items)
}

func (h *heldCandidate) waitStarted(t *testing.T) context.Context {
	t.Helper()
	select {
	case ctx := <-h.started:
		return ctx
	case <-time.After(hangGuard):
		require.FailNow(t, "timed out waiting for the candidate to be called")
		return nil
	}
}

func TestShadowDoesNotWaitForTheCandidate(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cand := newHeldCandidate()
	s, compared := newShadow(t, double, cand, fanout.WithShadowMaxInFlight(1))

	out, err := s.Process(t.Context(), []int64{1, 2, 3})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 4, 6}, out, "answered while the candidate is held")
	cand.waitStarted(t)

	out, err = s.Process(t.Context(), []int64{4})
	require.NoError(t, err)
	require.Equal(t, []int64{8}, out)
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Dropped: 1}, s.Stats(), "one mirrored call in flight at most")

	close(cand.release)
	waitFor(t, compared, "the held call is compared")
	require.NoError(t, s.Close())
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Dropped: 1, Matches: 3}, s.Stats())
	require.Equal(t, int64(1), cand.calls.Load())
}

func TestShadowCopiesTheCallersSlices(t *testing.T) {
	cand := newHeldCandidate()
	s, compared := newShadow(t, double, cand)

	items := []int64{1, 2, 3}
	out, err := s.Process(t.Context(), items)
	require.NoError(t, err)
	cand.waitStarted(t)
	// The caller reuses both slices once Process has returned.
	copy(items, []int64{7, 8, 9})
	copy(out, []int64{0, 0, 0})
	close(cand.release)
	waitFor(t, compared, "the mirrored call is compared")
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Matches: 3}, s.Stats())
}

func TestShadowFractionZeroMirrorsNothing(t *testing.T) {
	cand := &recorder{fn: func(n int64) int64 { return 2 * n }}
	s, _ := newShadow(t, double, cand, fanout.WithShadowFraction(0))
	for range 100 {
		out, err := s.Process(t.Context(), []int64{1, 2})
		require.NoError(t, err)
		require.Equal(t, []int64{2, 4}, out)
	}
	require.NoError(t, s.Close())
	require.Empty(t, cand.calls())
	require.Zero(t, s.Stats())
}

func TestShadowFractionMirrorsAShare(t *testing.T) {
	cand := &recorder{fn: func(n int64) int64 { return 2 * n }}
	s, _ := newShadow(t, double, cand, fanout.WithShadowFraction(0.5))
	const calls = 1000
	for range calls {
		_, err := s.Process(t.Context(), []int64{1})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	st := s.Stats()
	chosen := st.Mirrored + st.Dropped
	// 1000 draws of probability 1/2: outside 350..650 about once in 10^21.
	require.InDelta(t, calls/2, chosen, 150, "calls chosen: %+v", st)
	require.Equal(t, st.Mirrored, st.Matches)
	require.Len(t, cand.calls(), int(st.Mirrored))
}

func TestShadowEmptyBatchIsNotMirrored(t *testing.T) {
	cand := &recorder{fn: func(n int64) int64 { return 2 * n }}
	s, _ := newShadow(t, double, cand)
	out, err := s.Process(t.Context(), []int64{})
	require.NoError(t, err)
	require.Empty(t, out)
	require.NoError(t, s.Close())
	require.Empty(t, cand.calls())
	require.Zero(t, s.Stats())
}

func TestShadowReturnsThePrimaryErrorAndMirrorsNothing(t *testing.T) {
	primaryErr := fmt.Errorf("primary down: %w", fanout.ErrUnavailable)
	primary := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, primaryErr
	})
	cand := &recorder{fn: func(n int64) int64 { return 2 * n }}
	s, _ := newShadow(t, primary, cand)
	out, err := s.Process(t.Context(), []int64{1, 2})
	require.Nil(t, out)
	require.True(t, err == primaryErr, "the primary's error itself: %v", err)
	require.NoError(t, s.Close())
	require.Empty(t, cand.calls())
	require.Zero(t, s.Stats())
}

func TestShadowPrimaryPartialAnswer(t *testing.T) {
	pe := &fanout.PartialError{
		Failed: []*fanout.RouteError{{Route: "r", Indices: []int{3}, Err: errors.New("route r down")}},
		Items:  []*fanout.ItemError{{Index: 1, Err: errors.New("item 1 refused")}},
	}
	answer := []int64{10, 0, 30, 0, 50}
	primary := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return answer, pe
	})
	// The candidate answers every item, and differently from the primary
	// at the items the primary failed.
	cand := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return []int64{10, 99, 30, 99, 50}, nil
	})
	s, compared := newShadow(t, primary, cand)

	out, err := s.Process(t.Context(), []int64{1, 2, 3, 4, 5})
	require.Equal(t, answer, out)
	got, ok := err.(*fanout.PartialError)
	require.True(t, ok, "a *PartialError as it came, not wrapped: %T", err)
	require.Same(t, pe, got)
	var as *fanout.PartialError
	require.ErrorAs(t, err, &as)
	require.Same(t, pe, as)

	waitFor(t, compared, "the mirrored call is compared")
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Matches: 3}, s.Stats(), "the items the primary failed are not compared")
	require.Empty(t, s.Mismatches())
}

func TestShadowPrimaryPartialAnswerWithoutResultsIsNotMirrored(t *testing.T) {
	pe := &fanout.PartialError{Failed: []*fanout.RouteError{{Route: "r", Indices: []int{0, 1}, Err: errors.New("route r down")}}}
	primary := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, pe
	})
	cand := &recorder{fn: func(n int64) int64 { return 2 * n }}
	s, _ := newShadow(t, primary, cand)
	out, err := s.Process(t.Context(), []int64{1, 2})
	require.Nil(t, out)
	require.True(t, err == error(pe))
	require.NoError(t, s.Close())
	require.Empty(t, cand.calls())
	require.Zero(t, s.Stats())
}

func TestShadowCandidateFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(items []int64) ([]int64, error)
		want   fanout.ShadowStats
	}{
		{"error", func([]int64) ([]int64, error) { return nil, errors.New("candidate down") },
			fanout.ShadowStats{Mirrored: 1, Errors: 3}},
		{"too few results", func([]int64) ([]int64, error) { return []int64{2, 4}, nil },
			fanout.ShadowStats{Mirrored: 1, Errors: 3}},
		{"too many results", func([]int64) ([]int64, error) { return []int64{2, 4, 6, 8}, nil },
			fanout.ShadowStats{Mirrored: 1, Errors: 3}},
		{"partial answer without results", func([]int64) ([]int64, error) {
			return nil, &fanout.PartialError{Failed: []*fanout.RouteError{{Indices: []int{0, 1, 2}, Err: errors.New("down")}}}
		}, fanout.ShadowStats{Mirrored: 1, Errors: 3}},
		{"partial answer of an item outside the batch", func([]int64) ([]int64, error) {
			return []int64{2, 4, 6}, &fanout.PartialError{Items: []*fanout.ItemError{{Index: 3, Err: errors.New("no such item")}}}
		}, fanout.ShadowStats{Mirrored: 1, Errors: 3}},
		{"partial answer of a route", func([]int64) ([]int64, error) {
			return []int64{2, 0, 0}, &fanout.PartialError{Failed: []*fanout.RouteError{{Route: "r", Indices: []int{1, 2}, Err: errors.New("down")}}}
		}, fanout.ShadowStats{Mirrored: 1, Matches: 1, Errors: 2}},
		{"partial answer of an item", func([]int64) ([]int64, error) {
			return []int64{2, 0, 7}, &fanout.PartialError{Items: []*fanout.ItemError{{Index: 1, Err: errors.New("refused")}}}
		}, fanout.ShadowStats{Mirrored: 1, Matches: 1, Mismatches: 1, Errors: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cand := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
				return tc.answer(items)
			})
			s, compared := newShadow(t, double, cand)
			callShadow(t, s, compared, []int64{1, 2, 3})
			require.Equal(t, tc.want, s.Stats())
		})
	}
}

func TestShadowTimesOutTheCandidate(t *testing.T) {
	cand := newHeldCandidate() // never released
	s, compared := newShadow(t, double, cand, fanout.WithShadowTimeout(time.Millisecond))
	callShadow(t, s, compared, []int64{1, 2})
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Errors: 2}, s.Stats())
	ctx := cand.waitStarted(t)
	require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
}

type shadowKey struct{}

func TestShadowMirrorOutlivesTheCallersContext(t *testing.T) {
	cand := newHeldCandidate()
	s, compared := newShadow(t, double, cand)

	ctx, cancel := context.WithCancel(context.WithValue(t.Context(), shadowKey{}, "request 42"))
	out, err := s.Process(ctx, []int64{1, 2})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 4}, out)
	mctx := cand.waitStarted(t)
	cancel()
	require.NoError(t, mctx.Err(), "the caller's cancellation does not reach the mirrored call")
	require.Equal(t, "request 42", mctx.Value(shadowKey{}), "the caller's values do")
	deadline, ok := mctx.Deadline()
	require.True(t, ok, "the shadow timeout bounds it")
	require.WithinDuration(t, time.Now().Add(time.Second), deadline, time.Second)

	close(cand.release)
	waitFor(t, compared, "the mirrored call is compared")
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Matches: 2}, s.Stats())
}

func TestShadowCloseCancelsMirrorsAndWaits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cand := newBlocker(t)
	s, err := fanout.NewShadow[int64, int64](double, cand, nil)
	require.NoError(t, err)

	out, err := s.Process(t.Context(), []int64{1, 2})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 4}, out)
	waitFor(t, cand.started, "the candidate is called")
	require.NoError(t, s.Close())
	require.Equal(t, 1, cand.sawCancel(), "Close cancelled the mirrored call and waited for it")
	require.Equal(t, fanout.ShadowStats{Mirrored: 1}, s.Stats(), "a call Close cancelled is not compared")

	out, err = s.Process(t.Context(), []int64{3})
	require.NoError(t, err)
	require.Equal(t, []int64{6}, out, "the primary answers after Close")
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Dropped: 1}, s.Stats(), "and nothing is mirrored")
	require.NoError(t, s.Close(), "Close is idempotent")
}

func TestNewShadowErrors(t *testing.T) {
	var nilFunc fanout.BackendFunc[int64, int64]
	for _, tc := range []struct {
		name               string
		primary, candidate fanout.Backend[int64, int64]
		opts               []fanout.ShadowOption
		want               string
	}{
		{"nil primary", nil, double, nil, "fanout: NewShadow: nil primary"},
		{"nil primary func", nilFunc, double, nil, "fanout: NewShadow: nil primary"},
		{"nil candidate", double, nil, nil, "fanout: NewShadow: nil candidate"},
		{"nil candidate func", double, nilFunc, nil, "fanout: NewShadow: nil candidate"},
		{"negative fraction", double, double, []fanout.ShadowOption{fanout.WithShadowFraction(-0.1)},
			"fanout: NewShadow: WithShadowFraction(-0.1): the share of calls mirrored must be from 0 to 1"},
		{"fraction above 1", double, double, []fanout.ShadowOption{fanout.WithShadowFraction(1.5)},
			"fanout: NewShadow: WithShadowFraction(1.5): the share of calls mirrored must be from 0 to 1"},
		{"NaN fraction", double, double, []fanout.ShadowOption{fanout.WithShadowFraction(math.NaN())},
			"fanout: NewShadow: WithShadowFraction(NaN): the share of calls mirrored must be from 0 to 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := fanout.NewShadow(tc.primary, tc.candidate, nil, tc.opts...)
			require.EqualError(t, err, tc.want)
			require.Nil(t, s)
		})
	}
}

func TestShadowCustomEqual(t *testing.T) {
	off := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2*n + 1
		}
		return out, nil
	})
	closeEnough := func(a, b int64) bool { return a-b <= 1 && b-a <= 1 }
	s, err := fanout.NewShadow[int64, int64](double, off, closeEnough)
	require.NoError(t, err)
	_, err = s.Process(t.Context(), []int64{1, 2, 3})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Equal(t, fanout.ShadowStats{Mirrored: 1, Matches: 3}, s.Stats())
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// lines returns the lines logged so far that contain msg.
func (b *syncBuffer) lines(msg string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.b.String(), "\n") {
		if strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

// dropTime leaves the time out of log lines, so that tests compare them
// whole.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

func TestShadowLogsAtMostOnceASecond(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	s, compared := newShadow(t, double, shadowCandidate, fanout.WithShadowLogger(log))
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	fanout.SetShadowClock(s, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	})
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}

	callShadow(t, s, compared, []int64{1, 5})
	require.Equal(t, []string{
		`level=WARN msg="fanout: shadow mismatch" mismatches=1 matches=1 new=1 item=5 primary=10 candidate=11`,
	}, buf.lines("fanout: shadow mismatch"))

	// Many mismatches within the second: no more lines, every one counted.
	for n := int64(10); n < 100; n += 5 {
		callShadow(t, s, compared, []int64{n})
	}
	advance(999 * time.Millisecond)
	callShadow(t, s, compared, []int64{100})
	require.Len(t, buf.lines("fanout: shadow mismatch"), 1)

	advance(time.Millisecond)
	callShadow(t, s, compared, []int64{105, 106})
	lines := buf.lines("fanout: shadow mismatch")
	require.Len(t, lines, 2)
	require.Equal(t, `level=WARN msg="fanout: shadow mismatch" mismatches=21 matches=2 new=20 item=105 primary=210 candidate=211`, lines[1])

	// The candidate's failures: a line, then none within the second.
	callShadow(t, s, compared, []int64{7})
	callShadow(t, s, compared, []int64{7, 8})
	failed := buf.lines("fanout: shadow candidate failed")
	require.Len(t, failed, 1)
	require.Contains(t, failed[0], `level=WARN msg="fanout: shadow candidate failed" errors=1 new=1 err=`)
	require.Contains(t, failed[0], "7 is not handled yet")
	advance(time.Second)
	callShadow(t, s, compared, []int64{7})
	failed = buf.lines("fanout: shadow candidate failed")
	require.Len(t, failed, 2)
	require.Contains(t, failed[1], `errors=3 new=2 err=`)
	require.Equal(t, fanout.ShadowStats{Mirrored: 24, Matches: 3, Mismatches: 21, Errors: 3}, s.Stats())
}

func TestShadowLogsAWholeFailure(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	short := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return []int64{2}, nil
	})
	s, compared := newShadow(t, double, short, fanout.WithShadowLogger(log))
	callShadow(t, s, compared, []int64{1, 2})
	require.Equal(t, []string{
		`level=WARN msg="fanout: shadow candidate failed" errors=2 new=2 err="fanout: shadow candidate: backend returned the wrong number of results: 1 result for 2 items"`,
	}, buf.lines("fanout:"))
}
