package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Batcher is a [Backend] that merges concurrent small calls into fewer large
// calls to its backend, and splits a large call into several pipelined
// chunks, so that round trips are saved under load and transfer and compute
// overlap for big batches. It is safe for concurrent use.
//
// Each call's items join a queue, oldest first. Whenever fewer than
// [WithConcurrency] calls to the backend are in flight, the batcher takes up
// to [WithMaxBatch] items from the front of the queue, whoever they belong
// to, and sends them in one call (a dispatch). A dispatch may thus carry the
// items of several callers (merge), or a part of one caller's items (split).
// Each caller gets exactly its own answers, in its own order, and returns
// once all of its items are answered.
//
// Latency: there is no timer. A call that finds the queue empty and a slot
// free goes to the backend at once, as it is, on the caller's goroutine and
// context, so at low load a Batcher adds no waiting and no hand-off.
// Merging happens only because calls arrive while every slot is busy; such a
// call waits for a slot, behind the items queued before it.
//
// Contexts: a call sent at once runs on its caller's context. A dispatch
// formed from the queue does not run on any one caller's context: it carries
// the values of the first caller in it, and the latest deadline of the
// callers in it, or no deadline if one of them has none. It is cancelled once
// every caller it carries has given up. A caller whose context ends returns
// its error at once; its items not yet dispatched are dropped from the
// queue, and the dispatches carrying its other items go on for the other
// callers in them. A dispatch whose callers have all given up may outlive
// them until the backend returns, which it does promptly as its context is
// cancelled.
//
// Errors: one caller's items never fail another caller's call. If a
// dispatch that carries the items of several callers fails with the
// backend's own error (one that may come from the items: not
// [ErrUnavailable], [ErrOverloaded], [ErrInterrupted], [ErrResultCount] or
// a context's end), each caller's share is sent again on its own, on that
// caller's context, and each caller gets the outcome of its own items. Any
// other failure of a dispatch reaches every caller with items in it,
// unchanged (so [errors.Is] finds the sentinel), and the results of its
// other dispatches are discarded; so does the failure of a dispatch that
// carries one caller's items. A split call whose part fails with
// [ErrUnavailable] or [ErrOverloaded] after another part was sent fails
// with [ErrInterrupted] instead, since sending it again would process that
// other part twice. A backend that answers the wrong number of
// results fails every caller in the dispatch with an error wrapping
// [ErrResultCount]. An empty batch bypasses the queue: it goes
// straight to the backend on the caller's context, as a probe should.
//
// A Batcher belongs in front of a leaf backend — a transport client, a
// [Balancer] — typically as a route's backend in a [Router], behind a
// [Limiter] that bounds its callers and so its queue:
// Limiter(Batcher(Balancer(clients...))). A dispatch that the backend
// answers in part (a [*PartialError]) is split between its callers: each
// caller gets the answers to its own items and a *PartialError that lists
// only the failures of its items, with its own indices; a caller none of
// whose items failed gets no error. If a Limiter sits under it instead, keep the batcher's concurrency
// within the limiter's bound, or dispatches will be refused with
// [ErrOverloaded].
//
// Cost: a call sent at once, on its caller's goroutine, costs nothing more
// than the backend's call. A queued call costs a few fixed allocations (its
// results slice among them), and each dispatch a goroutine (unless it
// follows another on the same one), its context and the backend's results.
// Items are copied once, into a pooled buffer, when a dispatch is formed;
// nothing is allocated per item.
type Batcher[In, Out any] struct {
	backend     Backend[In, Out]
	maxBatch    int
	concurrency int
	observer    Observer  // nil: none
	pool        sync.Pool // of *dispatch[In, Out], with their buffers

	mu       sync.Mutex
	queue    []*batchCall[In, Out] // from head on: calls with items not yet dispatched, oldest first
	head     int
	queued   int // items in the queue, of calls still waiting
	inFlight int // dispatches in flight
}

var _ Backend[int, int] = (*Batcher[int, int])(nil)

// batchCall is one caller's call. Fields other than ctx, out, deadline and
// done are guarded by the batcher's mu.
type batchCall[In, Out any] struct {
	ctx         context.Context
	deadline    time.Time
	hasDeadline bool
	items       []In  // the caller's slice; nil once the call is finished
	total       int   // len(items)
	next        int   // items[:next] have been dispatched
	left        int   // items not yet answered
	out         []Out // written, outside mu, by dispatches at disjoint offsets
	carriers    []*dispatch[In, Out]
	carrierBuf  [2]*dispatch[In, Out] // backs carriers: no allocation for one or two
	finished    bool
	partial     *PartialError // the failed items of the call, if any
	err         error
	done        chan struct{} // closed when finished
}

