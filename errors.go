package fanout

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors. Match them with [errors.Is]; the router always wraps them
// with the item or route they concern.
var (
	// ErrNoRoute means the classifier chose a route that the router does not
	// have. It is wrapped in an [*ItemError] naming the item and the route.
	ErrNoRoute = errors.New("no such route")

	// ErrResultCount means a backend answered with a different number of
	// results than it was given items. It is wrapped in a [*RouteError]; the
	// answer is discarded rather than misaligned.
	ErrResultCount = errors.New("backend returned the wrong number of results")

	// ErrUnavailable means a backend could not be reached and the request
	// was not delivered to it: a dial failed, a connection was down, a server
	// was shutting down and refused the call before processing it, or every
	// replica of a [Balancer] is ejected. Such a call is safe to send again,
	// to another replica, whatever the backend does.
	ErrUnavailable = errors.New("backend unavailable")

	// ErrInterrupted means the connection to a backend failed while a call
	// was in flight, after the request may have reached it: the backend may
	// or may not have processed it. A [Balancer] retries such a call only
	// when it was built [WithIdempotent].
	ErrInterrupted = errors.New("call interrupted")

	// ErrOverloaded means a limit refused the call at once, before any work
	// was done: a [Limiter] was full, or a server had as many calls in
	// flight as it accepts. Nothing was processed, so another replica may
	// take the call; it does not count against a replica's health.
	ErrOverloaded = errors.New("overloaded")
)

// ItemError reports a failure tied to a single input item: the classifier
// failed on it, or chose a route the router does not have, or a backend
// failed that item alone (see [PartialError]).
type ItemError struct {
	Index int // index of the item in the batch given to Process

	// Route is the route the classifier chose, empty if it failed. In a
	// [PartialError] it is the route whose backend failed the item: empty
	// when the backend that returned it failed the item itself, and, for a
	// failure a nested router reported, the path of route names from this
	// router down, joined by "/" (a route "m" whose backend's route "z"
	// failed the item reads "m/z").
	Route string

	Err error // the classifier's or the backend's error, or ErrNoRoute

	classify bool // the classifier failed on the item
}

func (e *ItemError) Error() string {
	switch {
	case e.classify:
		return fmt.Sprintf("fanout: item %d: classify: %v", e.Index, e.Err)
	case e.Route == "" && !errors.Is(e.Err, ErrNoRoute):
		return fmt.Sprintf("fanout: item %d: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("fanout: item %d: route %q: %v", e.Index, e.Route, e.Err)
}

func (e *ItemError) Unwrap() error { return e.Err }

// RouteError reports that the backend of one route failed. Indices lists the
// positions, in the batch given to Process, of the items sent to that route,
// in increasing order.
//
// In a [PartialError], Route follows the rule of [ItemError.Route]: a
// failure that a nested router reported names the path of routes down to
// the one that failed ("m/y"), and Indices lists the items it concerned.
type RouteError struct {
	Route   string
	Indices []int
	Err     error
}

// maxIndicesShown bounds how many indices an error message spells out, so that
// a failed route of a million items does not make a megabyte error string.
const maxIndicesShown = 8

func (e *RouteError) Error() string {
	var b strings.Builder
	b.WriteString("fanout: route ")
	b.WriteString(strconv.Quote(e.Route))
	b.WriteString(" (")
	b.WriteString(count(len(e.Indices), "item"))
	b.WriteString(": ")
	writeList(&b, len(e.Indices), maxIndicesShown, ", ", func(i int) string { return strconv.Itoa(e.Indices[i]) })
	b.WriteString("): ")
	b.WriteString(fmt.Sprint(e.Err))
	return b.String()
}

func (e *RouteError) Unwrap() error { return e.Err }

// PartialError reports that some items of a call failed and the others
// were answered. The results returned beside it, if not nil, hold an answer
// at every position that Failed and Items do not list; the positions they
// list hold no answer, whatever their value (a [Router] and a [Batcher]
// leave zero values there; a remote backend may send other placeholders).
// The results are nil when no item was answered.
//
// A router built with [WithPartialResults] returns it when some of its
// routes failed, or when a route's backend failed some of its items. Any
// backend may return one to fail single items of a batch rather than the
// whole call: it returns a result per item and a *PartialError, as the
// error itself and not wrapped, whose Items name the items that failed (see
// [Backend]). The transport carries it across the network, so the answers
// that succeeded and every failure, with its route, its indices and its
// cause, survive any number of hops.
type PartialError struct {
	Failed []*RouteError // routes that failed as a whole, in route order
	Items  []*ItemError  // single items that failed, in increasing index order
}

func (e *PartialError) Error() string {
	var b strings.Builder
	b.WriteString("fanout: ")
	if len(e.Failed) > 0 {
		b.WriteString(count(len(e.Failed), "route"))
		b.WriteString(" failed: ")
		writeList(&b, len(e.Failed), len(e.Failed), "; ", func(i int) string { return e.Failed[i].Error() })
	}
	if len(e.Items) > 0 {
		if len(e.Failed) > 0 {
			b.WriteString("; ")
		}
		b.WriteString(count(len(e.Items), "item"))
		b.WriteString(" failed: ")
		writeList(&b, len(e.Items), maxIndicesShown, "; ", func(i int) string { return e.Items[i].Error() })
	}
	if len(e.Failed) == 0 && len(e.Items) == 0 {
		b.WriteString("no failure listed")
	}
	return b.String()
}

// Unwrap returns the route and item errors, so [errors.Is] and
// [errors.As] look through every failure.
func (e *PartialError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failed)+len(e.Items))
	for _, re := range e.Failed {
		errs = append(errs, re)
	}
	for _, ie := range e.Items {
		errs = append(errs, ie)
	}
	return errs
}

