package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Router is a content-based scatter-gather [Backend].
//
// For each call it classifies every item, groups the items by route while
// remembering their positions, calls the backend of every route that received
// items concurrently, and writes each answer back to the position of the item
// it answers. A *Router is itself a Backend, so routers nest and a router can
// be served over the network like any other backend.
//
// A Router is immutable once built and safe for concurrent use.
type Router[In, Out any] struct {
	classifier Classifier[In]
	names      []string // sorted route names
	backends   []Backend[In, Out]
	index      map[string]int
	partial    bool
	margin     float64       // see WithDeadlineMargin; 0 for none
	maxMargin  time.Duration // the most margin
	fallback   []int         // route k's fallback route, or -1
	observer   Observer      // nil: none
	scratch    sync.Pool     // of *scratch[In]: a call's working slices
	workers    workers       // the goroutines that call routes

	// Alternatives to classify and runAll that benchmarks measure them
	// against (export_test.go); nil in every router NewRouter returns.
	classifyAll func(r *Router[In, Out], items []In, routeOf []int32, routes []int, bounds []int) (int, error)
	fanOut      func(c *routeCalls[In, Out], ctx context.Context, bounds []int)
}

// scratch holds the working slices of a call, reused by later calls: fresh
// memory for a large batch costs more to zero and fault in than the work
// done with it.
type scratch[In any] struct {
	routeOf []int32 // the route of each item
	grouped []In    // the items, grouped by route
	pos     []int   // where each grouped item came from
}

// getScratch returns working slices with room for n items; routeOf has
// length n, the others are empty until a call needs them.
func (r *Router[In, Out]) getScratch(n int) *scratch[In] {
	sc, _ := r.scratch.Get().(*scratch[In])
	if sc == nil {
		sc = new(scratch[In])
	}
	sc.routeOf = slices.Grow(sc.routeOf[:0], n)[:n]
	return sc
}

// group sizes the slices that group n items by route.
func (sc *scratch[In]) group(n int) {
	sc.grouped = slices.Grow(sc.grouped[:0], n)[:n]
	sc.pos = slices.Grow(sc.pos[:0], n)[:n]
}

// putScratch keeps sc for a later call, holding no item.
func (r *Router[In, Out]) putScratch(sc *scratch[In]) {
	clear(sc.grouped)
	sc.grouped = sc.grouped[:0]
	r.scratch.Put(sc)
}

var _ Backend[int, int] = (*Router[int, int])(nil)

// NewRouter returns a router that sends each item to the backend of the route
// its classifier chooses. routes maps route names to backends; it is copied,
// so later changes to the map do not affect the router.
//
// NewRouter fails if classifier is nil, routes is empty, a route name is
// empty, a backend is nil, or an option is bad (see each option).
func NewRouter[In, Out any](classifier Classifier[In], routes map[string]Backend[In, Out], opts ...RouterOption) (*Router[In, Out], error) {
	if f, ok := classifier.(ClassifierFunc[In]); classifier == nil || ok && f == nil {
		return nil, errors.New("fanout: NewRouter: nil classifier")
	}
	if len(routes) == 0 {
		return nil, errors.New("fanout: NewRouter: no routes")
	}
	cfg := routerConfig{margin: DefaultDeadlineMargin, maxMargin: DefaultMaxDeadlineMargin}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.optionError != nil {
		return nil, fmt.Errorf("fanout: NewRouter: %w", cfg.optionError)
	}
	r := &Router[In, Out]{
		classifier: classifier,
		index:      make(map[string]int, len(routes)),
		partial:    cfg.partial,
		margin:     cfg.margin,
		maxMargin:  cfg.maxMargin,
		observer:   cfg.observer,
	}
	if r.maxMargin == 0 {
		r.margin = 0
	}
	for name := range routes {
		r.names = append(r.names, name)
	}
	slices.Sort(r.names)
	for i, name := range r.names {
		if name == "" {
			return nil, errors.New("fanout: NewRouter: empty route name")
		}
		b := routes[name]
		if isNil(b) {
			return nil, fmt.Errorf("fanout: NewRouter: route %q: nil backend", name)
		}
		r.backends = append(r.backends, b)
		r.index[name] = i
	}
	if err := r.setFallbacks(cfg.fallbacks); err != nil {
		return nil, fmt.Errorf("fanout: NewRouter: %w", err)
	}
	return r, nil
}

