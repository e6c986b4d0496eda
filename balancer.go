package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Balancer is a [Backend] that spreads calls over several replicas of one
// backend, retries calls that are safe to retry on another replica, and
// takes replicas that keep failing out of service for a while.
//
// Balancing: each call goes to the less loaded of two replicas picked at
// random (power of two choices over the calls each has in flight), among
// the replicas in service that the call has not tried yet.
//
// Retries: a call that fails with an error wrapping [ErrUnavailable] or
// [ErrOverloaded] never reached the backend, so it is tried again on another
// replica, up to [WithMaxAttempts] attempts in all. An error wrapping
// [ErrInterrupted] is retried only if the balancer was built
// [WithIdempotent]. Any other error, such as one the backend itself
// returned, is never retried, and neither is a call whose context is done.
//
// Ejection: a replica whose calls fail with [ErrUnavailable] or
// [ErrInterrupted] several times in a row (see [WithEjection]) is ejected:
// it takes no calls for the ejection time, which doubles with each ejection
// in a row up to a maximum. When the time is up, the next call that would
// consider the replica starts a probe in the background (see [WithProbe]);
// the replica takes traffic again only once a probe succeeds, and a failed
// probe ejects it again for longer. When every replica is ejected, calls
// fail at once with an error wrapping [ErrUnavailable], and each such call
// starts a probe of every ejected replica not being probed, whatever its
// ejection time, so that the first replica back is readmitted at once.
//
// Hedging: built [WithHedging], a balancer also sends a call that its
// replica is slow to answer to a second replica, within a budget of extra
// calls, and takes the first answer.
//
// Logging: given [WithBalancerLogger], a balancer logs each change of a
// replica's state once, when it happens: an ejection at Warn level, a
// readmission at Info level (see the option for every line). Calls are
// never logged one by one.
//
// A Balancer is safe for concurrent use. [Balancer.Close] waits for probes
// in flight; it does not close the replicas.
type Balancer[In, Out any] struct {
	// set holds the replicas, a slice never changed once stored: a call
	// works on the one it loaded first. SetReplicas stores a new one.
	set    atomic.Pointer[[]*replica[In, Out]]
	setMu  sync.Mutex     // serializes SetReplicas
	nextID int            // the index of the next replica added; under setMu
	retire func(any)      // see WithRetire; nil for none
	drains sync.WaitGroup // replicas removed, whose calls have not all returned
	cfg    balancerConfig
	probe  func(context.Context, Backend[In, Out]) error
	log    *slog.Logger // nil: nothing is logged

	ctx    context.Context // cancelled by Close, ends probes
	cancel context.CancelFunc
	probes sync.WaitGroup

	// Hedging (WithHedging); sketch is nil without it.
	sketch     *latencySketch
	budget     hedgeBudget
	hedgeCalls atomic.Int64 // calls that could be hedged: first attempts
	hedged     atomic.Int64 // hedges sent
	hedgesWon  atomic.Int64 // hedges whose answer was the call's
	overBudget atomic.Int64 // hedges due but not sent: the budget was spent

	// For tests (export_test.go): a delay that replaces the sketch's, and
	// a function told of each decision to hedge or not, once the delay is up.
	hedgeDelay time.Duration
	hedgeHook  func(sent bool)
}

var _ Backend[int, int] = (*Balancer[int, int])(nil)

// Replica states.
const (
	inService int32 = iota
	ejected
	probing
)

type replica[In, Out any] struct {
	backend  Backend[In, Out]
	index    int    // the order it was added in: its index in NewBalancer's replicas, and on for those SetReplicas adds
	name     string // in log lines; "" for none
	work     string // in a Work: name, or "#" and index
	inFlight atomic.Int64
	state    atomic.Int32
	troubled atomic.Bool // failures or ejections are not zero
	removed  atomic.Bool // SetReplicas removed it: it drains, then retires
	joining  bool        // added by SetReplicas, not yet in service; under mu

	mu           sync.Mutex
	failures     int       // consecutive failures counted against health
	ejections    int       // ejections in a row
	ejectedUntil time.Time // when state is ejected
	ejectedAt    time.Time // when it last left service
	readmitted   time.Time // when the last probe succeeded
	lastErr      error     // the error that caused the last ejection
}

type balancerConfig struct {
	idempotent   bool
	hedging      bool
	hedgeQ       float64 // the latency quantile after which a call is hedged
	hedgeBudget  float64 // the share of calls that may be hedged
	maxAttempts  int
	failures     int
	baseEjection time.Duration
	maxEjection  time.Duration
	probeTimeout time.Duration
	logger       *slog.Logger
	names        []string  // nil: none given
	name         string    // WithBalancerName
	retire       func(any) // WithRetire's, of a Backend[In, Out]
	observer     Observer

	// probe is the func(context.Context, Backend[In, Out]) error given to
	// WithProbe, whose In and Out are probeIn and probeOut; nil for the
	// default. NewBalancer checks that they are the balancer's.
	probe             any
	probeIn, probeOut reflect.Type
}