// dispatch is one call to the backend. Its fields are set when it is formed,
// under mu, and then only read, except live, which is guarded by mu.
type dispatch[In, Out any] struct {
	items  []In
	pieces []batchPiece[In, Out] // in the order of items
	live   int                   // callers in pieces that have not given up
	ctx    context.Context
	cancel context.CancelFunc
}

// batchPiece is the part of a call carried by a dispatch: call.items[off:off+n].
type batchPiece[In, Out any] struct {
	call   *batchCall[In, Out]
	off, n int
}

// BatcherOption configures a [Batcher]. No options means the documented
// default of every option.
type BatcherOption func(*batcherConfig)

type batcherConfig struct {
	maxBatch    int
	concurrency int
	observer    Observer
}

// WithBatcherObserver has a [Batcher] tell o about every call of its
// backend ([WorkMerge]), with the number of callers whose items it
// carries; see [Observer]. A call sent alone (nothing was waiting to be
// merged with it) runs on its caller's context, and its observer sees the
// caller's trace; a merged call runs on a context of its own, under no
// caller's trace.
//
// Default: none, and then nothing is measured.
func WithBatcherObserver(o Observer) BatcherOption {
	return func(c *batcherConfig) { c.observer = o }
}

// WithMaxBatch bounds the items sent to the backend in one call. A call
// with more items is split into chunks of this size, sent in parallel up to
// [WithConcurrency]. It must be at least 1.
//
// Default: 65,536 items (PERFORMANCE.md, section 4: smaller batches cost
// round trips on large calls, larger ones gained nothing measurable).
func WithMaxBatch(items int) BatcherOption {
	return func(c *batcherConfig) { c.maxBatch = items }
}

// WithConcurrency bounds the calls to the backend in flight at once. Calls
// that arrive while all are busy wait in a queue and are merged. It must be
// at least 1.
//
// Default: 4 calls.
func WithConcurrency(calls int) BatcherOption {
	return func(c *batcherConfig) { c.concurrency = calls }
}

// NewBatcher returns a batcher in front of b. It fails if b is nil or an
// option's value is not positive.
func NewBatcher[In, Out any](b Backend[In, Out], opts ...BatcherOption) (*Batcher[In, Out], error) {
	if isNil(b) {
		return nil, errors.New("fanout: NewBatcher: nil backend")
	}
	cfg := batcherConfig{maxBatch: 65536, concurrency: 4}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.maxBatch <= 0 {
		return nil, fmt.Errorf("fanout: NewBatcher: WithMaxBatch(%d): want at least 1 item per call", cfg.maxBatch)
	}
	if cfg.concurrency <= 0 {
		return nil, fmt.Errorf("fanout: NewBatcher: WithConcurrency(%d): want at least 1 call in flight", cfg.concurrency)
	}
	bt := &Batcher[In, Out]{backend: b, maxBatch: cfg.maxBatch, concurrency: cfg.concurrency, observer: cfg.observer}
	bt.pool.New = func() any { return new(dispatch[In, Out]) }
	return bt, nil
}

// Process implements [Backend]: it queues items, waits until they are all
// answered or ctx ends, and returns the answers in the order of items.
func (b *Batcher[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	if len(items) == 0 {
		return b.backend.Process(ctx, items)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.queued == 0 && b.inFlight < b.concurrency && len(items) <= b.maxBatch {
		// Nothing to merge with: the call goes as it is, on this goroutine.
		b.inFlight++
		b.mu.Unlock()
		return b.direct(ctx, items)
	}
	b.mu.Unlock()
	c := &batchCall[In, Out]{
		ctx:   ctx,
		items: items,
		total: len(items),
		left:  len(items),
		out:   make([]Out, len(items)),
		done:  make(chan struct{}),
	}
	c.deadline, c.hasDeadline = ctx.Deadline()
	c.carriers = c.carrierBuf[:0]

	b.mu.Lock()
	b.enqueueLocked(c)
	for b.inFlight < b.concurrency {
		d := b.formLocked()
		if d == nil {
			break
		}
		b.inFlight++
		go b.run(d)
	}
	b.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
		b.mu.Lock()
		if !c.finished {
			b.finishLocked(c, ctx.Err())
		}
		b.mu.Unlock()
	}
	if c.err != nil {
		if partialOf(c.err) != nil {
			return c.out, c.err
		}
		return nil, c.err
	}
	return c.out, nil
}

// direct sends items to the backend on the caller's goroutine and context,
// in a slot taken by the caller, then passes the slot on to the queue.
func (b *Batcher[In, Out]) direct(ctx context.Context, items []In) ([]Out, error) {
	out, err := b.send(ctx, items, 1)
	b.mu.Lock()
	next := b.formLocked()
	if next == nil {
		b.inFlight--
	}
	b.mu.Unlock()
	if next != nil {
		go b.run(next)
	}
	if err = checkAnswer(out, err, len(items)); err != nil && partialOf(err) == nil {
		return nil, err
	}
	return out, err
}

// checkAnswer returns the error of the answer results, err to a batch of n
// items: err, or the contract the backend broke, the number of its results
// or a partial answer that lists items outside the batch.
func checkAnswer[Out any](results []Out, err error, n int) error {
	if pe := partialOf(err); pe != nil {
		if cerr := pe.check(n, results != nil); cerr != nil {
			return cerr
		}
		if results != nil && len(results) != n {
			return resultCountError(len(results), n)
		}
		return err
	}
	if err == nil && len(results) != n {
		return resultCountError(len(results), n)
	}
	return err
}

// resultCountError reports a backend that answered n results for items.
func resultCountError(n, items int) error {
	return fmt.Errorf("fanout: batcher: %w: %d for %s", ErrResultCount, n, count(items, "item"))
}

// InFlight returns the number of calls to the backend in flight.
func (b *Batcher[In, Out]) InFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inFlight
}