// setFallbacks records the fallback routes of [WithFailover].
func (r *Router[In, Out]) setFallbacks(fallbacks map[string]string) error {
	if len(fallbacks) == 0 {
		return nil
	}
	r.fallback = make([]int, len(r.names))
	for k := range r.fallback {
		r.fallback[k] = -1
	}
	for route, fallback := range fallbacks {
		k, ok := r.index[route]
		if !ok {
			return fmt.Errorf("WithFailover: %q is not a route", route)
		}
		fb, ok := r.index[fallback]
		switch {
		case !ok:
			return fmt.Errorf("WithFailover: fallback %q of route %q is not a route", fallback, route)
		case fb == k:
			return fmt.Errorf("WithFailover: route %q is its own fallback", route)
		}
		if _, chained := fallbacks[fallback]; chained {
			return fmt.Errorf("WithFailover: fallback %q of route %q has a fallback of its own", fallback, route)
		}
		r.fallback[k] = fb
	}
	return nil
}

// Routes returns the router's route names in sorted order.
func (r *Router[In, Out]) Routes() []string {
	return slices.Clone(r.names)
}

// Process implements [Backend]. It returns one result per item in the order
// of items, or an error: an [*ItemError] if an item could not be classified
// or has no route, a [*RouteError] if a route's backend failed or answered
// the wrong number of results, a [*PartialError] under [WithPartialResults],
// or ctx's error if ctx was already done. An empty batch returns an empty
// result without calling any backend.
func (r *Router[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	if r.observer != nil {
		return r.observe(ctx, items, nil)
	}
	return r.process(ctx, items, nil)
}

// observe is process told to the router's observer as a [WorkCall].
func (r *Router[In, Out]) observe(ctx context.Context, items []In, routes []int) ([]Out, error) {
	w := newWork(WorkCall)
	w.Items = len(items)
	ctx = startWork(ctx, r.observer, w)
	out, err := r.process(ctx, items, routes)
	endWork(ctx, r.observer, w, err)
	return out, err
}

// ProcessRoutes is [Router.Process] that also reports the route each item
// took: it sets routes[i] to the index, in [Router.Routes], of the route of
// items[i]. It panics if len(routes) != len(items).
//
// The routes are reported whenever every item was classified: when the
// error is nil, a [*RouteError] or a [*PartialError] (the items of the
// failed routes included). After an [*ItemError] or ctx's error, the
// contents of routes are unspecified. ProcessRoutes allocates nothing for
// the report and keeps no reference to routes once it returns.
func (r *Router[In, Out]) ProcessRoutes(ctx context.Context, items []In, routes []int) ([]Out, error) {
	if len(routes) != len(items) {
		panic(fmt.Sprintf("fanout: Router.ProcessRoutes: %d routes for %d items", len(routes), len(items)))
	}
	if r.observer != nil {
		return r.observe(ctx, items, routes)
	}
	return r.process(ctx, items, routes)
}

// process is Process, reporting the items' routes in routes unless it is
// nil.
func (r *Router[In, Out]) process(ctx context.Context, items []In, routes []int) ([]Out, error) {
	if len(items) == 0 {
		return []Out{}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	sc := r.getScratch(len(items))
	defer r.putScratch(sc)
	routeOf := sc.routeOf
	bounds := make([]int, len(r.backends)+1)
	used, err := r.classify(items, routeOf, routes, bounds)
	if err != nil {
		return nil, err
	}

	if used == 1 {
		// Every item belongs to one route: hand the batch over as it is.
		k := int(routeOf[0])
		rctx, cancel, margin := r.routesDeadline(ctx)
		out, pe, err, by := r.callRoute(rctx, ctx, margin, k, items)
		if cancel != nil {
			cancel()
		}
		if by != k && routes != nil {
			for i := range routes {
				routes[i] = by
			}
		}
		if pe != nil {
			pe = r.translate(pe, by, nil)
			if !r.partial {
				return nil, pe.first()
			}
			zero(pe, out)
			return out, pe
		}
		if err != nil {
			err.Indices = make([]int, len(items))
			for i := range err.Indices {
				err.Indices[i] = i
			}
			if r.partial {
				return nil, &PartialError{Failed: []*RouteError{err}}
			}
			return nil, err
		}
		return out, nil
	}

	// Counting sort: after the prefix sums bounds[k] is where route k's items
	// end (the last entry is len(items)); filling from the back moves it to
	// where they start, keeping their order. Route k's items then occupy
	// grouped[bounds[k]:bounds[k+1]], and pos records where each came from.
	for k := 1; k < len(bounds); k++ {
		bounds[k] += bounds[k-1]
	}
	sc.group(len(items))
	grouped, pos := sc.grouped, sc.pos
	for i := len(items) - 1; i >= 0; i-- {
		k := routeOf[i]
		bounds[k]--
		grouped[bounds[k]] = items[i]
		pos[bounds[k]] = i
	}

	c := &routeCalls[In, Out]{r: r, grouped: grouped, pos: pos, out: make([]Out, len(items)), routes: routes}
	if r.partial {
		c.outcomes = make([]routeOutcome, len(r.backends))
	}
	if r.fanOut != nil {
		r.fanOut(c, ctx, bounds)
	} else {
		c.runAll(ctx, bounds)
	}
	out, first := c.out, c.first.Load()
	switch {
	case !r.partial && first != nil:
		return nil, first // the first failure, the one that cancelled the others
	case !r.partial:
		return out, nil
	}
	return c.partialAnswer(used)
}

// partialAnswer gathers, under partial results, the failures of the routes
// of a call into its error: nil if every route answered every item.
func (c *routeCalls[In, Out]) partialAnswer(used int) ([]Out, error) {
	whole, partial := 0, 0 // routes that failed as a whole, and in part
	for _, o := range c.outcomes {
		switch {
		case o.failed != nil:
			whole++
		case o.partial != nil:
			partial++
		}
	}
	if whole == 0 && partial == 0 {
		return c.out, nil
	}
	pe := new(PartialError)
	for _, o := range c.outcomes {
		if o.failed != nil {
			pe.Failed = append(pe.Failed, o.failed)
		}
		if o.partial != nil {
			pe.Failed = append(pe.Failed, o.partial.Failed...)
			pe.Items = append(pe.Items, o.partial.Items...)
		}
	}
	if whole == used {
		return nil, pe
	}
	slices.SortFunc(pe.Items, func(a, b *ItemError) int { return a.Index - b.Index })
	zero(pe, c.out)
	return c.out, pe
}

// classify sets routeOf[i], and routes[i] unless routes is nil, to the
// route of items[i], counts the items of route k in bounds[k], and returns
// the number of routes that received items.
func (r *Router[In, Out]) classify(items []In, routeOf []int32, routes []int, bounds []int) (used int, err error) {
	if r.classifyAll != nil {
		return r.classifyAll(r, items, routeOf, routes, bounds)
	}
	var guesses routeGuesses
	for i := range items {
		name, err := r.classifier.Classify(items[i])
		if err != nil {
			return 0, &ItemError{Index: i, Err: err, classify: true}
		}
		slot := guessSlot(name)
		k := int(guesses[slot])
		if name != r.names[k] {
			var ok bool
			if k, ok = r.index[name]; !ok {
				return 0, &ItemError{Index: i, Route: name, Err: ErrNoRoute}
			}
			guesses[slot] = uint8(k) // wrong for k > 255: then only a guess that fails
		}
		routeOf[i] = int32(k)
		if routes != nil {
			routes[i] = k
		}
		if bounds[k] == 0 {
			used++
		}
		bounds[k]++
	}
	return used, nil
}

// routeCalls is the state that the routes of one call share.
type routeCalls[In, Out any] struct {
	r        *Router[In, Out]
	parent   context.Context    // the caller's
	ctx      context.Context    // the routes'
	cancel   context.CancelFunc // called by the first route that fails
	margin   time.Duration      // how much earlier ctx's deadline is than parent's
	routes   []int              // ProcessRoutes's report, or nil
	grouped  []In               // route k's items are grouped[lo:hi]
	pos      []int              // pos[j] is the index in the call of grouped[j]
	out      []Out
	outcomes []routeOutcome // with partial results, each route's failures
	first    atomic.Pointer[RouteError]
	wg       sync.WaitGroup
}

// routeOutcome is how a route of a call under partial results failed: as
// a whole, or in some of its items; both nil if it answered every item.
type routeOutcome struct {
	failed  *RouteError
	partial *PartialError // translated to the call's indices and paths
}

// run calls route k with its items, grouped[lo:hi], and writes its results
// back by index, or records its failure.
func (c *routeCalls[In, Out]) run(k, lo, hi int) {
	res, pe, err, by := c.r.callRoute(c.ctx, c.parent, c.margin, k, c.grouped[lo:hi:hi])
	if by != k && c.routes != nil {
		for _, i := range c.pos[lo:hi] {
			c.routes[i] = by
		}
	}
	if pe != nil {
		pe = c.r.translate(pe, by, c.pos[lo:hi])
		if c.outcomes == nil {
			// Without partial results, a failed item fails the call.
			if re := pe.first(); c.first.CompareAndSwap(nil, re) {
				c.cancel()
			}
			return
		}
		c.outcomes[k].partial = pe
	}
	if err != nil {
		err.Indices = slices.Clone(c.pos[lo:hi])
		if c.outcomes != nil {
			c.outcomes[k].failed = err
		}
		if c.first.CompareAndSwap(nil, err) {
			c.cancel()
		}
		return
	}
	for j, v := range res {
		c.out[c.pos[lo+j]] = v
	}
}

// runAll runs every route that received items, route k's being
// grouped[bounds[k]:bounds[k+1]], on a context derived from ctx, and
// returns once they have all returned. Every route but the last runs on a
// worker goroutine, which the router keeps for later calls (see workers);
// the last runs on the caller's, which saves handing it over and waking a
// thread to run it.
func (c *routeCalls[In, Out]) runAll(ctx context.Context, bounds []int) {
	c.parent = ctx
	var release context.CancelFunc
	c.ctx, c.cancel, release, c.margin = c.r.routesContext(ctx)
	defer release()
	last := len(bounds) - 2
	for bounds[last] == bounds[last+1] {
		last--
	}
	for k := range last {
		if lo, hi := bounds[k], bounds[k+1]; lo < hi {
			c.wg.Add(1)
			c.r.workers.run(func() {
				defer c.wg.Done()
				c.run(k, lo, hi)
			})
		}
	}
	c.run(last, bounds[last], bounds[last+1])
	c.wg.Wait() // run records failures in first and outcomes
}

// routesContext returns the context a call's routes run on, the function
// that the first failing route calls, the function that releases the
// context once the routes have returned, and the deadline margin (see
// routesDeadline). Without partial results the first failure cancels the
// other routes; with them every route runs to completion, or to the
// routes' deadline.
func (r *Router[In, Out]) routesContext(ctx context.Context) (_ context.Context, failed, release context.CancelFunc, _ time.Duration) {
	rctx, cancel, margin := r.routesDeadline(ctx)
	switch {
	case cancel == nil && r.partial:
		return ctx, func() {}, func() {}, 0
	case cancel == nil:
		rctx, cancel = context.WithCancel(ctx)
	case r.partial:
		return rctx, func() {}, cancel, margin
	}
	return rctx, cancel, cancel, margin
}

// routesDeadline returns, if ctx has a deadline and the router a deadline
// margin, a context whose deadline is the margin earlier, with its cancel
// function and the margin (see [WithDeadlineMargin]); otherwise ctx, nil
// and 0.
func (r *Router[In, Out]) routesDeadline(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	if r.margin == 0 {
		return ctx, nil, 0
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		return ctx, nil, 0
	}
	margin := marginFor(r.margin, r.maxMargin, time.Until(deadline))
	if margin == 0 {
		return ctx, nil, 0
	}
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(-margin))
	return rctx, cancel, margin
}

// callRoute calls route k with items on ctx, the routes' context of a call
// whose caller's context is parent, and returns what [Router.call] does
// and the route that answered: k, or its fallback if k was unavailable
// (see [WithFailover]). A route that failed because ctx's deadline, margin
// earlier than parent's, passed says so in its error.
func (r *Router[In, Out]) callRoute(ctx, parent context.Context, margin time.Duration, k int, items []In) ([]Out, *PartialError, *RouteError, int) {
	res, pe, err := r.call(ctx, k, items)
	if err != nil && r.fallback != nil && r.fallback[k] >= 0 && errors.Is(err.Err, ErrUnavailable) {
		fb := r.fallback[k]
		fres, fpe, ferr := r.call(ctx, fb, items)
		if ferr == nil {
			return fres, fpe, nil, fb
		}
		err = &RouteError{Route: r.names[k], Err: &failoverError{route: err.Err, fallback: r.names[fb], err: ferr.Err}}
	}
	if err != nil && margin > 0 && parent.Err() == nil && deadlinePassed(ctx) {
		err.Err = fmt.Errorf("%w (the route's deadline passed, %v before the call's)", err.Err, roundMargin(margin))
	}
	return res, pe, err, k
}

// deadlinePassed reports whether ctx's deadline has passed: by its error,
// or by the clock, since its timer may fire after a backend that counts
// the same deadline has answered that it passed.
func deadlinePassed(ctx context.Context) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Before(deadline)
}