// BalancerOption configures a [Balancer]. No options means the documented
// default of every option.
type BalancerOption func(*balancerConfig)

// WithIdempotent declares that processing the same items twice is harmless,
// so a call interrupted after its request may have been delivered
// ([ErrInterrupted]) is retried on another replica too.
//
// Default: off; only calls known not to have been delivered are retried.
func WithIdempotent() BalancerOption {
	return func(c *balancerConfig) { c.idempotent = true }
}

// WithMaxAttempts bounds the replicas one call is tried on, the first
// attempt included. n < 1 means 1: no retries.
//
// Default: 3 (never more than the number of replicas).
func WithMaxAttempts(n int) BalancerOption {
	return func(c *balancerConfig) { c.maxAttempts = max(n, 1) }
}

// WithEjection sets when a replica is ejected and for how long: after
// failures consecutive calls failed with [ErrUnavailable] or
// [ErrInterrupted], for base, doubling with each ejection in a row up to
// maxTime. A replica's run of ejections ends when it serves a call
// successfully at least base after it was readmitted. failures < 1 means 1.
//
// Default: 5 failures, 1s base, 30s maximum.
func WithEjection(failures int, base, maxTime time.Duration) BalancerOption {
	return func(c *balancerConfig) {
		c.failures, c.baseEjection, c.maxEjection = max(failures, 1), base, max(base, maxTime)
	}
}

// WithProbe sets how an ejected replica is probed before it takes traffic
// again, and how long a probe may take. A probe that returns nil readmits
// the replica. A nil probe means the default one. The probe's In and Out
// must be those of the balancer's replicas: [NewBalancer] fails otherwise.
//
// The probe's type arguments are inferred from probe, so a function literal
// or a named function needs none. To keep the default probe and change only
// its timeout, use [WithProbeTimeout], which needs no type arguments.
//
// Default: a call with an empty batch, which a remote backend such as a
// transport client answers with a round trip to its server, and 1s.
func WithProbe[In, Out any](probe func(ctx context.Context, replica Backend[In, Out]) error, timeout time.Duration) BalancerOption {
	return func(c *balancerConfig) {
		c.probe, c.probeTimeout = probe, timeout
		c.probeIn, c.probeOut = reflect.TypeFor[In](), reflect.TypeFor[Out]()
	}
}

// WithProbeTimeout sets how long a probe may take (see [WithProbe]), the
// probe itself left as it is. A probe that has not returned within it
// fails.
//
// Default: 1s.
func WithProbeTimeout(timeout time.Duration) BalancerOption {
	return func(c *balancerConfig) { c.probeTimeout = timeout }
}

// WithBalancerLogger makes the balancer log each change of a replica's
// state, once, as it happens, never once per call. Every line names the
// replica (replica=, see [WithReplicaNames]; index= is its index in
// NewBalancer's replicas) and counts the replicas left in service
// (in_service=):
//
//   - "fanout: replica ejected", Warn: its calls failed failures= times in a
//     row; it takes no calls for ejected_for=, its ejections= ejection in a
//     row; err= is the last failure.
//   - "fanout: replica failed its check; ejected", Warn: [Balancer.Check]'s
//     probe of it failed with err=; ejected as above.
//   - "fanout: replica failed its probe; still ejected", Info: a probe
//     started because its ejection time was up failed with err=; it is
//     ejected again, for ejected_for=. The probes that calls start at once
//     when every replica is ejected run as often as calls do, and are not
//     logged: the replica stays out of service, as its ejection line said.
//   - "fanout: replica readmitted", Info: a probe succeeded and it takes
//     calls again, out of service for down=.
//
// A nil logger logs nothing, and then nothing is spent on logging.
//
// Default: nil.
func WithBalancerLogger(l *slog.Logger) BalancerOption {
	return func(c *balancerConfig) { c.logger = l }
}

// WithReplicaNames names the replicas in log lines (see
// [WithBalancerLogger]): names[i] names replicas[i] of [NewBalancer], which
// fails unless there are as many names as replicas. A transport client's
// address, say, is a good name.
//
// Default: a replica that implements [fmt.Stringer] is named by its String
// method, called once, by NewBalancer; another has no name, and log lines
// give its index only.
func WithReplicaNames(names ...string) BalancerOption {
	return func(c *balancerConfig) { c.names = slices.Clone(names) }
}

// WithBalancerName names the balancer: the route it serves, say. The name
// is the Route of every [WorkAttempt] it tells its observer of (see
// [WithBalancerObserver]).
//
// Default: "".
func WithBalancerName(name string) BalancerOption {
	return func(c *balancerConfig) { c.name = name }
}

// WithBalancerObserver has a [Balancer] tell o about every call of a
// replica ([WorkAttempt]): each try, retry and hedge, with the replica's
// name; see [Observer].
//
// Default: none, and then nothing is measured.
func WithBalancerObserver(o Observer) BalancerOption {
	return func(c *balancerConfig) { c.observer = o }
}

// Defaults of [WithHedging].
const (
	DefaultHedgeQuantile = 0.95
	DefaultHedgeBudget   = 0.05
)