// Queued returns the number of items waiting for a free slot.
func (b *Batcher[In, Out]) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}

func (b *Batcher[In, Out]) enqueueLocked(c *batchCall[In, Out]) {
	if b.head > 0 && len(b.queue) == cap(b.queue) {
		// Reuse the room of the calls already taken rather than grow.
		n := copy(b.queue, b.queue[b.head:])
		clear(b.queue[n:])
		b.queue, b.head = b.queue[:n], 0
	}
	b.queue = append(b.queue, c)
	b.queued += c.total
}

// popLocked removes the call at the front of the queue.
func (b *Batcher[In, Out]) popLocked() {
	b.queue[b.head] = nil
	b.head++
	if b.head == len(b.queue) {
		b.queue, b.head = b.queue[:0], 0
	}
}

// formLocked takes up to maxBatch items from the front of the queue into a
// new dispatch, or returns nil if the queue holds none.
func (b *Batcher[In, Out]) formLocked() *dispatch[In, Out] {
	if b.queued == 0 {
		return nil
	}
	d := b.pool.Get().(*dispatch[In, Out])
	var first context.Context
	var latest time.Time
	deadline := true
	for room := b.maxBatch; room > 0 && b.head < len(b.queue); {
		c := b.queue[b.head]
		if !c.finished {
			if err := c.ctx.Err(); err != nil {
				b.finishLocked(c, err) // never send the items of a caller who left
			}
		}
		if c.finished {
			b.popLocked()
			continue
		}
		n := min(room, c.total-c.next)
		d.items = append(d.items, c.items[c.next:c.next+n]...)
		d.pieces = append(d.pieces, batchPiece[In, Out]{call: c, off: c.next, n: n})
		c.carriers = append(c.carriers, d)
		c.next += n
		b.queued -= n
		room -= n
		if c.next == c.total {
			b.popLocked()
		}
		if first == nil {
			first = c.ctx
		}
		if !c.hasDeadline {
			deadline = false
		} else if c.deadline.After(latest) {
			latest = c.deadline
		}
	}
	if len(d.pieces) == 0 {
		b.pool.Put(d)
		return nil
	}
	d.live = len(d.pieces)
	base := context.WithoutCancel(first)
	if deadline {
		d.ctx, d.cancel = context.WithDeadline(base, latest)
	} else {
		d.ctx, d.cancel = context.WithCancel(base)
	}
	return d
}

// finishLocked ends call c with err (nil when all its items are answered):
// its items still queued are dropped, and each dispatch carrying its items
// is cancelled if no other caller in it is waiting.
func (b *Batcher[In, Out]) finishLocked(c *batchCall[In, Out], err error) {
	c.finished = true
	c.err = err
	b.queued -= c.total - c.next // the queue skips finished calls
	c.next = c.total
	c.items = nil
	for i, d := range c.carriers {
		d.live--
		if d.live == 0 {
			d.cancel()
		}
		c.carriers[i] = nil
	}
	c.carriers = nil
	close(c.done)
}

// run sends dispatch d, hands out its answers, and goes on with the queue
// while it holds items, so a slot is passed on without a new goroutine.
func (b *Batcher[In, Out]) run(d *dispatch[In, Out]) {
	for d != nil {
		results, err := b.send(d.ctx, d.items, len(d.pieces))
		d.cancel()
		err = checkAnswer(results, err, len(d.items))
		if err != nil && partialOf(err) == nil && len(d.pieces) > 1 && itemsMayBeTheCause(err) {
			b.sendAlone(d)
		} else {
			b.deliver(d, d.pieces, results, err)
		}

		b.mu.Lock()
		next := b.formLocked()
		if next == nil {
			b.inFlight--
		}
		b.mu.Unlock()

		b.recycle(d)
		d = next
	}
}