// roundMargin rounds a margin for an error message: to the millisecond from
// 10ms on, else to the microsecond.
func roundMargin(m time.Duration) time.Duration {
	if m >= 10*time.Millisecond {
		return m.Round(time.Millisecond)
	}
	return m.Round(time.Microsecond)
}

// failoverError is the error of a route that was unavailable and whose
// fallback failed too. It wraps both.
type failoverError struct {
	route    error  // the route's
	fallback string // the fallback route's name
	err      error  // the fallback's
}

func (e *failoverError) Error() string {
	return fmt.Sprintf("%v; its fallback route %q failed too: %v", e.route, e.fallback, e.err)
}

func (e *failoverError) Unwrap() []error { return []error{e.route, e.err} }

// routeGuesses remembers, during a call, the route of the names the
// classifier returned, by a hash of the name (see guessSlot). A guess is
// only a guess: it is used once the name has been compared with the
// route's, so a collision costs a lookup and never a wrong route.
//
// Items of different routes usually arrive mixed. Finding each item's route
// by comparing its name with the routes' in turn mispredicts a branch for a
// large share of the items, and that cost as much as classifying them; a
// guess that is right compares one name, a branch that is always taken.
type routeGuesses [64]uint8

// guessSlot hashes a route name to its slot in [routeGuesses]: from its
// length and its first and last bytes, which tell apart the short names
// routes usually have.
func guessSlot(name string) int {
	if len(name) == 0 {
		return 0
	}
	return (len(name)*37 + int(name[0])*7 + int(name[len(name)-1])) & (len(routeGuesses{}) - 1)
}

