// Package xyz is the routing table of the example system, shared by every
// program in examples/:
//
//	route  gets                              computes
//	x      negative numbers                  n * n
//	y      even numbers >= 0 (0 included)   n / 2
//	z      odd positive numbers              3n + 1
//
// [Classify] chooses the route, [X], [Y] and [Z] compute the answers,
// [Backend] serves a route as a [fanout.Backend], [Label] makes a route's
// failures name their numbers, [PerItem] answers each number with its value
// and route and turns the failure of a route into failed answers to its
// numbers, [ResultCodec] carries those answers over the wire, and [Expected] states the right answer for any number, so a
// caller can check what it got.
//
// Arithmetic is exact: a result that does not fit in an int64 is an error
// wrapping [ErrOverflow] that names the route and the number, for example
// "x: -3037000500 squared overflows int64". It never wraps around.
//
// Everything in the package is stateless and safe for concurrent use.
package xyz