// send calls the backend with items, the batches of merged callers, told
// to the observer if the batcher has one.
func (b *Batcher[In, Out]) send(ctx context.Context, items []In, merged int) ([]Out, error) {
	if b.observer == nil {
		return b.backend.Process(ctx, items)
	}
	w := newWork(WorkMerge)
	w.Items, w.Merged = len(items), merged
	ctx = startWork(ctx, b.observer, w)
	out, err := b.backend.Process(ctx, items)
	endWork(ctx, b.observer, w, err)
	return out, err
}

// itemsMayBeTheCause reports whether err, the failure of a merged dispatch,
// may come from some caller's items rather than from the backend's state:
// the backend's own error, as opposed to a call that did not reach it or
// whose outcome is unknown (sentinels), a context's end, or a backend that
// broke its contract.
func itemsMayBeTheCause(err error) bool {
	for _, notItems := range []error{ErrUnavailable, ErrOverloaded, ErrInterrupted, ErrResultCount, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, notItems) {
			return false
		}
	}
	return true
}

// sendAlone sends each caller's share of the failed dispatch d again, on
// its own and on its caller's context, so that one caller's items never
// fail another's call. It is called on the goroutine that holds d's slot.
func (b *Batcher[In, Out]) sendAlone(d *dispatch[In, Out]) {
	pos := 0
	for i, p := range d.pieces {
		items := d.items[pos : pos+p.n]
		pos += p.n
		b.mu.Lock()
		finished := p.call.finished
		b.mu.Unlock()
		if finished {
			continue
		}
		results, err := b.send(p.call.ctx, items, 1)
		err = checkAnswer(results, err, len(items))
		b.deliver(d, d.pieces[i:i+1], results, err)
	}
}

// deliver hands the outcome of sending the items of pieces, carried by d,
// to their callers: results in the order of the pieces, or err. A partial
// answer's failures go to the callers of the items they list, each with its
// own indices, and every other caller's items are answered.
func (b *Batcher[In, Out]) deliver(d *dispatch[In, Out], pieces []batchPiece[In, Out], results []Out, err error) {
	pe := partialOf(err)
	if err == nil || pe != nil && results != nil {
		// Outside mu: pieces write disjoint parts of their calls'
		// results, and a call reads them only once finished.
		pos := 0
		for _, p := range pieces {
			copy(p.call.out[p.off:p.off+p.n], results[pos:pos+p.n])
			pos += p.n
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	pos := 0 // of p's items in the dispatch
	for _, p := range pieces {
		c := p.call
		lo := pos
		pos += p.n
		if c.finished {
			continue // gave up, or failed in another dispatch
		}
		c.dropCarrier(d)
		if pe != nil {
			c.partial = pe.share(c.partial, lo, lo+p.n, p.off)
		} else if err != nil {
			cerr := err // this caller's: others may still retry err
			if (errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOverloaded)) && (c.left < c.total || len(c.carriers) > 0) {
				// Another part of the call may have been processed: sending
				// the call again is no longer safe.
				cerr = fmt.Errorf("%w: a part of the call failed after others were sent: %v", ErrInterrupted, err)
			}
			b.finishLocked(c, cerr)
			continue
		}
		c.left -= p.n
		if c.left == 0 && c.partial != nil {
			slices.SortStableFunc(c.partial.Failed, func(a, b *RouteError) int { return strings.Compare(a.Route, b.Route) })
			slices.SortFunc(c.partial.Items, func(a, b *ItemError) int { return a.Index - b.Index })
			zero(c.partial, c.out)
			b.finishLocked(c, c.partial)
		} else if c.left == 0 {
			b.finishLocked(c, nil)
		}
	}
}

func (c *batchCall[In, Out]) dropCarrier(d *dispatch[In, Out]) {
	for i, x := range c.carriers {
		if x == d {
			last := len(c.carriers) - 1
			c.carriers[i] = c.carriers[last]
			c.carriers[last] = nil
			c.carriers = c.carriers[:last]
			return
		}
	}
}

// recycle returns d to the pool, keeping no reference to items or calls.
func (b *Batcher[In, Out]) recycle(d *dispatch[In, Out]) {
	clear(d.items)
	clear(d.pieces)
	d.items, d.pieces = d.items[:0], d.pieces[:0]
	d.ctx, d.cancel, d.live = nil, nil, 0
	b.pool.Put(d)
}
