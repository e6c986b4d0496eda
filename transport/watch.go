package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/seed-c94cd834/fanout"
)

// DefaultResolveEvery is how often a [Watcher] resolves by default.
const DefaultResolveEvery = 5 * time.Second

// resolveTimeout bounds one Resolve of a Watcher.
const resolveTimeout = 5 * time.Second

// refreshGap is the least time between two resolutions a Watcher makes
// because calls failed: a replica that is down fails every call, and one
// lookup a second is enough to see it gone.
const refreshGap = time.Second

// WatchConfig configures a [Watcher].
type WatchConfig struct {
	// Every is how often the resolver is asked again. Default
	// [DefaultResolveEvery].
	Every time.Duration
	// Log, if not nil, gets a line when the set changes ("transport:
	// replicas changed", Info, with added=, removed= and replicas=), when
	// resolving fails ("transport: resolving replicas failed; keeping the
	// last set", Warn, once until it works again) and when it works again
	// (Info).
	Log *slog.Logger
}

// A Watcher keeps the replicas of a [fanout.Balancer] those its
// [Resolver] finds: a replica that appears is dialled and joins the
// balancer (probed first), one that disappears is drained (its calls in
// flight finish, it gets no new ones) and then closed. It resolves every
// WatchConfig.Every, and sooner (at most once a second) when a call on a
// replica fails with [fanout.ErrUnavailable]: a replica that went away is
// noticed before the next period. When resolving fails, the last set is
// kept. Calls of a route whose set is empty fail at once with an error
// saying so.
type Watcher[In, Out any] struct {
	r    Resolver
	dial func(addr string) fanout.Backend[In, Out]
	cfg  WatchConfig
	b    *fanout.Balancer[In, Out]

	poke   chan struct{} // a call failed unavailable: resolve soon
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	current map[string]*watched[In, Out] // by address
	failing bool                         // the last resolve failed
	last    []string                     // the set last given to the balancer
}

// watched is a replica of a Watcher: its Backend, which pokes the watcher
// when a call fails unavailable.
type watched[In, Out any] struct {
	fanout.Backend[In, Out]
	w *Watcher[In, Out]
}

func (r *watched[In, Out]) Process(ctx context.Context, items []In) ([]Out, error) {
	out, err := r.Backend.Process(ctx, items)
	if err != nil && ctx.Err() == nil && errors.Is(err, fanout.ErrUnavailable) {
		select {
		case r.w.poke <- struct{}{}:
		default:
		}
	}
	return out, err
}

// Watch resolves r once (bounded by ctx and 5s), makes a balancer of the
// replicas found, dialled with dial (a [NewClient] of the address, say) and
// built with opts, and keeps its replicas up to date until [Watcher.Close].
// Replicas are named by their addresses. opts must not include
// [fanout.WithReplicaNames] or [fanout.WithRetire]: the watcher names and
// retires the replicas itself, closing each one that is an [io.Closer]
// once it has drained. A first resolve that fails leaves the balancer
// with no replicas, logged, until a later one works: Watch fails only if
// the balancer cannot be built.
func Watch[In, Out any](ctx context.Context, r Resolver, dial func(addr string) fanout.Backend[In, Out], cfg WatchConfig, opts ...fanout.BalancerOption) (*Watcher[In, Out], error) {
	if cfg.Every <= 0 {
		cfg.Every = DefaultResolveEvery
	}
	w := &Watcher[In, Out]{r: r, dial: dial, cfg: cfg, poke: make(chan struct{}, 1), done: make(chan struct{}),
		current: make(map[string]*watched[In, Out])}
	opts = append(slices.Clip(opts), fanout.WithRetire(func(b fanout.Backend[In, Out]) {
		if c, ok := b.(*watched[In, Out]).Backend.(io.Closer); ok {
			c.Close()
		}
	}))
	b, err := fanout.NewBalancer[In, Out](nil, opts...)
	if err != nil {
		return nil, err
	}
	w.b = b
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.resolve(ctx)
	go w.loop()
	return w, nil
}

// Balancer returns the balancer whose replicas w keeps.
func (w *Watcher[In, Out]) Balancer() *fanout.Balancer[In, Out] { return w.b }

// Replicas returns the addresses of the set w last gave its balancer.
func (w *Watcher[In, Out]) Replicas() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.last)
}

// Refresh resolves now and updates the balancer, returning once it has.
func (w *Watcher[In, Out]) Refresh(ctx context.Context) { w.resolve(ctx) }

// Close stops watching, closes the balancer (which waits for the replicas
// being drained) and closes every replica that is an [io.Closer].
func (w *Watcher[In, Out]) Close() error {
	w.cancel()
	<-w.done
	w.b.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	for addr, r := range w.current {
		if c, ok := r.Backend.(io.Closer); ok {
			c.Close()
		}
		delete(w.current, addr)
	}
	return nil
}

func (w *Watcher[In, Out]) loop() {
	defer close(w.done)
	tick := time.NewTicker(w.cfg.Every)
	defer tick.Stop()
	var lastPoke time.Time
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		case <-w.poke:
			if wait := refreshGap - time.Since(lastPoke); wait > 0 {
				select {
				case <-time.After(wait):
				case <-w.ctx.Done():
					return
				}
			}
			lastPoke = time.Now()
		}
		w.resolve(w.ctx)
	}
}

// resolve asks the resolver and gives the balancer the set it found.
func (w *Watcher[In, Out]) resolve(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	addrs, err := w.r.Resolve(ctx)
	cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil {
		return // closed meanwhile
	}
	if err != nil {
		if !w.failing && w.cfg.Log != nil {
			w.cfg.Log.Warn("transport: resolving replicas failed; keeping the last set", "resolver", w.r.String(), "replicas", len(w.last), "err", err)
		}
		w.failing = true
		return
	}
	if w.failing && w.cfg.Log != nil {
		w.cfg.Log.Info("transport: resolving replicas works again", "resolver", w.r.String(), "replicas", len(addrs))
	}
	w.failing = false
	if slices.Equal(addrs, w.last) {
		return
	}
	var added, removed []string
	next := make(map[string]*watched[In, Out], len(addrs))
	backends := make([]fanout.Backend[In, Out], 0, len(addrs))
	for _, addr := range addrs {
		r, ok := w.current[addr]
		if !ok {
			r = &watched[In, Out]{Backend: w.dial(addr), w: w}
			added = append(added, addr)
		}
		next[addr] = r
		backends = append(backends, r)
	}
	for addr := range w.current {
		if _, ok := next[addr]; !ok {
			removed = append(removed, addr)
		}
	}
	if err := w.b.SetReplicas(backends, addrs); err != nil {
		// Addresses are unique (resolvers compact them) and dial gives a
		// Backend: not reached, but never leave a dialled client open.
		for _, addr := range added {
			if c, ok := next[addr].Backend.(io.Closer); ok {
				c.Close()
			}
		}
		if w.cfg.Log != nil {
			w.cfg.Log.Error("transport: replicas not updated", "resolver", w.r.String(), "err", err)
		}
		return
	}
	w.current, w.last = next, slices.Clone(addrs)
	if w.cfg.Log != nil {
		slices.Sort(removed)
		w.cfg.Log.Info("transport: replicas changed", "resolver", w.r.String(), "added", added, "removed", removed, "replicas", len(addrs))
	}
}
