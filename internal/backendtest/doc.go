// Package backendtest is the conformance suite for [fanout.Backend]
// implementations over int64.
//
// Every backend in the module, from a plain [fanout.BackendFunc] to a router
// nested in a router to a remote client, must answer exactly what the
// backends behind it answer. [Run] checks that with one shared set of
// subtests: the caller wraps the suite's instrumented leaf backend with the
// backend under test (a [Wrap]), and the suite checks ordering, empty input,
// error propagation, cancellation, deadline propagation and concurrent use.
//
// The suite's bounds on waiting are hang guards, never speed assertions: a
// correct backend passes however slow the machine is.
package backendtest
