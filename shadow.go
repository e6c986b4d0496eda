package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Shadow is a [Backend] that answers every call with its primary and
// mirrors a share of calls to a candidate, comparing answers.
//
// A shadow route tries a candidate backend, such as a new version of a
// service, on live traffic without letting it affect the callers: every
// call is answered by the primary, on the caller's context and goroutine,
// with exactly what the primary returned, results and error untouched (a
// [*PartialError] among them, as it came, not wrapped). The candidate's
// answers are only counted ([Shadow.Stats]) and the latest mismatches kept
// ([Shadow.Mismatches]).
//
// Mirroring: a call is mirrored only if the primary answered it (no error,
// or a *PartialError beside a result per item) and it is chosen, at random,
// with the probability of [WithShadowFraction]. An empty batch is never
// mirrored: it has nothing to compare. Process then copies the items and
// the primary's results and calls the candidate with the copies on a
// goroutine of its own, and returns without waiting for it. The copies are
// shallow: values that refer to memory (pointers, slices, maps) share it
// with the caller's, which must not change what they refer to while a
// mirrored call may use them.
//
// The mirrored call runs on a context that carries the caller's values but
// is not cancelled with it, that times out after [WithShadowTimeout] and
// that [Shadow.Close] cancels. At most [WithShadowMaxInFlight] mirrored
// calls run at once: a call chosen while as many are in flight is not
// mirrored, and counts as dropped. Nothing ever waits for a slot.
//
// Comparison: only the items the primary answered are compared; those its
// *PartialError lists are skipped. For each, if the candidate failed the
// whole call (an error other than a *PartialError with results, a wrong
// number of results, or a *PartialError that breaks the Backend contract)
// or failed that item, it counts as an error; otherwise as a match or a
// mismatch, as the equal function given to [NewShadow] says. A mirrored
// call that failed because Close cancelled it is not compared: its failure
// says nothing of the candidate.
//
// Logging: given [WithShadowLogger], a shadow logs mismatches and the
// candidate's failures at Warn level, each at most once a second, never
// once per call (see the option for every line).
//
// A Shadow is safe for concurrent use, provided its backends are; the
// candidate is called concurrently with the primary and with itself.
// [Shadow.Close] does not close the backends.
type Shadow[In, Out any] struct {
	primary   Backend[In, Out]
	candidate Backend[In, Out]
	equal     func(a, b Out) bool
	cfg       shadowConfig
	log       *slog.Logger // nil: nothing is logged

	ctx    context.Context // cancelled by Close, ends mirrored calls
	cancel context.CancelFunc
	mu     sync.RWMutex // guards closed, and mirrors.Add against Close's Wait
	closed bool
	// mirrors counts the mirrored calls running, for Close to wait on.
	mirrors  sync.WaitGroup
	inFlight atomic.Int64

	mirrored, dropped, matches, mismatches, errs atomic.Int64

	sampleMu sync.Mutex
	sample   []Mismatch[In, Out] // a ring of cfg.sample mismatches
	next     int                 // where the next mismatch goes in sample
	full     bool                // sample has wrapped around

	// Logging: the mismatches and failed items not yet counted in a line,
	// and when the next line of each kind may be logged.
	newMismatches, newErrors atomic.Int64
	mismatchGate, errorGate  logGate

	now      func() time.Time // the clock of log lines; a test may set it
	compared func()           // called after each comparison; a test may set it
}

var _ Backend[int, int] = (*Shadow[int, int])(nil)

// ShadowStats counts a [Shadow]'s mirrored calls and the items it compared.
// Each item the primary answered in a mirrored call counts once, as a
// match, a mismatch or an error, once the call has returned, unless Close
// cancelled it.
type ShadowStats struct {
	Mirrored   int64 // calls sent to the candidate
	Dropped    int64 // calls chosen for mirroring but not sent: MaxInFlight reached (or closed)
	Matches    int64 // items both answered, equal
	Mismatches int64 // items both answered, not equal
	Errors     int64 // items the primary answered and the candidate did not (the candidate's call failed, timed out, answered the wrong count, or failed the item)
}

