package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// logRecord is what a logRecorder keeps of a record: its level, message
// and attributes, each attribute's value as the text handler would print it.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (r logRecord) String() string { return fmt.Sprintf("%v %q %v", r.Level, r.Msg, r.Attrs) }

// logRecorder is a slog.Handler that keeps every record, and tells a test
// of each as it is logged, so that the test waits for a record rather than
// for time to pass.
type logRecorder struct {
	mu      sync.Mutex
	records []logRecord
	logged  chan logRecord
}

func newLogRecorder() *logRecorder { return &logRecorder{logged: make(chan logRecord, 1024)} }

func (h *logRecorder) logger() *slog.Logger { return slog.New(h) }

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	h.records = append(h.records, rec)
	h.mu.Unlock()
	select {
	case h.logged <- rec:
	default: // a test that logs this much reads all, not next
	}
	return nil
}

func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { panic("not used by these tests") }
func (h *logRecorder) WithGroup(string) slog.Handler      { panic("not used by these tests") }

// next returns the next record logged, failing t if none is within
// hangGuard.
func (h *logRecorder) next(t *testing.T, what string) logRecord {
	t.Helper()
	select {
	case r := <-h.logged:
		return r
	case <-time.After(hangGuard):
		require.FailNow(t, "timed out waiting for a log record", "%s; logged so far: %v", what, h.all())
		return logRecord{}
	}
}

func (h *logRecorder) all() []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]logRecord(nil), h.records...)
}

// requireRecord checks r's level, message and the attributes in want; an
// attribute wanted as "" must be absent.
func requireRecord(t *testing.T, r logRecord, level slog.Level, msg string, want map[string]string) {
	t.Helper()
	require.Equal(t, level, r.Level, "level of %v", r)
	require.Equal(t, msg, r.Msg, "message of %v", r)
	for k, v := range want {
		got, ok := r.Attrs[k]
		if v == "" {
			require.False(t, ok, "%v has attribute %s", r, k)
			continue
		}
		require.True(t, ok, "%v has no attribute %s", r, k)
		require.Equal(t, v, got, "attribute %s of %v", k, r)
	}
}

// controlledProbe is a probe that tells the test when it starts, and
// returns what the test answers.
type controlledProbe struct {
	started chan struct{}
	answer  chan error
}

func newControlledProbe() *controlledProbe {
	return &controlledProbe{started: make(chan struct{}), answer: make(chan error)}
}