// WithHedging makes the balancer hedge its calls: when the replica a call
// went to has not answered after the quantile q of the latencies of the
// balancer's recent calls, the same items go to another replica as well,
// the first answer is the call's, and the other call is cancelled at once
// (a transport client cancels it on the wire). A partial answer counts as
// an answer. A call that fails on one replica waits for the other.
//
// Hedges are bounded: budget is the share of calls that may be hedged,
// kept as a token bucket (each call earns budget of a hedge, a hedge
// spends one, and at most what 1,000 calls earn, or 10 hedges if that is
// more, are saved up), so that hedging adds at most that share of extra
// load to the replicas, whatever their latency does, beyond a burst of
// what was saved. A
// hedge is never sent once the call's context is done or its deadline has
// passed, never to the replica already asked (nor to one out of service),
// and not before the balancer has seen 100 answers: the quantile is
// computed from the last 1,024 to 2,048 answered calls, each counted from
// its own start, a call cancelled because its hedge won counting as slow as
// it was when cancelled. Only the first attempt of a call is hedged; its
// retries are not.
//
// A hedged call runs twice, so hedging needs [WithIdempotent]:
// [NewBalancer] fails without it, and for q outside (0, 1) or budget
// outside (0, 1]. With a single replica nothing is hedged.
// [Balancer.Hedges] counts the hedges.
//
// Default: off. [DefaultHedgeQuantile] (p95) and [DefaultHedgeBudget] (5%)
// are the usual choice.
func WithHedging(q, budget float64) BalancerOption {
	return func(c *balancerConfig) { c.hedging, c.hedgeQ, c.hedgeBudget = true, q, budget }
}

// ReplicaState is a replica's state in a [Balancer].
type ReplicaState uint8

const (
	ReplicaHealthy ReplicaState = iota // in service: it takes calls
	ReplicaEjected                     // out of service until its ejection ends and a probe succeeds
	ReplicaProbing                     // out of service, a probe of it in flight
)

// String returns "healthy", "ejected" or "probing".
func (s ReplicaState) String() string {
	switch s {
	case ReplicaHealthy:
		return "healthy"
	case ReplicaEjected:
		return "ejected"
	case ReplicaProbing:
		return "probing"
	}
	return "unknown"
}

// ReplicaStatus is a replica's state at one moment; see [Balancer.Replicas].
type ReplicaStatus struct {
	Index    int          // in the replicas given to NewBalancer
	Name     string       // see WithReplicaNames; "" for none
	State    ReplicaState //
	InFlight int          // calls of it in flight, hedges included
	Since    time.Time    // out of service: when it left service; zero when healthy
	Err      error        // out of service: the error that ejected it
}

// Replicas returns the state of every replica now, in the order given to
// [NewBalancer]: for a status page, or a gauge of replicas up.
func (b *Balancer[In, Out]) Replicas() []ReplicaStatus {
	rs := b.list()
	out := make([]ReplicaStatus, len(rs))
	for i, r := range rs {
		s := ReplicaStatus{Index: r.index, Name: r.name, InFlight: int(r.inFlight.Load())}
		switch r.state.Load() {
		case ejected:
			s.State = ReplicaEjected
		case probing:
			s.State = ReplicaProbing
		}
		if s.State != ReplicaHealthy {
			r.mu.Lock()
			s.Since, s.Err = r.ejectedAt, r.lastErr
			r.mu.Unlock()
		}
		out[i] = s
	}
	return out
}

// HedgeStats counts a balancer's hedges; see [WithHedging].
type HedgeStats struct {
	Calls      int64         // calls made (first attempts, not retries), each of which could be hedged
	Sent       int64         // hedges sent: Sent/Calls is the extra load hedging cost
	Won        int64         // hedges whose answer was the call's
	OverBudget int64         // hedges due but not sent: the budget was spent
	Delay      time.Duration // how long a call waits now before it is hedged; 0 before the first 100 answers
}

// Hedges returns the balancer's counts of hedges since [NewBalancer]: all
// zero without [WithHedging].
func (b *Balancer[In, Out]) Hedges() HedgeStats {
	s := HedgeStats{Calls: b.hedgeCalls.Load(), Sent: b.hedged.Load(), Won: b.hedgesWon.Load(), OverBudget: b.overBudget.Load()}
	if b.sketch != nil {
		s.Delay = b.sketch.delay()
	}
	return s
}

func emptyBatchProbe[In, Out any](ctx context.Context, b Backend[In, Out]) error {
	_, err := b.Process(ctx, nil)
	return err
}