// Mismatch is an item that the primary and the candidate of a [Shadow]
// both answered, with answers that are not equal.
type Mismatch[In, Out any] struct {
	Item      In
	Primary   Out
	Candidate Out
}

// shadowLogInterval is the least time between two lines of one kind of a
// shadow.
const shadowLogInterval = time.Second

type shadowConfig struct {
	fraction    float64
	maxInFlight int
	timeout     time.Duration
	sample      int
	logger      *slog.Logger
}

// ShadowOption configures a [Shadow]. No options means the documented
// default of every option.
type ShadowOption func(*shadowConfig)

// WithShadowFraction sets the share of calls mirrored to the candidate,
// from 0 to 1: 1 mirrors every call the primary answered, 0 none, and a
// share in between mirrors each call with that probability. [NewShadow]
// fails if f is outside [0, 1] or NaN.
//
// Default: 1.
func WithShadowFraction(f float64) ShadowOption {
	return func(c *shadowConfig) { c.fraction = f }
}

// WithShadowMaxInFlight bounds the mirrored calls in flight at once. A call
// chosen for mirroring while n are in flight is not mirrored, and counts as
// dropped ([ShadowStats].Dropped): a slow candidate costs the callers
// nothing and holds at most n calls' copies. n < 1 means 1.
//
// Default: 64.
func WithShadowMaxInFlight(n int) ShadowOption {
	return func(c *shadowConfig) { c.maxInFlight = max(n, 1) }
}

// WithShadowTimeout sets how long a mirrored call may take. The candidate's
// context is done when it is up; a call that fails then counts its items
// as errors. d <= 0 means the default.
//
// Default: 1s.
func WithShadowTimeout(d time.Duration) ShadowOption {
	return func(c *shadowConfig) { c.timeout = d }
}

// WithShadowSample sets how many of the most recent mismatches
// [Shadow.Mismatches] keeps. n < 1 keeps none; they are still counted.
//
// Default: 16.
func WithShadowSample(n int) ShadowOption {
	return func(c *shadowConfig) { c.sample = max(n, 0) }
}

// WithShadowLogger makes the shadow log what the comparisons find, at Warn
// level, at most one line of each kind a second, never one per call:
//
//   - "fanout: shadow mismatch": a mirrored call found mismatches.
//     mismatches= and matches= are the totals so far (as in
//     [Shadow.Stats]), new= the mismatches counted since the previous such
//     line, this call's included, and item=, primary= and candidate= show
//     the last mismatch of this call.
//   - "fanout: shadow candidate failed": the candidate failed a mirrored
//     call, or some of its items. errors= is the total of items counted as
//     errors so far, new= those counted since the previous such line, this
//     call's included, and err= the candidate's error in this call: the
//     error it returned (a [*PartialError] if it failed single items), or
//     one wrapping [ErrResultCount] if it answered the wrong number of
//     results.
//
// A call that finds mismatches, or failures, within a second of the last
// line of its kind logs nothing; what it found is counted in the next
// line's new=, and always in [Shadow.Stats].
//
// A nil logger logs nothing, and then nothing is spent on logging.
//
// Default: nil.
func WithShadowLogger(l *slog.Logger) ShadowOption {
	return func(c *shadowConfig) { c.logger = l }
}

