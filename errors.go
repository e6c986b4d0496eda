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
// failed on it, or chose a route the router does not have.
type ItemError struct {
	Index int    // index of the item in the batch given to Process
	Route string // route the classifier chose; empty if it failed
	Err   error  // the classifier's error, or ErrNoRoute
}

func (e *ItemError) Error() string {
	if e.Route == "" && !errors.Is(e.Err, ErrNoRoute) {
		return fmt.Sprintf("fanout: item %d: classify: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("fanout: item %d: route %q: %v", e.Index, e.Route, e.Err)
}

func (e *ItemError) Unwrap() error { return e.Err }

// RouteError reports that the backend of one route failed. Indices lists the
// positions, in the batch given to Process, of the items sent to that route.
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
	for i, idx := range e.Indices {
		if i == maxIndicesShown {
			b.WriteString(", ...")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(idx))
	}
	b.WriteString("): ")
	b.WriteString(fmt.Sprint(e.Err))
	return b.String()
}

func (e *RouteError) Unwrap() error { return e.Err }

// PartialError is returned by a router built with [WithPartialResults] when
// some routes failed and others succeeded. The results returned beside it hold
// the answers of the routes that succeeded; the positions listed in each
// failed route's Indices hold zero values.
type PartialError struct {
	Failed []*RouteError // in route name order
}

func (e *PartialError) Error() string {
	var b strings.Builder
	b.WriteString("fanout: ")
	b.WriteString(count(len(e.Failed), "route"))
	b.WriteString(" failed: ")
	for i, re := range e.Failed {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(re.Error())
	}
	return b.String()
}

// Unwrap returns the route errors, so [errors.Is] and [errors.As] look
// through every failed route.
func (e *PartialError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, re := range e.Failed {
		errs[i] = re
	}
	return errs
}

// count spells "1 item", "2 items".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
