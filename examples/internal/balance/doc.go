// Package balance spreads the calls of one route over the replicas of its
// backend. A balancer is itself a fanout.Backend and safe for concurrent
// use. [RoundRobin] takes turns and does not retry: a call fails if the
// replica it went to fails.
package balance
