// Package node builds and runs the servers of the example system: the x, y
// and z backends ([NewBackend]), slow on demand, and the middle layer that
// routes between them, balancing over replicas and bounding the calls in
// flight per route ([NewMiddle]). The programs in examples/ are thin
// wrappers around it, and [StartSystem] runs the whole system inside one
// process for the demo and for tests.
//
// [Run] is the life of a server program: it listens, logs one line when it
// is ready ("x ready" with the bound address in addr=, so that a test can
// pass -listen 127.0.0.1:0 and read the port), serves until its context is
// done, then shuts down gracefully within a grace period. [Flags] are the
// flags every server program has, and turn into its logger and transport
// options, mutual TLS included.
package node