// NewShadow returns a backend that answers with primary and mirrors calls to
// candidate, comparing their answers with equal; a nil equal means
// [reflect.DeepEqual]. It fails if primary or candidate is nil, or the
// fraction given [WithShadowFraction] is outside [0, 1].
func NewShadow[In, Out any](primary, candidate Backend[In, Out], equal func(a, b Out) bool, opts ...ShadowOption) (*Shadow[In, Out], error) {
	if isNil(primary) {
		return nil, errors.New("fanout: NewShadow: nil primary")
	}
	if isNil(candidate) {
		return nil, errors.New("fanout: NewShadow: nil candidate")
	}
	cfg := shadowConfig{
		fraction:    1,
		maxInFlight: 64,
		timeout:     time.Second,
		sample:      16,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if !(cfg.fraction >= 0 && cfg.fraction <= 1) {
		return nil, fmt.Errorf("fanout: NewShadow: WithShadowFraction(%v): the share of calls mirrored must be from 0 to 1", cfg.fraction)
	}
	if cfg.timeout <= 0 {
		cfg.timeout = time.Second
	}
	if equal == nil {
		equal = func(a, b Out) bool { return reflect.DeepEqual(a, b) }
	}
	s := &Shadow[In, Out]{
		primary:   primary,
		candidate: candidate,
		equal:     equal,
		cfg:       cfg,
		log:       cfg.logger,
		sample:    make([]Mismatch[In, Out], cfg.sample),
		now:       time.Now,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Process implements [Backend]: it returns what the primary returns for
// items on ctx, and may start a mirrored call of the candidate that it does
// not wait for (see [Shadow]).
func (s *Shadow[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	out, err := s.primary.Process(ctx, items)
	if s.cfg.fraction == 0 || len(items) == 0 || len(out) != len(items) {
		return out, err
	}
	pe := partialOf(err)
	if err != nil && pe == nil {
		return out, err
	}
	if s.cfg.fraction < 1 && rand.Float64() >= s.cfg.fraction {
		return out, err
	}
	s.mirror(ctx, items, out, pe)
	return out, err
}

// mirror starts the candidate's call of a copy of items, to be compared with
// a copy of out, the primary's answer, whose failures pe lists (nil for
// none), unless Close was called or MaxInFlight calls are in flight.
func (s *Shadow[In, Out]) mirror(ctx context.Context, items []In, out []Out, pe *PartialError) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		s.dropped.Add(1)
		return
	}
	if s.inFlight.Add(1) > int64(s.cfg.maxInFlight) {
		s.inFlight.Add(-1)
		s.mu.RUnlock()
		s.dropped.Add(1)
		return
	}
	s.mirrors.Add(1)
	s.mu.RUnlock()
	s.mirrored.Add(1)

	var skip []bool // the items the primary failed; nil for none
	if pe != nil {
		skip = failedItems(pe, len(items))
	}
	items, want := slices.Clone(items), slices.Clone(out)
	go func() {
		defer s.mirrors.Done()
		defer s.inFlight.Add(-1)
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.timeout)
		stop := context.AfterFunc(s.ctx, cancel)
		got, err := s.candidate.Process(mctx, items)
		stop()
		cancel()
		if err == nil || s.ctx.Err() == nil {
			s.compare(items, want, skip, got, err)
		}
		if s.compared != nil {
			s.compared()
		}
	}()
}

// failedItems returns which of n items pe lists, ignoring indices outside
// the batch.
func failedItems(pe *PartialError, n int) []bool {
	failed := make([]bool, n)
	mark := func(i int) {
		if i >= 0 && i < n {
			failed[i] = true
		}
	}
	for _, re := range pe.Failed {
		for _, i := range re.Indices {
			mark(i)
		}
	}
	for _, ie := range pe.Items {
		mark(ie.Index)
	}
	return failed
}

// compare counts the candidate's answer got, err to items against the
// primary's want, skipping the items skip lists, keeps the mismatches and
// logs what it found.
func (s *Shadow[In, Out]) compare(items []In, want []Out, skip []bool, got []Out, err error) {
	n := len(items)
	var whole error   // the candidate failed the whole call
	var failed []bool // the items the candidate failed alone
	pe := partialOf(err)
	switch {
	case (err == nil || pe != nil && got != nil) && len(got) != n:
		whole = fmt.Errorf("fanout: shadow candidate: %w: %s for %s", ErrResultCount, count(len(got), "result"), count(n, "item"))
	case err == nil:
	case pe != nil && got != nil:
		if cerr := pe.check(n, true); cerr != nil {
			whole = fmt.Errorf("fanout: shadow candidate: %w", cerr)
		} else {
			failed = failedItems(pe, n)
		}
	default:
		whole = err
	}

	var matches, errs int64
	var mismatched []int // indices of the mismatches
	for i := range n {
		switch {
		case skip != nil && skip[i]:
		case whole != nil || failed != nil && failed[i]:
			errs++
		case s.equal(want[i], got[i]):
			matches++
		default:
			mismatched = append(mismatched, i)
		}
	}
	totalMatches := s.matches.Add(matches)
	totalMismatches := s.mismatches.Add(int64(len(mismatched)))
	totalErrors := s.errs.Add(errs)

	if len(mismatched) > 0 && len(s.sample) > 0 {
		s.sampleMu.Lock()
		for _, i := range mismatched[max(len(mismatched)-len(s.sample), 0):] {
			s.sample[s.next] = Mismatch[In, Out]{Item: items[i], Primary: want[i], Candidate: got[i]}
			s.next++
			if s.next == len(s.sample) {
				s.next, s.full = 0, true
			}
		}
		s.sampleMu.Unlock()
	}

	if s.log == nil {
		return
	}
	if len(mismatched) > 0 {
		s.newMismatches.Add(int64(len(mismatched)))
		if s.mismatchGate.allow(s.now()) {
			last := mismatched[len(mismatched)-1]
			s.log.LogAttrs(context.Background(), slog.LevelWarn, "fanout: shadow mismatch",
				slog.Int64("mismatches", totalMismatches),
				slog.Int64("matches", totalMatches),
				slog.Int64("new", s.newMismatches.Swap(0)),
				slog.Any("item", items[last]),
				slog.Any("primary", want[last]),
				slog.Any("candidate", got[last]))
		}
	}
	if errs > 0 {
		s.newErrors.Add(errs)
		if s.errorGate.allow(s.now()) {
			cause := whole
			if cause == nil {
				cause = err
			}
			s.log.LogAttrs(context.Background(), slog.LevelWarn, "fanout: shadow candidate failed",
				slog.Int64("errors", totalErrors),
				slog.Int64("new", s.newErrors.Swap(0)),
				slog.Any("err", cause))
		}
	}
}

// logGate lets one line through at most every shadowLogInterval.
type logGate struct {
	next atomic.Int64 // when the next line may be logged, in Unix nanoseconds
}

// allow reports whether a line may be logged at now, and if so, closes the
// gate until shadowLogInterval later.
func (g *logGate) allow(now time.Time) bool {
	t := now.UnixNano()
	next := g.next.Load()
	return t >= next && g.next.CompareAndSwap(next, t+int64(shadowLogInterval))
}

// Stats returns the counts of the shadow's mirrored calls and comparisons
// so far. The counts are read one by one, while mirrored calls may be
// running: after [Shadow.Close] they are final and consistent.
func (s *Shadow[In, Out]) Stats() ShadowStats {
	return ShadowStats{
		Mirrored:   s.mirrored.Load(),
		Dropped:    s.dropped.Load(),
		Matches:    s.matches.Load(),
		Mismatches: s.mismatches.Load(),
		Errors:     s.errs.Load(),
	}
}

// Mismatches returns a copy of the most recent mismatches, as many as
// [WithShadowSample] keeps, oldest first.
func (s *Shadow[In, Out]) Mismatches() []Mismatch[In, Out] {
	s.sampleMu.Lock()
	defer s.sampleMu.Unlock()
	if !s.full {
		return slices.Clone(s.sample[:s.next])
	}
	return append(slices.Clone(s.sample[s.next:]), s.sample[:s.next]...)
}

// Close stops mirroring, cancels the mirrored calls in flight and waits for
// them to return. Calls after Close are answered by the primary as before,
// and mirror nothing: a call chosen for mirroring counts as dropped. Close
// does not close the primary or the candidate. It is idempotent and always
// returns nil.
func (s *Shadow[In, Out]) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.mirrors.Wait()
	return nil
}
