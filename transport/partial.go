package transport

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// A backend's partial answer (a *fanout.PartialError) travels as a partial
// frame: its failures, each with its route, indices, code and message, and
// the results if any (PROTOCOL.md). The client rebuilds a
// *fanout.PartialError whose errors are *RemoteError, so the answers that
// succeeded and every failure survive any number of hops.

// partialOf returns err as a *fanout.PartialError if it is one, not
// wrapped: a backend's partial answer.
func partialOf(err error) *fanout.PartialError {
	pe, _ := err.(*fanout.PartialError)
	return pe
}

// failuresOf returns the failures of pe as the wire carries them.
func failuresOf(pe *fanout.PartialError) []wire.Failure {
	fs := make([]wire.Failure, 0, len(pe.Failed)+len(pe.Items))
	for _, re := range pe.Failed {
		code, msg := failureCode(re.Err)
		fs = append(fs, wire.Failure{What: wire.FailedRoute, Route: re.Route, Code: uint8(code), Message: msg, Indices: wire.SortedIndices(re.Indices)})
	}
	for _, ie := range pe.Items {
		code, msg := failureCode(ie.Err)
		fs = append(fs, wire.Failure{What: wire.FailedItem, Route: ie.Route, Code: uint8(code), Message: msg, Indices: []int{ie.Index}})
	}
	return fs
}

// failureCode returns the code and message that carry err, the cause of a
// failure in a partial answer. An error that came from a server as it is
// (a *RemoteError, not wrapped) keeps its code and its server's text, so
// that a failure crosses any number of hops unchanged; any other is coded
// by the sentinel it matches.
func failureCode(err error) (Code, string) {
	if re, ok := err.(*RemoteError); ok {
		return re.Code, re.Message
	}
	if err == nil {
		return CodeBackend, "failed without a reason"
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadline, err.Error()
	case errors.Is(err, context.Canceled):
		return CodeCanceled, err.Error()
	case errors.Is(err, fanout.ErrOverloaded):
		return CodeOverloaded, err.Error()
	case errors.Is(err, fanout.ErrUnavailable):
		return CodeUnavailable, err.Error()
	}
	return CodeBackend, err.Error()
}

// partialError is the error of a partial answer from the server at addr.
func partialError(addr string, fs []wire.Failure) *fanout.PartialError {
	pe := new(fanout.PartialError)
	for _, f := range fs {
		err := &RemoteError{Addr: addr, Code: Code(f.Code), Message: f.Message}
		if f.What == wire.FailedItem {
			pe.Items = append(pe.Items, &fanout.ItemError{Index: f.Indices[0], Route: f.Route, Err: err})
		} else {
			pe.Failed = append(pe.Failed, &fanout.RouteError{Route: f.Route, Indices: f.Indices, Err: err})
		}
	}
	sortPartial(pe)
	return pe
}

// addShifted adds to acc, and returns, the failures of pe, a chunk's
// partial answer, with off added to every index. A failed route of the same
// path and error as one acc has already is merged into it.
func addShifted(acc, pe *fanout.PartialError, off int) *fanout.PartialError {
	if acc == nil {
		acc = new(fanout.PartialError)
	}
	for _, re := range pe.Failed {
		var into *fanout.RouteError
		for _, have := range acc.Failed {
			if have.Route == re.Route && sameRemote(have.Err, re.Err) {
				into = have
				break
			}
		}
		if into == nil {
			into = &fanout.RouteError{Route: re.Route, Err: re.Err}
			acc.Failed = append(acc.Failed, into)
		}
		for _, i := range re.Indices {
			into.Indices = append(into.Indices, off+i)
		}
	}
	for _, ie := range pe.Items {
		acc.Items = append(acc.Items, &fanout.ItemError{Index: off + ie.Index, Route: ie.Route, Err: ie.Err})
	}
	return acc
}

func sameRemote(a, b error) bool {
	x, ok1 := a.(*RemoteError)
	y, ok2 := b.(*RemoteError)
	return ok1 && ok2 && *x == *y
}

// sortPartial puts pe's failed routes in route order, the indices of each
// in increasing order, and its items in index order.
func sortPartial(pe *fanout.PartialError) {
	slices.SortStableFunc(pe.Failed, func(a, b *fanout.RouteError) int { return cmp.Compare(a.Route, b.Route) })
	for _, re := range pe.Failed {
		slices.Sort(re.Indices)
	}
	slices.SortFunc(pe.Items, func(a, b *fanout.ItemError) int { return cmp.Compare(a.Index, b.Index) })
}
