// Package dnstest is a DNS server for tests: it answers questions of A,
// AAAA and SRV records from a zone that the test changes while it runs,
// over UDP and TCP, so that a program under test that resolves names (the
// middle layer's dns: and srv: replicas) sees records come and go.
//
// The server is authoritative for every name: a name set with records is
// answered with those of the type asked (none, and no error, when it has
// none of that type: NODATA); a name never set, or set with no records, is
// answered NXDOMAIN. Answers have a TTL of 0, so that no resolver caches
// them: a change made with [Server.Set] is seen by the next question.
//
// A Server is safe for concurrent use. It serves the sockets a test gives
// it ([Serve]), which the test may open wherever it wants them (in another
// network namespace, say, as examples/e2e_multihost_test.go does), or
// listens on an address of its own ([Listen]). [Server.Close] stops it
// and closes them.
package dnstest