func (p *controlledProbe) probe(ctx context.Context, _ fanout.Backend[int64, int64]) error {
	select {
	case p.started <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.answer:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBalancerLogsEachChangeOnce takes a replica through an ejection, a
// failed probe and a readmission, and checks that each is logged once, at
// its level, and nothing else is.
func TestBalancerLogsEachChangeOnce(t *testing.T) {
	rs, bs := stubs(1)
	logs := newLogRecorder()
	p := newControlledProbe()
	// An ejection time of a nanosecond is up by the next call, so every
	// call starts a probe when none is running.
	b := newBalancer(t, bs,
		fanout.WithEjection(2, time.Nanosecond, time.Nanosecond),
		fanout.WithProbe(p.probe, time.Second),
		fanout.WithBalancerLogger(logs.logger()),
		fanout.WithReplicaNames("10.0.0.1:7001"))
	call := func() error {
		_, err := b.Process(context.Background(), []int64{1})
		return err
	}

	rs[0].fail(unreachable)
	require.ErrorIs(t, call(), fanout.ErrUnavailable)
	require.Empty(t, logs.all(), "one failure is not an ejection")
	require.ErrorIs(t, call(), fanout.ErrUnavailable)
	requireRecord(t, logs.next(t, "the ejection"), slog.LevelWarn, "fanout: replica ejected", map[string]string{
		"replica": "10.0.0.1:7001", "index": "0", "failures": "2", "ejected_for": "1ns", "ejections": "1",
		"in_service": "0", "err": unreachable.Error(),
	})

	// A probe that fails ejects it again.
	require.ErrorContains(t, call(), "the only replica is ejected")
	waitFor(t, p.started, "the first probe")
	probeErr := errors.New("connection refused")
	p.answer <- probeErr
	requireRecord(t, logs.next(t, "the failed probe"), slog.LevelInfo, "fanout: replica failed its probe; still ejected", map[string]string{
		"replica": "10.0.0.1:7001", "index": "0", "ejected_for": "1ns", "ejections": "2",
		"in_service": "0", "err": "connection refused", "failures": "",
	})

	// A probe that succeeds readmits it.
	require.ErrorContains(t, call(), "the only replica is ejected")
	waitFor(t, p.started, "the second probe")
	rs[0].fail(nil)
	p.answer <- nil
	requireRecord(t, logs.next(t, "the readmission"), slog.LevelInfo, "fanout: replica readmitted", map[string]string{
		"replica": "10.0.0.1:7001", "index": "0", "in_service": "1", "err": "", "ejected_for": "",
	})
	require.Contains(t, logs.all()[2].Attrs, "down")
	for range 20 {
		require.NoError(t, call())
	}

	require.NoError(t, b.Close())
	require.Len(t, logs.all(), 3, "one line per change, none per call: %v", logs.all())
}

// TestBalancerDoesNotLogProbesOfCalls checks that the probes calls start
// when every replica is ejected, which run as often as calls do, are not
// logged: the ejection and the readmission are, once each.
func TestBalancerDoesNotLogProbesOfCalls(t *testing.T) {
	rs, bs := stubs(1)
	logs := newLogRecorder()
	p := newControlledProbe()
	b := newBalancer(t, bs,
		fanout.WithEjection(1, time.Hour, time.Hour),
		fanout.WithProbe(p.probe, time.Second),
		fanout.WithBalancerLogger(logs.logger()))
	call := func() error {
		_, err := b.Process(context.Background(), []int64{1})
		return err
	}

	rs[0].fail(unreachable)
	require.ErrorIs(t, call(), fanout.ErrUnavailable)
	requireRecord(t, logs.next(t, "the ejection"), slog.LevelWarn, "fanout: replica ejected", map[string]string{
		"replica": "", "index": "0", "failures": "1", "ejected_for": "1h0m0s", "in_service": "0",
	})

	for range 3 {
		// Call until a probe starts: calls that find it running start
		// none. The probe that failed before has been counted once the
		// next one starts.
		untilProbe(t, call, p)
		p.answer <- errors.New("connection refused")
	}
	untilProbe(t, call, p)
	rs[0].fail(nil)
	p.answer <- nil
	requireRecord(t, logs.next(t, "the readmission"), slog.LevelInfo, "fanout: replica readmitted", nil)
	require.NoError(t, call())
	require.NoError(t, b.Close())
	require.Len(t, logs.all(), 2, "%v", logs.all())
}

// untilProbe calls until p's probe starts: calls that find the only
// replica ejected fail at once, and start a probe unless one is running.
func untilProbe(t *testing.T, call func() error, p *controlledProbe) {
	t.Helper()
	for {
		require.ErrorContains(t, call(), "the only replica is ejected")
		select {
		case <-p.started:
			return
		default:
		}
	}
}

// TestBalancerCheck checks that Check ejects the replicas that fail their
// probe, names them, and logs each once.
func TestBalancerCheck(t *testing.T) {
	rs, bs := stubs(3)
	logs := newLogRecorder()
	b := newBalancer(t, bs,
		fanout.WithEjection(5, time.Hour, time.Hour),
		fanout.WithBalancerLogger(logs.logger()),
		fanout.WithReplicaNames("a:1", "b:1", "c:1"))
	rs[1].fail(unreachable)

	err := b.Check(context.Background())
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.EqualError(t, err, "replica 1 (b:1): "+unreachable.Error())
	requireRecord(t, logs.next(t, "the check's ejection"), slog.LevelWarn, "fanout: replica failed its check; ejected", map[string]string{
		"replica": "b:1", "index": "1", "ejected_for": "1h0m0s", "ejections": "1", "in_service": "2",
		"err": unreachable.Error(), "failures": "",
	})
	for _, r := range rs {
		require.EqualValues(t, 1, r.probes.Load(), "every replica is probed once")
	}

	for range 30 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}
	require.Zero(t, rs[1].calls.Load(), "a replica that failed its check takes no calls")

	// A second check probes the replicas in service only.
	require.NoError(t, b.Check(context.Background()))
	require.EqualValues(t, 1, rs[1].probes.Load())
	require.NoError(t, b.Close())
	require.Len(t, logs.all(), 1, "%v", logs.all())

	// A check cut short ejects nobody.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, b.Check(ctx), context.Canceled)
	require.Len(t, logs.all(), 1)
}

// TestBalancerCheckStoppedByClose checks that Close ends a check's probes,
// which then eject nobody.
func TestBalancerCheckStoppedByClose(t *testing.T) {
	_, bs := stubs(1)
	logs := newLogRecorder()
	p := newControlledProbe()
	b := newBalancer(t, bs, fanout.WithProbe(p.probe, time.Second), fanout.WithBalancerLogger(logs.logger()))
	checked := make(chan error, 1)
	go func() { checked <- b.Check(context.Background()) }()
	waitFor(t, p.started, "the check's probe")
	require.NoError(t, b.Close())
	require.ErrorIs(t, <-checked, context.Canceled)
	require.Empty(t, logs.all())
}

// TestBalancerNamesReplicasByString checks that a replica that is a
// fmt.Stringer is named by its String method in log lines.
func TestBalancerNamesReplicasByString(t *testing.T) {
	logs := newLogRecorder()
	r := &namedStub{name: "y-2"}
	r.fail(unreachable)
	b := newBalancer(t, []fanout.Backend[int64, int64]{echo(), r},
		fanout.WithEjection(1, time.Hour, time.Hour), fanout.WithBalancerLogger(logs.logger()))
	require.Error(t, b.Check(context.Background()))
	requireRecord(t, logs.next(t, "the ejection"), slog.LevelWarn, "fanout: replica failed its check; ejected",
		map[string]string{"replica": "y-2", "index": "1"})
}

type namedStub struct {
	replicaStub
	name string
}

func (s *namedStub) String() string { return s.name }

// TestBalancerCloseDuringAProbeLogsNothing checks that a probe ended by
// Close is not logged as a failed probe.
func TestBalancerCloseDuringAProbeLogsNothing(t *testing.T) {
	rs, bs := stubs(1)
	logs := newLogRecorder()
	p := newControlledProbe()
	b := newBalancer(t, bs,
		fanout.WithEjection(1, time.Nanosecond, time.Nanosecond),
		fanout.WithProbe(p.probe, time.Second), fanout.WithBalancerLogger(logs.logger()))
	rs[0].fail(unreachable)
	b.Process(context.Background(), []int64{1})
	requireRecord(t, logs.next(t, "the ejection"), slog.LevelWarn, "fanout: replica ejected", nil)
	b.Process(context.Background(), []int64{1})
	waitFor(t, p.started, "the probe")
	require.NoError(t, b.Close())
	require.Len(t, logs.all(), 1, "%v", logs.all())
}

// TestLimiterLogsShedLoad checks that a limiter logs refused calls at once,
// then at most once per interval with the count since its last line.
func TestLimiterLogsShedLoad(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	logs := newLogRecorder()
	l, err := fanout.NewLimiter(fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		<-release
		return in, nil
	}), 1, fanout.WithLimiterLogger(logs.logger()))
	require.NoError(t, err)
	timers := make(chan func(), 1)
	fanout.SetLimiterAfterFunc(l, func(d time.Duration, f func()) {
		require.Equal(t, time.Second, d)
		select {
		case timers <- f:
		default:
			require.FailNow(t, "a line scheduled while one is pending")
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Process(context.Background(), []int64{1})
	}()
	<-entered
	refuse := func(n int) {
		for range n {
			_, err := l.Process(context.Background(), []int64{2})
			require.ErrorIs(t, err, fanout.ErrOverloaded)
		}
	}
	shed := map[string]string{"max_in_flight": "1"}
	want := func(n string) map[string]string { shed["shed"] = n; return shed }

	refuse(1)
	requireRecord(t, logs.next(t, "the first refusal"), slog.LevelWarn, "fanout: limiter shed load", want("1"))
	refuse(5)
	require.Len(t, logs.all(), 1, "refusals within the interval wait for its end")
	(<-timers)()
	requireRecord(t, logs.next(t, "the interval's refusals"), slog.LevelWarn, "fanout: limiter shed load", want("5"))
	(<-timers)() // an interval without refusals: no line, and no more timer
	require.Len(t, logs.all(), 2)
	require.Empty(t, timers)

	refuse(1)
	requireRecord(t, logs.next(t, "a refusal after a quiet interval"), slog.LevelWarn, "fanout: limiter shed load", want("1"))
	(<-timers)()
	require.Len(t, logs.all(), 3)

	close(release)
	<-done
}

// TestLimiterCountsEveryRefusalOnce refuses calls from many goroutines while
// the interval ends again and again, and checks that the lines count every
// refusal once.
func TestLimiterCountsEveryRefusalOnce(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	logs := newLogRecorder()
	l, err := fanout.NewLimiter(fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		<-release
		return in, nil
	}), 1, fanout.WithLimiterLogger(logs.logger()))
	require.NoError(t, err)
	timers := make(chan func(), 1)
	fanout.SetLimiterAfterFunc(l, func(_ time.Duration, f func()) { timers <- f })
	go l.Process(context.Background(), []int64{1})
	<-entered

	const callers, calls = 8, 200
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range calls {
				l.Process(context.Background(), []int64{2})
			}
		})
	}
	stop := make(chan struct{})
	timed := make(chan struct{})
	go func() {
		defer close(timed)
		for {
			select {
			case f := <-timers:
				f()
			case <-stop:
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-timed
	for len(timers) > 0 {
		(<-timers)()
	}
	total := 0
	for _, r := range logs.all() {
		var n int
		fmt.Sscan(r.Attrs["shed"], &n)
		total += n
	}
	require.Equal(t, callers*calls, total)
	close(release)
}

// TestBalancerEarlyProbesDoNotLengthenTheEjection makes many calls while
// the only replica is ejected and down: each starts a probe before the
// ejection is up, which fails. Those probes must not count as ejections in
// a row: the first probe due once the ejection is up ejects the replica
// for twice the base, not for the longest ejection.
func TestBalancerEarlyProbesDoNotLengthenTheEjection(t *testing.T) {
	rs, bs := stubs(1)
	rs[0].fail(unreachable)
	const base = 50 * time.Millisecond
	logs := newLogRecorder()
	b := newBalancer(t, bs, fanout.WithEjection(1, base, time.Hour), fanout.WithBalancerLogger(logs.logger()))

	_, err := b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, unreachable)
	ejected := logs.next(t, "the ejection")
	require.Equal(t, "fanout: replica ejected", ejected.Msg)

	// Calls until a probe that was due fails and is logged: every call
	// before it found the replica ejected, and started a probe unless one
	// was running.
	deadline := time.Now().Add(hangGuard)
	for len(logs.all()) < 2 {
		require.True(t, time.Now().Before(deadline), "no probe was due within %v: the ejection grew (%d probes)", hangGuard, rs[0].probes.Load())
		_, err := b.Process(context.Background(), []int64{1})
		require.ErrorIs(t, err, fanout.ErrUnavailable)
		runtime.Gosched()
	}
	recs := logs.all()
	r := recs[1]
	require.Equal(t, "fanout: replica failed its probe; still ejected", r.Msg, "%v", recs)
	early := rs[0].probes.Load() - 1
	require.Positive(t, early, "probes were started before the ejection was up")
	require.Equal(t, "2", r.Attrs["ejections"], "after %d early probes", early)
	require.Equal(t, (2 * base).String(), r.Attrs["ejected_for"])
}