// NewBalancer returns a balancer over replicas. It fails if one of them is
// nil, the probe given [WithProbe] is for backends of other types than the
// replicas, or [WithReplicaNames] gives another number of names. With no
// replicas, its calls fail at once with an error wrapping [ErrUnavailable]
// until [Balancer.SetReplicas] gives it some.
func NewBalancer[In, Out any](replicas []Backend[In, Out], opts ...BalancerOption) (*Balancer[In, Out], error) {
	cfg := balancerConfig{
		maxAttempts:  3,
		failures:     5,
		baseEjection: time.Second,
		maxEjection:  30 * time.Second,
		probeTimeout: time.Second,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.names != nil && len(cfg.names) != len(replicas) {
		return nil, fmt.Errorf("fanout: NewBalancer: WithReplicaNames gives %s for %s",
			count(len(cfg.names), "name"), count(len(replicas), "replica"))
	}
	if cfg.hedging {
		switch {
		case !cfg.idempotent:
			return nil, errors.New("fanout: NewBalancer: WithHedging needs WithIdempotent: a hedged call may run on two replicas")
		case !(cfg.hedgeQ > 0 && cfg.hedgeQ < 1):
			return nil, fmt.Errorf("fanout: NewBalancer: WithHedging: quantile %v is not in (0, 1)", cfg.hedgeQ)
		case !(cfg.hedgeBudget > 0 && cfg.hedgeBudget <= 1):
			return nil, fmt.Errorf("fanout: NewBalancer: WithHedging: budget %v is not in (0, 1]", cfg.hedgeBudget)
		}
	}
	b := &Balancer[In, Out]{cfg: cfg, probe: emptyBatchProbe[In, Out], log: cfg.logger}
	if cfg.hedging {
		b.sketch = newLatencySketch(cfg.hedgeQ)
		b.budget = newHedgeBudget(cfg.hedgeBudget)
	}
	if cfg.probe != nil {
		probe, ok := cfg.probe.(func(context.Context, Backend[In, Out]) error)
		if !ok {
			return nil, fmt.Errorf("fanout: NewBalancer: WithProbe probes Backend[%v, %v], the replicas are Backend[%v, %v]",
				cfg.probeIn, cfg.probeOut, reflect.TypeFor[In](), reflect.TypeFor[Out]())
		}
		if probe != nil {
			b.probe = probe
		}
	}
	rs := make([]*replica[In, Out], 0, len(replicas))
	for i, r := range replicas {
		if isNil(r) {
			return nil, fmt.Errorf("fanout: NewBalancer: replica %d is nil", i)
		}
		name := ""
		if cfg.names != nil {
			name = cfg.names[i]
		} else if s, ok := r.(fmt.Stringer); ok {
			name = s.String()
		}
		rs = append(rs, newReplica(r, i, name))
	}
	b.set.Store(&rs)
	b.nextID = len(rs)
	b.retire = cfg.retire
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

func newReplica[In, Out any](backend Backend[In, Out], index int, name string) *replica[In, Out] {
	work := name
	if work == "" {
		work = "#" + strconv.Itoa(index)
	}
	return &replica[In, Out]{backend: backend, index: index, name: name, work: work}
}

// list returns the balancer's replicas now. The slice must not be changed.
func (b *Balancer[In, Out]) list() []*replica[In, Out] { return *b.set.Load() }

// noReplicas is the error of a call made while the balancer has no
// replicas at all.
func (b *Balancer[In, Out]) noReplicas() error {
	if b.cfg.name != "" {
		return fmt.Errorf("fanout: %w: route %s has no replicas", ErrUnavailable, b.cfg.name)
	}
	return fmt.Errorf("fanout: %w: the balancer has no replicas", ErrUnavailable)
}

// SetReplicas makes replicas, named by names (names[i] names replicas[i];
// names must be unique and are the replicas' identity), the balancer's
// replicas from now on: for a replica set that changes, as discovery finds
// replicas come and go. It fails, changing nothing, if the lengths differ,
// a name repeats or a replica is nil. (Give a balancer whose set will
// change names from the start, with [WithReplicaNames] or replicas that
// are Stringers: unnamed replicas are all replaced.)
//
//   - A replica whose name the balancer already has is kept as it is, with
//     its health and its calls in flight; the Backend given for it is not
//     used.
//   - A new one joins out of service: it is probed at once (see
//     [WithProbe]), takes calls once a probe succeeds, and is ejected as
//     any replica is if its probes fail. SetReplicas returns once the
//     first probes of the new replicas have answered or timed out, so a
//     replica that answers takes calls from then on. The balancer logs "fanout:
//     replica joined" when it takes calls.
//   - One no longer named takes no new calls. Its calls in flight finish,
//     and once the last has returned it is handed to the function given to
//     [WithRetire], if any, to close it. The balancer logs "fanout:
//     replica removed" at once and "fanout: replica drained" then.
//
// An empty list is allowed: calls then fail at once with an error wrapping
// [ErrUnavailable] that says the route has no replicas. Calls in flight
// finish on the replicas they picked.
func (b *Balancer[In, Out]) SetReplicas(replicas []Backend[In, Out], names []string) error {
	if len(replicas) != len(names) {
		return fmt.Errorf("fanout: Balancer.SetReplicas: %s for %s", count(len(names), "name"), count(len(replicas), "replica"))
	}
	seen := make(map[string]bool, len(names))
	for i, name := range names {
		if seen[name] {
			return fmt.Errorf("fanout: Balancer.SetReplicas: replica name %q given twice", name)
		}
		seen[name] = true
		if isNil(replicas[i]) {
			return fmt.Errorf("fanout: Balancer.SetReplicas: replica %q is nil", name)
		}
	}
	b.setMu.Lock()
	defer b.setMu.Unlock()
	old := b.list()
	byName := make(map[string]*replica[In, Out], len(old))
	for _, r := range old {
		byName[r.name] = r
	}
	rs := make([]*replica[In, Out], 0, len(names))
	kept := make(map[*replica[In, Out]]bool, len(old))
	var joined []*replica[In, Out]
	for i, name := range names {
		if r, ok := byName[name]; ok {
			rs = append(rs, r)
			kept[r] = true
			delete(byName, name)
			continue
		}
		r := newReplica(replicas[i], b.nextID, name)
		b.nextID++
		r.joining, r.ejectedAt = true, time.Now()
		r.troubled.Store(true)
		r.state.Store(probing) // by SetReplicas, below, until its first probe succeeds
		rs = append(rs, r)
		joined = append(joined, r)
	}
	b.set.Store(&rs)
	for _, r := range old {
		if kept[r] || r.removed.Load() {
			continue
		}
		r.removed.Store(true)
		b.drains.Add(1)
		if b.log != nil {
			b.log.Info("fanout: replica removed", "replica", r.name, "index", r.index, "in_flight", r.inFlight.Load(), "replicas", len(rs))
		}
		b.drained(r)
	}
	var first sync.WaitGroup
	for _, r := range joined {
		if b.ctx.Err() != nil {
			r.state.Store(ejected) // closed: it is never probed
			continue
		}
		b.runProbe(r, true, &first)
	}
	first.Wait()
	return nil
}

// retiredMark is what a retired replica's count of calls in flight holds:
// a call that adds itself finds it negative, and goes elsewhere.
const retiredMark = -1 << 40

// drained retires r, removed, if it has no call in flight: it is handed to
// the retire function once, and takes no call after.
func (b *Balancer[In, Out]) drained(r *replica[In, Out]) {
	if !r.inFlight.CompareAndSwap(0, retiredMark) {
		return // a call in flight will call drained as it returns
	}
	if b.log != nil {
		b.log.Info("fanout: replica drained", "replica", r.name, "index", r.index)
	}
	if b.retire != nil {
		b.retire(r.backend)
	}
	b.drains.Done()
}

// WithRetire sets the function a [Balancer] hands a replica that
// [Balancer.SetReplicas] removed, once its last call in flight has
// returned: a transport client's Close, say. It is called on the goroutine
// of that call, or of SetReplicas, once per replica. [Balancer.Close] waits
// for the replicas being drained, and retires them.
//
// Default: none; removed replicas are dropped as they are.
func WithRetire[In, Out any](retire func(Backend[In, Out])) BalancerOption {
	return func(c *balancerConfig) {
		c.retire = func(b any) { retire(b.(Backend[In, Out])) }
	}
}

// Process implements [Backend]: it calls one replica, and others in turn if
// the call fails in a way that is safe to retry.
func (b *Balancer[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	rs := b.list()
	if len(rs) == 0 {
		return nil, b.noReplicas()
	}
	var tried []bool // allocated on the first failure only
	var lastErr error
	failures := 0
	attempts := min(b.cfg.maxAttempts, len(rs))
	for attempt := 0; attempt < attempts; attempt++ {
		r, i := b.pick(rs, tried)
		if r == nil {
			break
		}
		var out []Out
		var err error
		other := -1 // the replica a hedge went to
		if attempt == 0 && b.sketch != nil {
			out, other, err = b.hedge(ctx, rs, r, items)
		} else {
			out, err = b.attempt(ctx, r, items, attempt+1, false)
		}
		if answered(err) {
			return out, err
		}
		if ctx.Err() != nil || !b.retryable(err) {
			return nil, err
		}
		lastErr = err
		failures++
		if tried == nil {
			tried = make([]bool, len(rs))
		}
		tried[i] = true
		if other >= 0 {
			tried[other] = true
			failures++
			attempt++
		}
	}
	switch {
	case lastErr == nil:
		// With no replica in service, probe every ejected one now rather
		// than when its time is up: a replica that is back should not wait
		// out an ejection that was doubled while the others were down too.
		for _, r := range rs {
			b.maybeProbe(r, true)
		}
		return nil, b.allEjected(rs)
	case failures > 1:
		return nil, fmt.Errorf("fanout: call failed on every replica tried (%d): %w", failures, lastErr)
	}
	return nil, lastErr
}

// answered reports whether a call that returned err answered: a partial
// answer is an answer, the replica is up, and the items that failed would
// fail again elsewhere.
func answered(err error) bool { return err == nil || partialOf(err) != nil }

// attempt calls replica r, keeping its count of calls in flight, its
// health and, when hedging, the latency sketch.
// n counts the attempts of the call from 1; hedge is set for a hedge.
func (b *Balancer[In, Out]) attempt(ctx context.Context, r *replica[In, Out], items []In, n int, hedge bool) ([]Out, error) {
	var start time.Time
	if b.sketch != nil {
		start = time.Now()
	}
	if r.inFlight.Add(1) < 0 {
		// Retired since the call picked it (SetReplicas removed it, and
		// its last call returned): it never saw this call.
		r.inFlight.Add(-1)
		return nil, fmt.Errorf("fanout: %w: replica %s was removed", ErrUnavailable, r.label())
	}
	var out []Out
	var err error
	if b.cfg.observer != nil {
		w := newWork(WorkAttempt)
		w.Route, w.Replica, w.Items, w.Attempt, w.Hedge = b.cfg.name, r.work, len(items), n, hedge
		octx := startWork(ctx, b.cfg.observer, w)
		out, err = r.backend.Process(octx, items)
		endWork(octx, b.cfg.observer, w, err)
	} else {
		out, err = r.backend.Process(ctx, items)
	}
	if r.inFlight.Add(-1) == 0 && r.removed.Load() {
		b.drained(r)
	}
	if answered(err) {
		r.succeeded(&b.cfg)
		if b.sketch != nil {
			b.sketch.observe(time.Since(start))
		}
		return out, err
	}
	if ctx.Err() == nil && (errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInterrupted)) {
		b.failed(r, err)
	}
	return out, err
}

// hedge calls replica r and, if r has not answered after the sketch's
// delay, the same items on another replica too (see [WithHedging]). It
// returns the first answer, or the first call's error if neither answered,
// with the index of the replica the hedge went to, or -1 if none was sent.
// It returns once both calls have returned: the loser is cancelled first.
func (b *Balancer[In, Out]) hedge(ctx context.Context, rs []*replica[In, Out], r *replica[In, Out], items []In) ([]Out, int, error) {
	b.hedgeCalls.Add(1)
	b.budget.deposit()
	delay := b.sketch.delay()
	if b.hedgeDelay != 0 {
		delay = b.hedgeDelay
	}
	if delay == 0 || len(rs) < 2 {
		out, err := b.attempt(ctx, r, items, 1, false)
		return out, -1, err
	}
	h := new(hedgeCall[In, Out])
	h.decided.Add(1) // done by the timer's function, if it runs
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	timer := time.AfterFunc(delay, func() {
		other, oi := b.hedgeTo(ctx, rs, r)
		if b.hedgeHook != nil {
			b.hedgeHook(other != nil)
		}
		if other == nil {
			h.other = -1
			h.decided.Done()
			return
		}
		hctx, hcancel := context.WithCancel(ctx)
		h.other, h.cancel = oi, hcancel
		h.done.Add(1)
		h.decided.Done()
		b.hedged.Add(1)
		h.out, h.err = b.attempt(hctx, other, items, 1, true)
		if answered(h.err) && h.winner.CompareAndSwap(0, 2) {
			b.hedgesWon.Add(1)
			pcancel() // the first call loses: cancel it at once
		}
		hcancel()
		h.done.Done()
	})
	start := time.Now()
	out, err := b.attempt(pctx, r, items, 1, false)
	if timer.Stop() {
		return out, -1, err // answered before the delay: no hedge
	}
	h.decided.Wait()
	if h.other < 0 {
		return out, -1, err
	}
	if answered(err) && h.winner.CompareAndSwap(0, 1) {
		h.cancel() // the hedge loses
		h.done.Wait()
		return out, h.other, err
	}
	if h.winner.Load() == 2 && !answered(err) {
		// Cancelled because the hedge won: as slow as that, at least.
		b.sketch.observe(time.Since(start))
	}
	h.done.Wait()
	if answered(h.err) {
		return h.out, h.other, h.err
	}
	return out, h.other, err
}

// hedgeCall is the state that a call and its hedge share. Its fields are
// set by the timer's function before the wait groups say so.
type hedgeCall[In, Out any] struct {
	decided sync.WaitGroup     // done once other and cancel are set
	other   int                // the hedge's replica, or -1 for no hedge
	cancel  context.CancelFunc // the hedge's
	winner  atomic.Int32       // 1: the first call answered first, 2: the hedge did
	done    sync.WaitGroup     // done once the hedge has returned, out and err set
	out     []Out              // the hedge's answer
	err     error
}

// hedgeTo returns the replica a hedge of a call to r on ctx goes to, or
// nil if none should: ctx is done, no other replica is in service, or the
// budget is spent.
func (b *Balancer[In, Out]) hedgeTo(ctx context.Context, rs []*replica[In, Out], r *replica[In, Out]) (*replica[In, Out], int) {
	if ctx.Err() != nil || deadlinePassed(ctx) {
		return nil, -1
	}
	tried := make([]bool, len(rs))
	tried[slices.Index(rs, r)] = true
	other, oi := b.pick(rs, tried)
	if other == nil {
		return nil, -1
	}
	if !b.budget.take() {
		b.overBudget.Add(1)
		return nil, -1
	}
	return other, oi
}

func (b *Balancer[In, Out]) retryable(err error) bool {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOverloaded) {
		return true
	}
	return b.cfg.idempotent && errors.Is(err, ErrInterrupted)
}

// allEjected is the error of a call that found no replica in service.
func (b *Balancer[In, Out]) allEjected(rs []*replica[In, Out]) error {
	var last error
	for _, r := range rs {
		r.mu.Lock()
		if r.lastErr != nil {
			last = r.lastErr
		}
		r.mu.Unlock()
	}
	if last == nil {
		return fmt.Errorf("fanout: %w: %s ejected", ErrUnavailable, every(len(rs)))
	}
	return fmt.Errorf("fanout: %w: %s ejected; last failure: %v", ErrUnavailable, every(len(rs)), last)
}

// every spells "the only replica is", "all 3 replicas are".
func every(n int) string {
	if n == 1 {
		return "the only replica is"
	}
	return fmt.Sprintf("all %d replicas are", n)
}

// pick returns the less loaded of two replicas in service chosen at random,
// skipping those already tried, or nil if there is none.
func (b *Balancer[In, Out]) pick(rs []*replica[In, Out], tried []bool) (*replica[In, Out], int) {
	n := len(rs)
	if n == 1 {
		return b.next(rs, 0, tried)
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, ai := b.next(rs, i, tried)
	if a == nil {
		return nil, -1
	}
	c, ci := b.next(rs, j, tried)
	if c != nil && c.inFlight.Load() < a.inFlight.Load() {
		return c, ci
	}
	return a, ai
}

// next returns the first replica in service from index i on, wrapping
// around. It starts the probe of an ejected replica whose time is up.
func (b *Balancer[In, Out]) next(rs []*replica[In, Out], i int, tried []bool) (*replica[In, Out], int) {
	n := len(rs)
	for k := range n {
		idx := (i + k) % n
		if tried != nil && tried[idx] {
			continue
		}
		r := rs[idx]
		switch r.state.Load() {
		case inService:
			return r, idx
		case ejected:
			b.maybeProbe(r, false)
		}
	}
	return nil, -1
}

// maybeProbe starts a probe of r if it is ejected, no probe is running, and
// its ejection time is up or now is true.
func (b *Balancer[In, Out]) maybeProbe(r *replica[In, Out], now bool) {
	b.startProbe(r, now, nil)
}

// startProbe is maybeProbe, and marks the probe it starts, if it does, on
// first: done once the probe's outcome is recorded.
func (b *Balancer[In, Out]) startProbe(r *replica[In, Out], now bool, first *sync.WaitGroup) {
	r.mu.Lock()
	timeUp := time.Now().After(r.ejectedUntil)
	r.mu.Unlock()
	if !(now || timeUp) || b.ctx.Err() != nil || r.removed.Load() || !r.state.CompareAndSwap(ejected, probing) {
		return
	}
	b.runProbe(r, timeUp, first)
}

// runProbe probes r, whose state is probing, on a goroutine of its own,
// and records the outcome; see startProbe.
func (b *Balancer[In, Out]) runProbe(r *replica[In, Out], timeUp bool, first *sync.WaitGroup) {
	b.probes.Add(1)
	if first != nil {
		first.Add(1)
	}
	go func() {
		defer b.probes.Done()
		if first != nil {
			defer first.Done()
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.probeTimeout)
		err := b.probe(ctx, r.backend)
		cancel()
		var ev replicaEvent
		r.mu.Lock()
		switch {
		case err != nil && !timeUp:
			// A probe a call started before the ejection was up: the
			// replica stays out for the rest of that ejection, which does
			// not count again. (Calls made while every replica is out start
			// one each: counting them would take the ejection to its
			// longest within a moment of an outage.)
			r.lastErr = err
			r.state.Store(ejected)
		case err != nil:
			r.lastErr = err
			d := r.ejectLocked(&b.cfg)
			if b.ctx.Err() == nil {
				ev = replicaEvent{kind: probeFailed, ejections: r.ejections, ejectedFor: d, err: err}
			}
		default:
			r.failures = 0
			r.readmitted = time.Now()
			r.state.Store(inService)
			ev = replicaEvent{kind: readmitted, down: r.readmitted.Sub(r.ejectedAt)}
			if r.joining {
				r.joining, ev.kind = false, joined
			}
		}
		r.mu.Unlock()
		b.logEvent(r, ev)
	}()
}

// Check probes every replica in service at once, all of them in parallel,
// as an ejected replica is probed ([WithProbe], [WithProbeTimeout]), and
// ejects each one whose probe fails, as if its calls had failed
// [WithEjection]'s count of times in a row. It returns the probes'
// failures joined, each naming its replica, or nil if every replica
// answered. If ctx ends or the balancer is closed first, it returns ctx's
// error and ejects no replica whose probe that ended.
//
// A program may call it once at start, so that a replica that cannot be
// reached then takes no calls until a probe shows it is back, and so that
// its logger says which replica it is (see [WithBalancerLogger]). Calls
// may be made meanwhile: a replica takes calls until its probe fails.
func (b *Balancer[In, Out]) Check(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	rs := b.list()
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		if r.state.Load() != inService {
			continue
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, b.cfg.probeTimeout)
			err := b.probe(pctx, r.backend)
			cancel()
			if err == nil || ctx.Err() != nil {
				return
			}
			errs[i] = fmt.Errorf("replica %s: %w", r.label(), err)
			var ev replicaEvent
			r.mu.Lock()
			r.troubled.Store(true)
			r.lastErr = err
			if r.state.Load() == inService {
				r.ejectedAt = time.Now()
				d := r.ejectLocked(&b.cfg)
				ev = replicaEvent{kind: checkFailed, ejections: r.ejections, ejectedFor: d, err: err}
			}
			r.mu.Unlock()
			b.logEvent(r, ev)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// label names r in an error: its name and index, or its index.
func (r *replica[In, Out]) label() string {
	if r.name == "" {
		return strconv.Itoa(r.index)
	}
	return fmt.Sprintf("%d (%s)", r.index, r.name)
}

func (r *replica[In, Out]) succeeded(cfg *balancerConfig) {
	if !r.troubled.Load() {
		return // the common case takes no lock
	}
	r.mu.Lock()
	r.failures = 0
	if r.ejections > 0 && time.Since(r.readmitted) >= cfg.baseEjection {
		r.ejections = 0
	}
	r.troubled.Store(r.ejections > 0)
	r.mu.Unlock()
}

// failed counts a failure of a call to r against its health, and ejects r
// once the failures in a row are enough.
func (b *Balancer[In, Out]) failed(r *replica[In, Out], err error) {
	var ev replicaEvent
	r.mu.Lock()
	r.failures++
	r.troubled.Store(true)
	r.lastErr = err
	if r.failures >= b.cfg.failures && r.state.Load() == inService {
		failures := r.failures
		r.ejectedAt = time.Now()
		d := r.ejectLocked(&b.cfg)
		ev = replicaEvent{kind: ejectedByCalls, failures: failures, ejections: r.ejections, ejectedFor: d, err: err}
	}
	r.mu.Unlock()
	b.logEvent(r, ev)
}

// ejectLocked takes r out of service for a time that doubles with each
// ejection in a row, and returns that time.
func (r *replica[In, Out]) ejectLocked(cfg *balancerConfig) time.Duration {
	d := cfg.baseEjection << min(r.ejections, 30)
	if d > cfg.maxEjection || d <= 0 {
		d = cfg.maxEjection
	}
	r.ejections++
	r.failures = 0
	r.ejectedUntil = time.Now().Add(d)
	r.state.Store(ejected)
	return d
}

// A replicaEvent is a change of a replica's state, noted under its lock
// and logged once the lock is released.
type replicaEvent struct {
	kind       eventKind
	failures   int           // ejectedByCalls: the failures in a row
	ejections  int           // ejections in a row, this one included
	ejectedFor time.Duration // how long it is ejected for
	down       time.Duration // readmitted: how long it was out of service
	err        error         // the cause
}

type eventKind uint8

const (
	noEvent        eventKind = iota
	ejectedByCalls           // its calls failed too many times in a row
	checkFailed              // Check's probe failed
	joined                   // a replica SetReplicas added passed its first probe
	probeFailed              // a probe due since its ejection time was up failed
	readmitted               // a probe succeeded
)

// logEvent logs ev, if the balancer has a logger and ev is an event; see
// [WithBalancerLogger].
func (b *Balancer[In, Out]) logEvent(r *replica[In, Out], ev replicaEvent) {
	if b.log == nil || ev.kind == noEvent {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	if r.name != "" {
		attrs = append(attrs, slog.String("replica", r.name))
	}
	attrs = append(attrs, slog.Int("index", r.index))
	level, msg := slog.LevelWarn, "fanout: replica ejected"
	switch ev.kind {
	case ejectedByCalls:
		attrs = append(attrs, slog.Int("failures", ev.failures))
	case checkFailed:
		msg = "fanout: replica failed its check; ejected"
	case probeFailed:
		level, msg = slog.LevelInfo, "fanout: replica failed its probe; still ejected"
	case readmitted:
		level, msg = slog.LevelInfo, "fanout: replica readmitted"
		attrs = append(attrs, slog.Duration("down", ev.down))
	case joined:
		level, msg = slog.LevelInfo, "fanout: replica joined"
	}
	if ev.kind != readmitted && ev.kind != joined {
		attrs = append(attrs, slog.Duration("ejected_for", ev.ejectedFor), slog.Int("ejections", ev.ejections))
	}
	in := 0
	for _, r := range b.list() {
		if r.state.Load() == inService {
			in++
		}
	}
	attrs = append(attrs, slog.Int("in_service", in))
	if ev.err != nil {
		attrs = append(attrs, slog.Any("err", ev.err))
	}
	b.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// Close stops probes and waits for those in flight, and for the replicas
// that [Balancer.SetReplicas] removed to drain and retire. It does not close the
// replicas. Calls after Close still work, but ejected replicas are no longer
// probed. Close is idempotent and always returns nil.
func (b *Balancer[In, Out]) Close() error {
	b.cancel()
	b.probes.Wait()
	b.drains.Wait()
	return nil
}