// call invokes route k's backend and checks its answer: its length, and
// the failures it lists if it answered in part, which it returns in pe
// (with res nil if no item was answered). The returned error's Indices are
// left for the caller to fill.
func (r *Router[In, Out]) call(ctx context.Context, k int, items []In) (res []Out, pe *PartialError, _ *RouteError) {
	var err error
	if r.observer != nil {
		w := newWork(WorkRoute)
		w.Route, w.Items = r.names[k], len(items)
		octx := startWork(ctx, r.observer, w)
		res, err = r.backends[k].Process(octx, items)
		endWork(octx, r.observer, w, err)
	} else {
		res, err = r.backends[k].Process(ctx, items)
	}
	if pe = partialOf(err); pe != nil {
		if err = pe.check(len(items), res != nil); err == nil && res != nil && len(res) != len(items) {
			err = fmt.Errorf("%w: %d results for %d items", ErrResultCount, len(res), len(items))
		}
		if err == nil {
			return res, pe, nil
		}
	} else if err == nil && len(res) != len(items) {
		err = fmt.Errorf("%w: %d results for %d items", ErrResultCount, len(res), len(items))
	}
	if err != nil {
		return nil, nil, &RouteError{Route: r.names[k], Err: err}
	}
	return res, nil, nil
}

// translate returns the failures a backend listed in pe as route k's in
// the router's call: each index j becomes pos[j] (j itself if pos is nil)
// and each route the path from route k down (see [ItemError.Route]).
func (r *Router[In, Out]) translate(pe *PartialError, k int, pos []int) *PartialError {
	at := func(j int) (int, bool) {
		if pos == nil {
			return j, true
		}
		return pos[j], true
	}
	path := func(route string) string {
		if route == "" {
			return r.names[k]
		}
		return r.names[k] + "/" + route
	}
	return pe.remap(nil, at, path)
}
