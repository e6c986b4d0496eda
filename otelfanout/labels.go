package otelfanout

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout"
)

// The outcomes of [fanout.Outcome], indices into [labels]' options.
const (
	outcomeOK = iota
	partial
	canceled
	deadlineExceeded
	unavailable
	overloaded
	failed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "partial", "canceled", "deadline_exceeded", "unavailable", "overloaded", "error"}

// An outcome is how a piece of work ended, with its attribute.
type outcome struct {
	index int // -1: one that fanout.Outcome did not return when this package was written
	attr  attribute.KeyValue
}

var outcomes = func() (o [numOutcomes]outcome) {
	for i, name := range outcomeNames {
		o[i] = outcome{index: i, attr: KeyOutcome.String(name)}
	}
	return o
}()

// outcomeOf returns the outcome of work that ended with err.
func outcomeOf(err error) outcome {
	if err == nil {
		return outcomes[outcomeOK]
	}
	name := fanout.Outcome(err)
	for i := range outcomeNames {
		if outcomeNames[i] == name {
			return outcomes[i]
		}
	}
	return outcome{index: -1, attr: KeyOutcome.String(name)}
}

// labels are what the spans and measurements of one kind of work share:
// the kind, route, replica and hedge of a [fanout.Work], computed once.
type labels struct {
	name   string                  // the span's
	start  []trace.SpanStartOption // the span's kind
	attrs  []attribute.KeyValue    // the span's attributes, and the measurements' but the outcome
	record [numOutcomes][]metric.RecordOption
	add    [numOutcomes][]metric.AddOption
}

// options returns the measurement options of work that ended with out.
func (l *labels) options(out outcome) ([]metric.RecordOption, []metric.AddOption) {
	if out.index >= 0 {
		return l.record[out.index], l.add[out.index]
	}
	opt := measurement(l.attrs, out)
	return []metric.RecordOption{opt}, []metric.AddOption{opt}
}

func measurement(attrs []attribute.KeyValue, out outcome) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(append(slices.Clip(attrs), out.attr)...))
}

// workKey tells apart the [fanout.Work] that have different labels.
type workKey struct {
	kind    fanout.WorkKind
	hedge   bool
	route   string
	replica string
}

// maxLabels bounds the labels a labelCache keeps of routes and attempts.
// Routes and replicas are few, named by the program's configuration; past
// the bound, labels are computed for every event.
const maxLabels = 1024

// labelCache keeps the labels of every workKey seen. The kinds of work
// that have no route share one labels each; the others are kept in maps
// that are replaced, never changed, so that reading them takes no lock.
type labelCache struct {
	attrs  []attribute.KeyValue // WithAttributes
	call   *labels
	merge  *labels
	serve  *labels
	routes atomic.Pointer[map[string]*labels]  // WorkRoute, by route
	others atomic.Pointer[map[workKey]*labels] // WorkAttempt, and kinds this package does not know
	mu     sync.Mutex                          // held to replace routes or others
}

func (c *labelCache) init(attrs []attribute.KeyValue) {
	c.attrs = attrs
	c.call = c.compute(workKey{kind: fanout.WorkCall})
	c.merge = c.compute(workKey{kind: fanout.WorkMerge})
	c.serve = c.compute(workKey{kind: fanout.WorkServe})
	c.routes.Store(&map[string]*labels{})
	c.others.Store(&map[workKey]*labels{})
}

// get returns the labels of w.
func (c *labelCache) get(w *fanout.Work) *labels {
	switch w.Kind {
	case fanout.WorkCall:
		return c.call
	case fanout.WorkMerge:
		return c.merge
	case fanout.WorkServe:
		return c.serve
	case fanout.WorkRoute:
		if l, ok := (*c.routes.Load())[w.Route]; ok {
			return l
		}
		return keep(c, &c.routes, w.Route, workKey{kind: w.Kind, route: w.Route})
	}
	k := workKey{kind: w.Kind, hedge: w.Hedge, route: w.Route, replica: w.Replica}
	if l, ok := (*c.others.Load())[k]; ok {
		return l
	}
	return keep(c, &c.others, k, k)
}

// keep computes the labels of k, and keeps them in *m under key unless it
// holds maxLabels.
func keep[K comparable](c *labelCache, m *atomic.Pointer[map[K]*labels], key K, k workKey) *labels {
	if len(*m.Load()) >= maxLabels {
		return c.compute(k)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	known := *m.Load()
	if l, ok := known[key]; ok {
		return l
	}
	l := c.compute(k)
	next := make(map[K]*labels, len(known)+1)
	maps.Copy(next, known)
	next[key] = l
	m.Store(&next)
	return l
}

// compute returns the labels of k, as the package documentation lists
// them.
func (c *labelCache) compute(k workKey) *labels {
	l := &labels{}
	kind := trace.SpanKindInternal
	attrs := []attribute.KeyValue{rpcSystem}
	switch k.kind {
	case fanout.WorkCall:
		l.name = "fanout.call"
	case fanout.WorkRoute:
		l.name = "fanout.route " + k.route
		attrs = append(attrs, KeyRoute.String(k.route))
	case fanout.WorkAttempt:
		kind = trace.SpanKindClient
		l.name = "fanout.attempt"
		if k.route != "" {
			l.name += " " + k.route
			attrs = append(attrs, KeyRoute.String(k.route))
		}
		attrs = append(attrs, KeyReplica.String(k.replica), KeyHedge.Bool(k.hedge))
	case fanout.WorkMerge:
		l.name = "fanout.merge"
	case fanout.WorkServe:
		kind = trace.SpanKindServer
		l.name = "fanout.serve"
	default:
		l.name = "fanout." + k.kind.String()
	}
	l.attrs = append(attrs, c.attrs...)
	l.start = []trace.SpanStartOption{trace.WithSpanKind(kind)}
	for i := range numOutcomes {
		opt := measurement(l.attrs, outcomes[i])
		l.record[i] = []metric.RecordOption{opt}
		l.add[i] = []metric.AddOption{opt}
	}
	return l
}