// check reports a partial answer to n items that lists no failure, or an
// index outside the batch: the backend broke its contract.
//
// A partial answer without results (answered false) must list every item.
func (e *PartialError) check(n int, answered bool) error {
	if len(e.Failed) == 0 && len(e.Items) == 0 {
		return errors.New("fanout: a partial answer that lists no failed item")
	}
	if !answered {
		listed := len(e.Items)
		for _, re := range e.Failed {
			listed += len(re.Indices)
		}
		if listed != n {
			return fmt.Errorf("fanout: a partial answer without results lists %s as failed, in a batch of %s", count(listed, "item"), count(n, "item"))
		}
	}
	bad := func(i int) error {
		return fmt.Errorf("fanout: a partial answer lists item %d as failed, in a batch of %s", i, count(n, "item"))
	}
	for _, re := range e.Failed {
		for _, i := range re.Indices {
			if i < 0 || i >= n {
				return bad(i)
			}
		}
	}
	for _, ie := range e.Items {
		if ie.Index < 0 || ie.Index >= n {
			return bad(ie.Index)
		}
	}
	return nil
}

// remap adds to acc, and returns, the failures e lists of the items that
// at keeps: index i becomes j where at(i) returns j, true, and each route
// its path(route). acc may be nil, and stays nil if at keeps none. It
// keeps the order of the indices of each failure.
func (e *PartialError) remap(acc *PartialError, at func(i int) (int, bool), path func(route string) string) *PartialError {
	add := func() {
		if acc == nil {
			acc = new(PartialError)
		}
	}
	for _, re := range e.Failed {
		var indices []int
		for _, i := range re.Indices {
			if j, ok := at(i); ok {
				indices = append(indices, j)
			}
		}
		if indices != nil {
			add()
			acc.Failed = append(acc.Failed, &RouteError{Route: path(re.Route), Indices: indices, Err: re.Err})
		}
	}
	for _, ie := range e.Items {
		if j, ok := at(ie.Index); ok {
			add()
			acc.Items = append(acc.Items, &ItemError{Index: j, Route: path(ie.Route), Err: ie.Err})
		}
	}
	return acc
}

// share adds to acc, and returns, the failures e lists of the items lo to
// hi, each index i as off+i-lo: a caller's share of a merged call.
func (e *PartialError) share(acc *PartialError, lo, hi, off int) *PartialError {
	in := func(i int) (int, bool) { return off + i - lo, i >= lo && i < hi }
	return e.remap(acc, in, func(route string) string { return route })
}

// first returns the failure of the smallest index e lists as a
// [*RouteError]: the error of a call that fails when an item does.
func (e *PartialError) first() *RouteError {
	var best *RouteError
	at := -1
	for _, re := range e.Failed {
		if len(re.Indices) > 0 && (at < 0 || re.Indices[0] < at) {
			best, at = re, re.Indices[0]
		}
	}
	for _, ie := range e.Items {
		if at < 0 || ie.Index < at {
			best, at = &RouteError{Route: ie.Route, Indices: []int{ie.Index}, Err: ie.Err}, ie.Index
		}
	}
	return best
}

// zero sets the results at the positions e lists to their zero value.
func zero[Out any](e *PartialError, out []Out) {
	if out == nil {
		return
	}
	var z Out
	for _, re := range e.Failed {
		for _, i := range re.Indices {
			out[i] = z
		}
	}
	for _, ie := range e.Items {
		out[ie.Index] = z
	}
}

// partialOf returns err as a *PartialError if it is one, not wrapped: the
// answer of a backend that failed some items and answered the others.
func partialOf(err error) *PartialError {
	pe, _ := err.(*PartialError)
	return pe
}

// writeList writes the n elements item(0), item(1), ... separated by sep,
// the first shown of them only, then "..." if there are more.
func writeList(b *strings.Builder, n, shown int, sep string, item func(i int) string) {
	for i := range n {
		if i > 0 {
			b.WriteString(sep)
		}
		if i == shown {
			b.WriteString("...")
			return
		}
		b.WriteString(item(i))
	}
}

// count spells "1 item", "2 items".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
